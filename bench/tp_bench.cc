// Tensor-parallel decode benchmark (issue 7), run on a GPU machine with two
// GPUs through bench/run_tp_device.sh:
//
//   tp_bench --tp=1 [--model=r1-7b|qwq-32b] [--batch=64 --context=1024]
//   tp_bench --tp=N --rank=0 --port=P [...]   # rank 0: listens on 127.0.0.1:P
//   tp_bench --tp=N --rank=r --port=P [...]   # ranks 1..N-1: join it
//
// Measures, with dummy weights of the model's shapes:
//   decode_step   one decode step of `batch` sequences at context `context`
//                 (KV pools filled with random bf16), median of `steps`
//                 after a warm-up, through Forward: for TP=2, rank 0's
//                 GroupLeaderBackend (the plan broadcast to rank 1, both
//                 ranks' shards, the all-reduces, the logits all-gather, the
//                 sampling), the way the worker's scheduler runs it;
//                 then pipelined (Submit / Collect, tokens fed on the
//                 device): pipelined_ms
//   engine_throughput  (--engine_runs) the offline workload, `batch`
//                 prompts of 512 tokens, 128 generated, through LlmEngine
//                 on rank 0, pipelined and one by one
//   collectives   (TP=2, both ranks, before the model loads) the NCCL
//                 all-reduce bus bandwidth at 256 MiB and at the decode
//                 step's activation size (and the one-shot all-reduce's
//                 time at that size), the exchange of the greedy
//                 candidates (a uint64 maximum per row, eager, NCCL and
//                 one-shot), and the time of one decode step's
//                 collectives alone (2 x layers + 1 all-reduces of
//                 [batch][hidden] bf16, fused with the norm after them in
//                 the fused mode, and the all-gather of the logits),
//                 replayed from a CUDA graph as in the step, for NCCL and
//                 for the group's fast path
// The TP paths follow MEMSHARE_TP_PLAN, MEMSHARE_TP_ALLREDUCE and
// MEMSHARE_TP_SAMPLE (nccl_communicator.h); the decode step's JSON names
// them.
// One JSON object per measurement on stdout (rank 0 only for TP=2), also
// appended to --json.
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "bench/engine_throughput.h"
#include "common/process_main.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/model/weight_spec.h"
#include "engine/parallel/group_follower.h"
#include "engine/parallel/group_leader_backend.h"
#include "engine/parallel/tp_group.h"

ABSL_FLAG(int, tp, 1, "Tensor-parallel ranks (1: the whole model on this GPU).");
ABSL_FLAG(int, rank, 0, "This process's rank (0 .. tp - 1); rank 0 listens, the others join it.");
ABSL_FLAG(int, port, 29611, "Rank 0's rendezvous port on 127.0.0.1.");
ABSL_FLAG(std::string, model, "r1-7b", "Model shapes (dummy weights): r1-7b or qwq-32b.");
ABSL_FLAG(int, batch, 64, "Sequences per decode step.");
ABSL_FLAG(int, context, 1024, "Context of every sequence.");
ABSL_FLAG(int, steps, 40, "Timed decode steps (after a warm-up).");
ABSL_FLAG(int, timeout_s, 30, "Collective timeout: a rank that waits longer fails.");
ABSL_FLAG(bool, collectives, true,
          "Also measure the collectives alone before the model loads (TP > 1).");
ABSL_FLAG(std::string, json, "", "Also append every measurement's JSON line to this file.");
ABSL_FLAG(int, engine_runs, 0,
          "Also run the offline workload (--batch prompts of 512 tokens, 128 generated, greedy) "
          "through LlmEngine on rank 0 this many times each with pipelined steps and one by one, "
          "alternated (0: none).");
ABSL_FLAG(int, engine_budget, 2048, "Token budget of the engine runs' steps.");
ABSL_FLAG(bool, skinny_wide, true,
          "Let GEMM tuning pick the skinny GEMM's column split, every k of a CTA's own output "
          "features (CudaBackend::Options::skinny_wide).");

namespace memshare::bench {
namespace {

using engine::Backend;
using engine::DeviceSampling;
using engine::SequenceChunk;
using engine::StepOutput;
using engine::StepPlan;
using engine::cuda::CudaBackend;

struct Args {
  int tp = 1;
  int rank = 0;
  int port = 29611;
  std::string model = "r1-7b";
  int batch = 64;
  int context = 1024;
  int steps = 40;
  int timeout_s = 30;
  bool collectives = true;
  std::string json;
  int engine_runs = 0;
  int engine_budget = 2048;
  bool skinny_wide = true;
};

// Reads the flags into `a`; false (after saying why on stderr) for a value
// out of range.
bool ArgsFromFlags(Args* a) {
  a->tp = absl::GetFlag(FLAGS_tp);
  a->rank = absl::GetFlag(FLAGS_rank);
  a->port = absl::GetFlag(FLAGS_port);
  a->model = absl::GetFlag(FLAGS_model);
  a->batch = absl::GetFlag(FLAGS_batch);
  a->context = absl::GetFlag(FLAGS_context);
  a->steps = absl::GetFlag(FLAGS_steps);
  a->timeout_s = absl::GetFlag(FLAGS_timeout_s);
  a->collectives = absl::GetFlag(FLAGS_collectives);
  a->json = absl::GetFlag(FLAGS_json);
  a->engine_runs = absl::GetFlag(FLAGS_engine_runs);
  a->engine_budget = absl::GetFlag(FLAGS_engine_budget);
  a->skinny_wide = absl::GetFlag(FLAGS_skinny_wide);
  std::string why;
  if (a->tp < 1) why = absl::StrCat("--tp: at least 1, got ", a->tp);
  else if (a->rank < 0 || a->rank >= a->tp)
    why = absl::StrCat("--rank: 0 .. tp - 1 = ", a->tp - 1, ", got ", a->rank);
  else if (a->port < 1 || a->port > 65535) why = absl::StrCat("--port: 1 .. 65535, got ", a->port);
  else if (a->model != "r1-7b" && a->model != "qwq-32b")
    why = absl::StrCat("--model: r1-7b or qwq-32b, got \"", a->model, "\"");
  else if (a->batch < 1) why = absl::StrCat("--batch: at least 1, got ", a->batch);
  else if (a->context < 2) why = absl::StrCat("--context: at least 2, got ", a->context);
  else if (a->steps < 1) why = absl::StrCat("--steps: at least 1, got ", a->steps);
  else if (a->timeout_s < 1) why = absl::StrCat("--timeout_s: at least 1, got ", a->timeout_s);
  else if (a->engine_runs < 0)
    why = absl::StrCat("--engine_runs: at least 0, got ", a->engine_runs);
  else if (a->engine_budget < 512 || a->engine_budget > 65536)
    why = absl::StrCat("--engine_budget: 512 .. 65536, got ", a->engine_budget);
  else if (a->engine_runs > 0 && a->context + 16 < 640)
    why = absl::StrCat("--engine_runs needs --context of at least 624 (512 + 128 tokens)");
  if (why.empty()) return true;
  std::fprintf(stderr, "%s\n", why.c_str());
  return false;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "tp_bench: %s\n", what.c_str());
  std::fflush(stdout);
  _exit(1);
}

#define CHECK_OK(expr)                                             \
  do {                                                             \
    const absl::Status s__ = (expr);                               \
    if (!s__.ok()) Die(absl::StrCat(#expr, ": ", s__.ToString())); \
  } while (0)

#define CHECK_CUDA(expr)                                                             \
  do {                                                                               \
    const cudaError_t e__ = (expr);                                                  \
    if (e__ != cudaSuccess) Die(absl::StrCat(#expr, ": ", cudaGetErrorString(e__))); \
  } while (0)

engine::model::ModelConfig Model(const std::string& name) {
  engine::model::ModelConfig c;
  c.architecture = engine::model::Architecture::kQwen2;
  c.architecture_name = "Qwen2ForCausalLM";
  c.vocab_size = 152064;
  c.head_dim = 128;
  c.tie_word_embeddings = false;
  c.qkv_bias = true;
  if (name == "qwq-32b") {  // Qwen/QwQ-32B config.json
    c.hidden_size = 5120;
    c.intermediate_size = 27648;
    c.num_layers = 64;
    c.num_heads = 40;
    c.num_kv_heads = 8;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 1000000.0;
    c.max_position_embeddings = 40960;
  } else {  // deepseek-ai/DeepSeek-R1-Distill-Qwen-7B config.json
    c.hidden_size = 3584;
    c.intermediate_size = 18944;
    c.num_layers = 28;
    c.num_heads = 28;
    c.num_kv_heads = 4;
    c.rms_norm_eps = 1e-6;
    c.rope_theta = 10000.0;
    c.max_position_embeddings = 131072;
  }
  return c;
}

class Report {
 public:
  Report(const std::string& path, bool on) : on_(on) {
    if (on && !path.empty()) file_.open(path, std::ios::app);
  }
  void Add(const std::string& json) {
    if (!on_) return;
    std::printf("%s\n", json.c_str());
    std::fflush(stdout);
    if (file_.is_open()) file_ << json << "\n" << std::flush;
  }

 private:
  bool on_;
  std::ofstream file_;
};

std::string Card(int device) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "unknown";
  return p.name;
}

// NCCL on this pair of GPUs, both ranks in the same order: bus bandwidth of
// large and decode-sized all-reduces, and one decode step's collectives.
void MeasureCollectives(engine::NcclCommunicator& nccl, const engine::model::ModelConfig& c,
                        const Args& a, Report& report) {
  const int n = a.tp;
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  const size_t big = size_t{256} << 20;  // bytes
  void* buf = nullptr;
  CHECK_CUDA(cudaMalloc(&buf, big));
  CHECK_CUDA(cudaMemset(buf, 0, big));  // bf16 zeros: sums stay finite
  auto time_allreduce = [&](size_t bytes, int reps) {
    for (int i = 0; i < 3; ++i) CHECK_OK(nccl.AllReduceSumBf16(buf, bytes / 2, stream));
    CHECK_OK(nccl.Synchronize(stream, "warm-up"));
    CHECK_CUDA(cudaEventRecord(e0, stream));
    for (int i = 0; i < reps; ++i) CHECK_OK(nccl.AllReduceSumBf16(buf, bytes / 2, stream));
    CHECK_CUDA(cudaEventRecord(e1, stream));
    CHECK_OK(nccl.Synchronize(stream, "all-reduce"));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    return ms * 1e-3 / reps;
  };
  const size_t step_bytes = size_t{2} * a.batch * c.hidden_size;
  const engine::AllReduceMode chosen = nccl.all_reduce_mode();
  std::vector<engine::AllReduceMode> modes = {engine::AllReduceMode::kNccl};
  if (nccl.one_shot_ready()) modes.push_back(chosen);
  nccl.set_all_reduce_mode(engine::AllReduceMode::kNccl);
  for (size_t bytes : {step_bytes, size_t{4} << 20, size_t{64} << 20, big}) {
    const double t = time_allreduce(bytes, bytes >= (size_t{64} << 20) ? 10 : 50);
    const double busbw = 2.0 * (n - 1) / n * bytes / t;
    report.Add(absl::StrCat("{\"measure\":\"nccl_allreduce\",\"tp\":", n, ",\"bytes\":", bytes,
                            ",\"us\":", t * 1e6, ",\"busbw_gbs\":", busbw / 1e9,
                            ",\"algbw_gbs\":", bytes / t / 1e9, "}"));
  }
  if (nccl.one_shot_ready()) {  // eager, the host's enqueue included
    nccl.set_all_reduce_mode(engine::AllReduceMode::kOneShot);
    const double t = time_allreduce(step_bytes, 50);
    report.Add(absl::StrCat("{\"measure\":\"oneshot_allreduce\",\"tp\":", n,
                            ",\"push\":", nccl.one_shot_push() ? "true" : "false",
                            ",\"lamport\":", nccl.one_shot_lamport() ? "true" : "false",
                            ",\"bytes\":", step_bytes, ",\"us\":", t * 1e6, "}"));
  }
  // The greedy candidates' exchange (one uint64 maximum per row), eager as
  // in Forward: NCCL, then one-shot where it is set up. Every rank offers
  // its rank in row r's candidate: the maximum is known.
  {
    std::vector<uint64_t> mine(a.batch);
    for (int r = 0; r < a.batch; ++r) mine[r] = (uint64_t{1} << 40) * (a.rank + 1) + r;
    uint64_t* cand = static_cast<uint64_t*>(buf);
    for (const engine::AllReduceMode mode :
         {engine::AllReduceMode::kNccl, engine::AllReduceMode::kOneShot}) {
      if (mode != engine::AllReduceMode::kNccl && !nccl.one_shot_ready()) continue;
      nccl.set_all_reduce_mode(mode);
      std::vector<double> t;
      for (int i = 0; i < 53; ++i) {
        CHECK_CUDA(cudaMemcpyAsync(cand, mine.data(), a.batch * 8, cudaMemcpyHostToDevice, stream));
        CHECK_OK(nccl.Synchronize(stream, "upload"));
        const double t0 = Now();
        CHECK_OK(nccl.AllReduceMaxU64(cand, a.batch, stream));
        CHECK_OK(nccl.Synchronize(stream, "candidates"));
        if (i >= 3) t.push_back(Now() - t0);
      }
      std::vector<uint64_t> got(a.batch);
      CHECK_CUDA(cudaMemcpy(got.data(), cand, a.batch * 8, cudaMemcpyDeviceToHost));
      for (int r = 0; r < a.batch; ++r) {
        if (got[r] != (uint64_t{1} << 40) * n + r) Die("wrong maximum of the candidates");
      }
      report.Add(absl::StrCat("{\"measure\":\"candidates_max\",\"tp\":", n,
                              ",\"path\":\"", mode == engine::AllReduceMode::kNccl ? "nccl" : "oneshot",
                              "\",\"rows\":", a.batch, ",\"us\":", Median(t) * 1e6, "}"));
    }
    CHECK_CUDA(cudaMemset(buf, 0, big));
  }
  // One decode step's collectives: embedding + 2 per layer all-reduces of
  // [batch][hidden] bf16, then the logits all-gather, from a CUDA graph.
  const engine::model::VocabRange v = engine::model::LocalVocab(c, {a.rank, n});
  const int64_t gather_count = int64_t{a.batch} * v.chunk;
  float* gather_send = nullptr;
  float* gather_recv = nullptr;
  CHECK_CUDA(cudaMalloc(&gather_send, gather_count * 4));
  CHECK_CUDA(cudaMalloc(&gather_recv, gather_count * 4 * n));
  const int allreduces = 2 * static_cast<int>(c.num_layers) + 1;
  // The fused all-reduce + RMSNorm's other operands ([batch][hidden] bf16
  // residual and output, a [hidden] weight), zeros like buf.
  void* norm_bufs = nullptr;
  const size_t rows_bytes = size_t{2} * a.batch * c.hidden_size;
  CHECK_CUDA(cudaMalloc(&norm_bufs, 2 * rows_bytes + 2 * c.hidden_size));
  CHECK_CUDA(cudaMemset(norm_bufs, 0, 2 * rows_bytes + 2 * c.hidden_size));
  char* residual = static_cast<char*>(norm_bufs);
  char* normed = residual + rows_bytes;
  char* weight = normed + rows_bytes;
  auto enqueue_step = [&](bool with_gather) {
    // As the backend: the embedding's all-reduce, then each row-parallel
    // output's with the norm after it (fused where the mode says so).
    for (int i = 0; i < allreduces; ++i) {
      if (i > 0 && nccl.FusesAllReduceAddRmsNorm(buf, residual, weight, normed, a.batch,
                                                 static_cast<int>(c.hidden_size))) {
        CHECK_OK(nccl.AllReduceAddRmsNormBf16(buf, residual, weight, normed, a.batch,
                                              static_cast<int>(c.hidden_size), 1e-6f, stream));
      } else {
        CHECK_OK(nccl.AllReduceSumBf16(buf, step_bytes / 2, stream));
      }
    }
    if (with_gather) CHECK_OK(nccl.AllGatherFp32(gather_send, gather_recv, gather_count, stream));
  };
  std::vector<std::pair<engine::AllReduceMode, bool>> runs;  // (mode, logits all-gather)
  for (engine::AllReduceMode mode : modes) {
    runs.emplace_back(mode, false);
    runs.emplace_back(mode, true);
  }
  for (const auto& [mode, with_gather] : runs) {
    nccl.set_all_reduce_mode(mode);
    enqueue_step(with_gather);  // warm-up, eager
    CHECK_OK(nccl.Synchronize(stream, "warm-up"));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    enqueue_step(with_gather);
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    std::vector<double> t;
    for (int r = 0; r < 23; ++r) {
      CHECK_CUDA(cudaEventRecord(e0, stream));
      CHECK_CUDA(cudaGraphLaunch(exec, stream));
      CHECK_CUDA(cudaEventRecord(e1, stream));
      CHECK_OK(nccl.Synchronize(stream, "step collectives"));
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      if (r >= 3) t.push_back(ms * 1e-3);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    report.Add(absl::StrCat("{\"measure\":\"step_collectives\",\"tp\":", n, ",\"model\":\"",
                            a.model, "\",\"allreduce\":\"", engine::AllReduceModeName(mode),
                            mode == engine::AllReduceMode::kNccl ? ""
                            : nccl.one_shot_lamport()            ? " lamport"
                            : nccl.one_shot_push()               ? " push"
                                                                 : " pull",
                            "\",\"batch\":", a.batch, ",\"allreduces\":", allreduces,
                            ",\"allreduce_bytes\":", step_bytes,
                            ",\"logits_allgather\":", with_gather ? "true" : "false",
                            ",\"allgather_bytes_per_rank\":", with_gather ? gather_count * 4 : 0,
                            ",\"median_us\":", Median(t) * 1e6, "}"));
  }
  nccl.set_all_reduce_mode(chosen);
  cudaFree(norm_bufs);
  cudaFree(gather_send);
  cudaFree(gather_recv);
  cudaFree(buf);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(stream);
}

CudaBackend::Options BackendOptions(const Args& a, int device,
                                    engine::cuda::DeviceCollectives* collectives) {
  CudaBackend::Options o;
  o.load_format = engine::model::LoadFormat::kDummy;
  o.config = Model(a.model);
  o.dummy.seed = 0;
  o.dummy.std = 0.02f;
  o.device = device;
  o.max_num_seqs = a.batch;
  o.max_num_batched_tokens = std::max({a.batch, 256, a.engine_runs > 0 ? a.engine_budget : 0});
  o.max_model_len = a.context + 16;
  const int bps = (o.max_model_len + 15) / 16;
  o.num_blocks = a.batch * bps + 16;
  o.cuda_graph_batch_sizes = {a.batch};
  o.tune_gemms = true;
  o.skinny_wide = a.skinny_wide;
  o.tp_rank = a.rank;
  o.tp_size = a.tp;
  o.collectives = collectives;
  return o;
}

// The offline workload through LlmEngine over `b` (rank 0), pipelined and
// one by one alternated, a.engine_runs times each.
void TimeEngine(Backend& b, const Args& a, Report& report) {
  for (int i = 0; i < a.engine_runs; ++i) {
    for (const bool pipeline : {true, false}) {
      const EngineResult r =
          RunEngineThroughput(b, a.batch, 512, 128, a.engine_budget, true, pipeline, 1 + i);
      report.Add(absl::StrCat(
          "{\"measure\":\"engine_throughput\",\"model\":\"", a.model, "\",\"tp\":", a.tp,
          ",\"prompts\":", a.batch,
          ",\"prompt_len\":512,\"gen_len\":128,\"budget\":", a.engine_budget,
          ",\"pipelined\":", pipeline ? "true" : "false", ",\"seconds\":", r.seconds,
          ",\"output_tok_per_s\":", r.output_tokens / r.seconds, ",\"steps\":", r.steps, "}"));
    }
  }
}

// Decode steps of `batch` sequences at context `context` (the same plan
// every step: each rewrites its last slot), timed on the host around
// Forward, then pipelined. Rank 0 only.
void TimeDecode(Backend& b, CudaBackend& local, const Args& a, const CudaBackend::Options& o,
                const std::string& paths, Report& report) {
  const int B = a.batch, C = a.context, bs = 16;
  const int bps = (C + bs) / bs;
  StepPlan plan;
  std::mt19937 rng(9);
  std::uniform_int_distribution<int32_t> tok(10, b.vocab_size() - 10);
  for (int i = 0; i < B; ++i) {
    SequenceChunk s;
    s.seq_id = i;
    s.start_pos = C - 1;
    s.token_ids = {tok(rng)};
    std::vector<int32_t> t(bps);
    for (int k = 0; k < bps; ++k) t[k] = i * bps + k;
    s.block_tables = {t};
    s.sampling = DeviceSampling{};
    plan.sequences.push_back(std::move(s));
  }
  StepOutput out;
  std::vector<double> t, gpu;
  for (int i = 0; i < a.steps + 10; ++i) {
    const double s0 = Now();
    CHECK_OK(b.Forward(plan, &out));
    if (i >= 10) {
      t.push_back(Now() - s0);
      gpu.push_back(local.last_step_gpu_seconds());
    }
  }
  // Pipelined (Submit / Collect, each step's tokens fed from the one
  // before on the device): the time between two collected steps.
  std::vector<double> pt;
  if (b.SupportsPipelining()) {
    StepPlan fed = plan;
    for (int i = 0; i < B; ++i) fed.sequences[i].fed_row = i;
    CHECK_OK(b.Submit(plan));
    double last = Now();
    for (int i = 0; i < a.steps + 10; ++i) {
      CHECK_OK(b.Submit(fed));
      CHECK_OK(b.Collect(&out));
      const double now = Now();
      if (i >= 10) pt.push_back(now - last);
      last = now;
    }
    CHECK_OK(b.Collect(&out));
  }
  const auto& c = *o.config;
  const double weight_gb =
      2.0 *
      (c.num_layers * (c.hidden_size * (c.q_dim() + 2 * c.kv_dim()) + c.q_dim() * c.hidden_size +
                       3.0 * c.hidden_size * c.intermediate_size) +
       double(c.vocab_size) * c.hidden_size) /
      1e9;
  const double step = Median(t);
  report.Add(absl::StrCat(
      "{\"measure\":\"decode_step\",\"gpu\":\"", Card(o.device), "\",\"model\":\"", a.model,
      "\",\"tp\":", a.tp, ",\"batch\":", B, ",\"context\":", C, ",\"median_ms\":", step * 1e3,
      ",\"min_ms\":", *std::min_element(t.begin(), t.end()) * 1e3,
      ",\"median_gpu_ms\":", Median(gpu) * 1e3, ",\"tok_per_s\":", B / step,
      ",\"pipelined_ms\":", pt.empty() ? 0.0 : Median(pt) * 1e3,
      ",\"weight_gb_per_rank\":", weight_gb / a.tp, ",\"graph_steps\":", local.graph_steps(),
      ",\"shard_sampled_steps\":", local.shard_sampled_steps(),
      ",\"kv_blocks\":", local.kv_spec().num_blocks, ",\"gemms\":\"", local.GemmChoices(B), "\"",
      paths, "}"));
}

int Main(int argc, char** argv) {
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  memshare::ParseFlags(argc, argv,
                       "Tensor-parallel decode benchmark with dummy weights (one process per "
                       "rank). Needs a GPU per rank.");
  Args a;
  if (!ArgsFromFlags(&a)) return 2;
  Report report(a.json, a.rank == 0);
  const engine::model::ModelConfig c = Model(a.model);
  if (a.tp == 1) {
    const CudaBackend::Options o = BackendOptions(a, 0, nullptr);
    const double t0 = Now();
    absl::StatusOr<std::unique_ptr<CudaBackend>> b = CudaBackend::Create(o);
    CHECK_OK(b.status());
    report.Add(absl::StrCat("{\"measure\":\"create\",\"tp\":1,\"model\":\"", a.model,
                            "\",\"seconds\":", Now() - t0, "}"));
    CHECK_OK((*b)->FillKvPoolsForBenchmark(7, 1.0f));
    TimeDecode(**b, **b, a, o, "", report);
    TimeEngine(**b, a, report);
    return 0;
  }
  engine::TpGroup::Options g;
  g.rank = a.rank;
  g.world_size = a.tp;
  g.listen_address = absl::StrCat("127.0.0.1:", a.port);
  g.leader_address = absl::StrCat("127.0.0.1:", a.port);
  g.formation_timeout = absl::Seconds(60);
  g.collective_timeout = absl::Seconds(a.timeout_s);
  const double t0 = Now();
  absl::StatusOr<std::shared_ptr<engine::TpGroup>> group = engine::TpGroup::Form(g);
  CHECK_OK(group.status());
  report.Add(absl::StrCat("{\"measure\":\"group_formed\",\"tp\":", a.tp, ",\"seconds\":",
                          Now() - t0, ",\"nccl_version\":", (*group)->nccl().nccl_version(), "}"));
  if (a.collectives) MeasureCollectives((*group)->nccl(), c, a, report);
  const CudaBackend::Options o = BackendOptions(a, (*group)->cuda_device(), &(*group)->nccl());
  const double t1 = Now();
  absl::StatusOr<std::unique_ptr<CudaBackend>> local = CudaBackend::Create(o);
  CHECK_OK(local.status());
  report.Add(absl::StrCat("{\"measure\":\"create\",\"tp\":", a.tp, ",\"model\":\"", a.model,
                          "\",\"seconds\":", Now() - t1, "}"));
  CHECK_OK((*local)->FillKvPoolsForBenchmark(7 + a.rank, 1.0f));
  CudaBackend* shard = local->get();
  std::shared_ptr<engine::Communicator> comm = engine::TpGroup::SharedCommunicator(*group);
  if (a.rank == 0) {
    engine::GroupLeaderBackend::Options lo;  // the worker's defaults
    absl::StatusOr<std::unique_ptr<engine::GroupLeaderBackend>> leader =
        engine::GroupLeaderBackend::Create(lo, *std::move(local), comm);
    CHECK_OK(leader.status());
    const engine::NcclCommunicator& nc = (*group)->nccl();
    const std::string paths = absl::StrCat(
        ",\"plan\":\"", nc.host_channel_active() ? "shm" : "nccl", "\",\"allreduce\":\"",
        nc.one_shot_ready() ? engine::AllReduceModeName(nc.all_reduce_mode()) : "nccl",
        nc.one_shot_ready()
            ? (nc.one_shot_lamport() ? " lamport" : nc.one_shot_push() ? " push" : " pull")
            : "",
        "\",\"sample\":\"", nc.samples_on_shards() ? "shards" : "gather", "\"");
    TimeDecode(**leader, *shard, a, o, paths, report);
    TimeEngine(**leader, a, report);
    return 0;  // the leader's destructor stops rank 1
  }
  absl::StatusOr<std::unique_ptr<engine::GroupFollower>> follower =
      engine::GroupFollower::Create(*std::move(local), comm);
  CHECK_OK(follower.status());
  const absl::Status s = (*follower)->Run();
  std::fprintf(stderr, "tp_bench rank %d: %s after %ld steps\n", a.rank, s.ToString().c_str(),
               static_cast<long>((*follower)->steps()));
  return s.ok() ? 0 : 3;
}

}  // namespace
}  // namespace memshare::bench

int main(int argc, char** argv) { return memshare::bench::Main(argc, argv); }
