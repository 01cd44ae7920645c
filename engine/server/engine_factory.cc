#include "engine/server/engine_factory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/process_main.h"
#include "engine/cpu_engine.h"
#include "engine/parallel/group_follower.h"
#include "engine/parallel/group_leader_backend.h"
#include "engine/parallel/tp_group.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face model directory (config.json, *.safetensors, tokenizer.json) to serve.");
ABSL_FLAG(std::string, load_format, "auto",
          "auto: the checkpoint's safetensors; dummy: random weights of its shapes.");
ABSL_FLAG(int32_t, block_size, 8,
          "Tokens per KV block. MemShare shares whole blocks: at 8 (with "
          "--memshare_keep_numbers) it saves 31% of the tiny reasoner's KV blocks with 0-1 of 600 "
          "answers lost, where 16 saves 32% and loses 6-8 (bench/RESULTS.md). The fast CUDA "
          "attention kernels take 8 and 16; other sizes run a generic kernel.");
ABSL_FLAG(int32_t, num_blocks, 0, "KV blocks per layer group; 0: as many as --kv_cache_mib holds.");
ABSL_FLAG(int32_t, kv_cache_mib, 1024, "Memory of the KV pool when --num_blocks is 0.");
ABSL_FLAG(int32_t, layer_groups, 1, "KV layer groups (MemShare decides per group).");
ABSL_FLAG(int32_t, threads, 0, "Threads of the CPU forward pass; 0: every core.");
ABSL_FLAG(std::string, device, "auto",
          "Backend: cuda (the GPU), cpu, or auto = cuda when a CUDA device is usable, else cpu.");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "CUDA: share of the GPU's memory in use once the KV pool is allocated (the pool takes "
          "what the weights and buffers leave; --num_blocks overrides).");
ABSL_FLAG(bool, fuse_norms, true,
          "CUDA, one GPU: run the decode steps' RMSNorms in the GEMM epilogues, the norm weights "
          "folded into the next products' weights (about 1% faster decode steps; one more bf16 "
          "rounding of those weights: on the golden checkpoints the error against transformers "
          "fp32 grows by about a sixth). false: the norm kernels and the checkpoint's weights.");
ABSL_FLAG(int32_t, max_model_len, 0,
          "Longest prompt + generation; 0: the model's max_position_embeddings.");
ABSL_FLAG(int32_t, max_prompt_len, 0, "Longest prompt accepted; 0: max_model_len - 1.");
ABSL_FLAG(int32_t, max_num_seqs, 64, "Most sequences in a batch.");
ABSL_FLAG(double, admission_reserve, 0.0,
          "Conservative admission under KV memory pressure, in [0, 1]: after a running request "
          "had to be preempted for lack of KV blocks, new ones are admitted only while the pool "
          "keeps this fraction (more after each further preemption, decaying per step) of the "
          "running requests' possible growth free (0.2 is a good start where recomputing a "
          "preempted request is expensive). 0: admit whenever the prompt fits.");
ABSL_FLAG(int32_t, max_batched_tokens, 2048, "Token budget of one step (chunked prefill).");
ABSL_FLAG(bool, async_scheduling, true,
          "Pipelined steps where the backend runs them (the CUDA backend, on one GPU or a "
          "tensor-parallel group): the next decode step is built and submitted while the current "
          "one runs, its tokens fed on the device; false: each step waits for the previous one's "
          "results.");
ABSL_FLAG(int32_t, max_live_requests, 1024,
          "Requests queued or running beyond which new ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(bool, prefix_cache, true, "Reuse the KV of prompt prefixes across requests.");
ABSL_FLAG(std::string, memshare, "on",
          "MemShare for requests that leave it to the server: on or off.");
ABSL_FLAG(double, tau_lex, 0.0,
          "Default MemShare lexical (MinHash Jaccard) threshold, [0, 1]; 0 lets every earlier "
          "step the LSH index finds be a candidate (most similar first).");
ABSL_FLAG(double, tau_kv, 1.0, "Default MemShare K/V relative L2 distance threshold, >= 0.");
ABSL_FLAG(bool, memshare_keep_numbers, true,
          "MemShare: refuse near matches that disagree on a token with a digit. On the tiny "
          "reasoner's 600 held-out problems with 8-token blocks: 0-1 answers lost at 31% of KV "
          "blocks saved; without it 30 lost at 36% (bench/RESULTS.md).");

ABSL_FLAG(int32_t, world_size, 1,
          "Tensor parallelism: processes (one per GPU) in this worker group; 1: no group. Every "
          "rank gets the same model and engine flags.");
ABSL_FLAG(int32_t, rank, 0,
          "Tensor parallelism: this process's rank, 0 .. world_size-1. Rank 0 serves the "
          "WorkerService and drives the group; the others follow it.");
ABSL_FLAG(std::string, group_leader, "",
          "Ranks > 0: host:port of rank 0's group rendezvous (rank 0's --group_address).");
ABSL_FLAG(std::string, group_address, "",
          "Rank 0: host:port where the group rendezvous listens while the group forms; empty: "
          "--address (the WorkerService takes the port over once every rank has joined). Port 0: "
          "the OS chooses; the port is printed.");
ABSL_FLAG(std::string, group_name, "",
          "Optional name every rank of the group is started with (a rank of another group is "
          "refused).");
ABSL_FLAG(int32_t, cuda_device, -1,
          "CUDA device of this rank; -1: rank % the number of visible devices (one process per "
          "GPU on one host).");
ABSL_FLAG(absl::Duration, group_timeout, absl::Minutes(5),
          "How long forming the group may take (every rank joined, NCCL up).");
ABSL_FLAG(absl::Duration, collective_timeout, absl::Seconds(30),
          "Longest wait of one step's collectives (and of a follower for rank 0's next command) "
          "before the group is declared broken: a rank that died or hangs is detected within it.");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1),
          "Rank 0: when idle this long, probe the group (an all-gather of the consistency "
          "hashes); must be well below --collective_timeout.");
ABSL_FLAG(int32_t, consistency_check_interval, 256,
          "Rank 0: steps between two all-gathers of every rank's block-table hash (a mismatch "
          "stops the group); 0: only the idle probes.");

namespace memshare::engine {

namespace {

bool Grouped() { return absl::GetFlag(FLAGS_world_size) > 1; }

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::StatusOr<CpuEngineOptions> EngineOptionsFromFlags() {
  CpuEngineOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model);
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model: is required");
  absl::StatusOr<model::LoadFormat> format =
      model::ParseLoadFormat(absl::GetFlag(FLAGS_load_format));
  if (!format.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--load_format: ", format.status().message()));
  }
  o.load_format = *format;
  o.block_size = absl::GetFlag(FLAGS_block_size);
  o.num_blocks = absl::GetFlag(FLAGS_num_blocks);
  o.kv_cache_bytes = int64_t{absl::GetFlag(FLAGS_kv_cache_mib)} << 20;
  o.num_layer_groups = absl::GetFlag(FLAGS_layer_groups);
  o.num_threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<DeviceKind> device = ParseDeviceKind(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return device.status();
  o.device = *device;
  o.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  if (!(o.gpu_memory_utilization > 0 && o.gpu_memory_utilization <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpu_memory_utilization: must be in (0, 1], got ", o.gpu_memory_utilization));
  }
  o.fuse_norms = absl::GetFlag(FLAGS_fuse_norms);
  o.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  o.engine.scheduler.max_prompt_len = absl::GetFlag(FLAGS_max_prompt_len);
  o.engine.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  const double reserve = absl::GetFlag(FLAGS_admission_reserve);
  if (!(reserve >= 0 && reserve <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--admission_reserve: must be in [0, 1], got ", reserve));
  }
  o.engine.scheduler.reserve_ratio_step = reserve;
  o.engine.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_batched_tokens);
  o.engine.scheduler.pipeline_steps = absl::GetFlag(FLAGS_async_scheduling);
  o.engine.max_live_requests = absl::GetFlag(FLAGS_max_live_requests);
  o.engine.kv.enable_prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  const std::string memshare = absl::GetFlag(FLAGS_memshare);
  if (memshare != "on" && memshare != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--memshare: must be on or off, got \"", memshare, "\""));
  }
  o.engine.kv.dedup.mode =
      memshare == "on" ? kvmanager::DedupMode::kMemShare : kvmanager::DedupMode::kOff;
  kvmanager::DedupPolicy& dedup = o.engine.kv.dedup;
  dedup.tau_lex = static_cast<float>(absl::GetFlag(FLAGS_tau_lex));
  dedup.tau_kv = static_cast<float>(absl::GetFlag(FLAGS_tau_kv));
  dedup.keep_numbers = absl::GetFlag(FLAGS_memshare_keep_numbers);
  // A looser server default is also the loosest a request may ask for.
  dedup.min_tau_lex = std::min(dedup.min_tau_lex, dedup.tau_lex);
  dedup.max_tau_kv = std::max(dedup.max_tau_kv, dedup.tau_kv);
  return o;
}

// Joins (or, rank 0, forms) the group and checks every rank was started
// with the same model and engine flags.
absl::StatusOr<std::shared_ptr<TpGroup>> FormGroup(const CpuEngineOptions& o) {
  TpGroup::Options g;
  g.rank = absl::GetFlag(FLAGS_rank);
  g.world_size = absl::GetFlag(FLAGS_world_size);
  g.leader_address = absl::GetFlag(FLAGS_group_leader);
  g.listen_address = absl::GetFlag(FLAGS_group_address);
  if (g.listen_address.empty()) {
    // The worker's --address (defined by worker_main): the rendezvous
    // answers there until the group has formed.
    const absl::CommandLineFlag* address = absl::FindCommandLineFlag("address");
    g.listen_address = address != nullptr ? address->CurrentValue() : "0.0.0.0:50051";
  }
  g.group_name = absl::GetFlag(FLAGS_group_name);
  g.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  g.formation_timeout = absl::GetFlag(FLAGS_group_timeout);
  g.collective_timeout = absl::GetFlag(FLAGS_collective_timeout);
  g.on_listening = [world = g.world_size](int port) {
    std::printf("memshare_worker: group rendezvous on port %d, waiting for %d ranks\n", port,
                world - 1);
    std::fflush(stdout);
  };
  absl::StatusOr<std::shared_ptr<TpGroup>> group = TpGroup::Form(g);
  if (!group.ok()) return group.status();
  const std::string description = DescribeForGroup(
      ReadSmallFile(o.model_dir + "/config.json"),
      absl::StrCat("load_format=", absl::GetFlag(FLAGS_load_format), ";block_size=", o.block_size,
                   ";num_blocks=", o.num_blocks, ";layer_groups=", o.num_layer_groups,
                   ";max_model_len=", o.max_model_len,
                   ";max_num_seqs=", o.engine.scheduler.max_num_seqs, ";max_batched_tokens=",
                   o.engine.scheduler.max_num_batched_tokens, ";world_size=", g.world_size));
  if (absl::Status s = (*group)->CheckSameConfig(description); !s.ok()) return s;
  // Every rank is in: the port goes to the WorkerService (rank 0).
  (*group)->StopRendezvous();
  std::fprintf(stderr, "memshare_worker: rank %d of %d on CUDA device %d, NCCL %d\n", g.rank,
               g.world_size, (*group)->cuda_device(), (*group)->nccl().nccl_version());
  return group;
}

void SetTensorParallel(const std::shared_ptr<TpGroup>& group, CpuEngineOptions* o) {
  o->device = DeviceKind::kCuda;
  o->tensor_parallel.rank = group->rank();
  o->tensor_parallel.size = group->world_size();
  o->tensor_parallel.collectives = &group->nccl();
  o->tensor_parallel.cuda_device = group->cuda_device();
}

}  // namespace

absl::Status ValidateGroupFlags() {
  const int32_t world = absl::GetFlag(FLAGS_world_size);
  const int32_t rank = absl::GetFlag(FLAGS_rank);
  if (world < 1 || world > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--world_size: must be 1 .. 64, got ", world));
  }
  if (rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank: must be 0 .. world_size-1 (", world - 1, "), got ", rank));
  }
  if (rank > 0 && absl::GetFlag(FLAGS_group_leader).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--group_leader: rank ", rank, " needs rank 0's host:port"));
  }
  if (world == 1 && !absl::GetFlag(FLAGS_group_leader).empty()) {
    return absl::InvalidArgumentError("--group_leader: given, but --world_size is 1");
  }
  const absl::Duration collective = absl::GetFlag(FLAGS_collective_timeout);
  const absl::Duration heartbeat = absl::GetFlag(FLAGS_heartbeat_interval);
  if (collective <= absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_group_timeout) <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--collective_timeout, --group_timeout: must be > 0");
  }
  if (heartbeat < absl::ZeroDuration() || (world > 1 && heartbeat * 2 > collective)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--heartbeat_interval (", absl::FormatDuration(heartbeat),
                     "): must be >= 0 and at most half of --collective_timeout (",
                     absl::FormatDuration(collective), "), or idle followers would time out"));
  }
  if (absl::GetFlag(FLAGS_consistency_check_interval) < 0) {
    return absl::InvalidArgumentError("--consistency_check_interval: must be >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<InferenceEngine>> CreateEngineFromFlags() {
  if (absl::Status s = ValidateGroupFlags(); !s.ok()) return s;
  absl::StatusOr<CpuEngineOptions> o = EngineOptionsFromFlags();
  if (!o.ok()) return o.status();
  if (Grouped()) {
    absl::StatusOr<std::shared_ptr<TpGroup>> group = FormGroup(*o);
    if (!group.ok()) return group.status();
    SetTensorParallel(*group, &*o);
    GroupLeaderBackend::Options lo;
    lo.consistency_check_interval = absl::GetFlag(FLAGS_consistency_check_interval);
    lo.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
    o->wrap_backend =
        [lo, group = *group](
            std::unique_ptr<Backend> local) -> absl::StatusOr<std::unique_ptr<Backend>> {
      absl::StatusOr<std::unique_ptr<GroupLeaderBackend>> leader =
          GroupLeaderBackend::Create(lo, std::move(local), TpGroup::SharedCommunicator(group));
      if (!leader.ok()) return leader.status();
      return std::unique_ptr<Backend>(*std::move(leader));
    };
  }
  absl::StatusOr<CpuEngine> engine = CreateCpuEngine(*o);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<InferenceEngine>(std::move(engine->engine));
}

std::optional<int> RunFollowerFromFlags() {
  if (absl::GetFlag(FLAGS_rank) == 0) return std::nullopt;
  if (absl::Status s = ValidateGroupFlags(); !s.ok()) {
    std::fprintf(stderr, "memshare_worker: %s\n", s.ToString().c_str());
    return 1;
  }
  const int rank = absl::GetFlag(FLAGS_rank);
  absl::StatusOr<CpuEngineOptions> o = EngineOptionsFromFlags();
  if (!o.ok()) {
    std::fprintf(stderr, "memshare_worker: %s\n", o.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::shared_ptr<TpGroup>> group = FormGroup(*o);
  if (!group.ok()) {
    std::fprintf(stderr, "memshare_worker: rank %d cannot join the group: %s\n", rank,
                 group.status().ToString().c_str());
    return 1;
  }
  SetTensorParallel(*group, &*o);
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateEngineBackend(*o);
  if (!backend.ok()) {
    std::fprintf(stderr, "memshare_worker: rank %d cannot build its shard: %s\n", rank,
                 backend.status().ToString().c_str());
    (*group)->nccl().Abort(backend.status());
    return 1;
  }
  std::shared_ptr<Communicator> comm = TpGroup::SharedCommunicator(*group);
  absl::StatusOr<std::unique_ptr<GroupFollower>> follower =
      GroupFollower::Create(*std::move(backend), comm);
  if (!follower.ok()) return 1;
  // SIGTERM/SIGINT: leave the group (rank 0 then sees it broken).
  std::thread([comm] {
    const int signal = WaitForTerminationSignal();
    comm->Abort(absl::CancelledError(absl::StrCat("signal ", signal)));
  }).detach();
  std::printf("memshare_worker: rank %d of %d following %s\n", rank,
              absl::GetFlag(FLAGS_world_size), absl::GetFlag(FLAGS_group_leader).c_str());
  std::fflush(stdout);
  const absl::Status status = (*follower)->Run();
  if (status.ok()) {
    std::fprintf(stderr, "memshare_worker: rank %d: rank 0 shut the group down after %ld steps\n",
                 rank, static_cast<long>((*follower)->steps()));
    return 0;
  }
  std::fprintf(stderr, "memshare_worker: rank %d: the group failed after %ld steps: %s\n", rank,
               static_cast<long>((*follower)->steps()), status.ToString().c_str());
  // Exit at once: tearing down a broken NCCL group can block, and rank 0
  // is gone or going.
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(3);
}

}  // namespace memshare::engine
