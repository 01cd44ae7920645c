// CUDA backend benchmarks (issue 6), run on the GPU machine through
// bench/run_cuda_backend_device.sh together with the transformers peer
// (../shared/bench/hf_baseline.py) and bench/floor.py:
//
//   ceilings     device-to-device copy bandwidth (bytes read + written) and
//                a bf16 8192^3 cuBLASLt GEMM rate: the inputs of the floor
//   throughput   offline generation, DeepSeek-R1-Distill-Qwen-7B shapes with
//                dummy weights: P prompts x L tokens -> G generated, greedy,
//                EOS ignored; scheduled as the engine's scheduler does
//                (running sequences decode first, then prompts prefill in
//                chunks within the token budget, so decode and prefill share
//                steps), tokens sampled on the GPU
//   engine_throughput
//                the same offline workload through LlmEngine (scheduler,
//                KV manager, detokenization, streaming callbacks) over the
//                same backend, with tokens sampled on the GPU (device) or
//                on the host from downloaded logits (host), for each mode
//                of --engine; the ratio to the direct driver above is the
//                engine's overhead
//   decode_step  one decode step of B sequences at context C (KV pools
//                filled with random bf16), median of many, through Forward
//                (metadata upload, graph replay, sampling, download, sync);
//                and pipelined (Submit / Collect, each step's tokens fed
//                to the next on the device, the host one step ahead)
//   distance     ComputeDistanceSums calls of N random distinct block pairs
//                (one 28-layer group: 917,504-byte blocks), median per call
//
//   cuda_backend_bench [--prompts=64 --prompt_len=512 --gen_len=128
//                       --budgets=8192,16384 --tune_prefill=0|1|2 --repeats=3
//                       --decode_batch=64 --decode_context=1024 --decode_logits_rows=0
//                       --engine=device,host --skinny=0|1 --json=FILE
//                       --profile_decode_steps=N]
//
// Throughput runs for each budget (max tokens per step), with the GEMMs
// tuned for the decode buckets only (--tune_prefill 0 or 1) and then also
// for the budget's token count (1 or 2).
//
// Prints one JSON object per measurement (also to --json) and a table.
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/engine_throughput.h"
#include "common/process_main.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/gemm.h"
#include "engine/model/model_config.h"
#include "kernels/dummy_weights.h"

ABSL_FLAG(int, prompts, 64, "Offline workload: number of prompts.");
ABSL_FLAG(int, prompt_len, 512, "Offline workload: tokens per prompt (random ids).");
ABSL_FLAG(int, gen_len, 128, "Offline workload: tokens generated per prompt (greedy, EOS ignored).");
ABSL_FLAG(std::vector<std::string>, budgets, {"8192"},
          "Token budgets (max tokens per step), comma-separated: one throughput run each.");
ABSL_FLAG(int, tune_prefill, 1,
          "0: GEMMs tuned for the decode buckets only; 1: also runs with them tuned for each "
          "budget's token count; 2: only the latter.");
ABSL_FLAG(int, repeats, 3, "Timed throughput runs per configuration (after one warm-up run).");
ABSL_FLAG(int, decode_batch, 64, "Decode step measurement: sequences per step.");
ABSL_FLAG(int, decode_logits_rows, 0,
          "Decode step measurement: how many of its rows ask for their logits as well (as a "
          "request for top-n logprobs does); 0: every row greedy, no logits.");
ABSL_FLAG(int, decode_context, 1024, "Decode step measurement: context of every sequence.");
ABSL_FLAG(int, max_model_len, 0,
          "The backend's max_model_len, which sizes the decode graphs' block tables; 0: just "
          "what the workload needs (prompt + generated tokens, decode context + 1). A server's "
          "default is the model's context (32768 for R1-Distill-Qwen-7B).");
ABSL_FLAG(double, gpu_memory_utilization, 0.9, "Share of the GPU's memory the backend may use.");
ABSL_FLAG(std::vector<std::string>, engine, {},
          "Also run the offline workload through LlmEngine with tokens sampled on the GPU "
          "(device: steps pipelined; device-sync: one by one) and/or on the host from "
          "downloaded logits (host), comma-separated.");
ABSL_FLAG(bool, skinny, true,
          "Let GEMM tuning pick kernels/skinny_gemm for decode shapes (false: cuBLASLt only).");
ABSL_FLAG(double, skinny_preference, -1,
          "Keep the skinny GEMM where it times at most this share slower than cuBLASLt alone "
          "(CudaBackend::Options::skinny_gemm_preference); -1: the backend's default.");
ABSL_FLAG(int, block_size, 8,
          "KV block size in tokens (CudaBackend::Options::block_size), the worker's default; the "
          "fast attention kernels take 16 and 8. Figures before 2026-11-27's thirteenth session "
          "ran 16.");
ABSL_FLAG(bool, skinny_wide, true,
          "Let GEMM tuning pick the skinny GEMM's column split, every k of a CTA's own output "
          "features (CudaBackend::Options::skinny_wide).");
ABSL_FLAG(bool, fuse_norms, true,
          "One GPU: run the decode steps' RMSNorms in the GEMM epilogues, the norms' weights "
          "folded into the next products' (CudaBackend::Options::fuse_norms).");
ABSL_FLAG(bool, greedy_candidates, true,
          "Greedy decode steps take their tokens from the LM head's candidates "
          "(CudaBackend::Options::greedy_candidates).");
ABSL_FLAG(int32_t, early_dependents, 12,
          "Skinny products that let the next kernel launch at their start, a bit each: 1 QKV, 2 "
          "O, 4 gate/up, 8 down, 16 the LM head (CudaBackend::Options::early_dependents).");
ABSL_FLAG(bool, upload_kernel, true,
          "Upload each step's metadata with a kernel reading the pinned buffer "
          "(CudaBackend::Options::upload_by_kernel); false: a copy-engine transfer.");
ABSL_FLAG(std::string, json, "", "Also append every measurement's JSON line to this file.");
ABSL_FLAG(int, profile_decode_steps, 0,
          "After the timed decode steps, run this many more between cudaProfilerStart and "
          "cudaProfilerStop, for a profiler started with profiling off (ncu "
          "--profile-from-start off): the per-kernel split of the decode step.");

namespace memshare::bench {
namespace {

using engine::DeviceSampling;
using engine::SequenceChunk;
using engine::StepOutput;
using engine::StepPlan;
using engine::cuda::CudaBackend;

struct Args {
  int prompts = 64;
  int prompt_len = 512;
  int gen_len = 128;
  std::vector<int> budgets = {8192};  // max_batched_tokens of each run
  // 0: GEMMs tuned for the decode buckets only; 1: also runs with them
  // tuned for each budget; 2: only the latter.
  int tune_prefill = 1;
  int repeats = 3;
  int decode_batch = 64;
  int decode_logits_rows = 0;
  int decode_context = 1024;
  int max_model_len = 0;
  double gpu_memory_utilization = 0.9;
  // Modes of the engine_throughput runs ("device", "device-sync", "host"); none
  // by default.
  std::vector<std::string> engine_modes;
  std::string json;
  // Let GEMM tuning pick the skinny kernel for decode shapes.
  bool skinny = true;
  double skinny_preference = -1;  // -1: the backend's default
  bool skinny_wide = true;
  int block_size = 8;
  bool fuse_norms = true;
  bool greedy_candidates = true;
  bool upload_kernel = true;
  int early_dependents = 12;
  int profile_decode_steps = 0;
};

// Reads the flags into `a`; false (after saying why on stderr) for a value
// out of range.
bool ArgsFromFlags(Args* a) {
  a->prompts = absl::GetFlag(FLAGS_prompts);
  a->prompt_len = absl::GetFlag(FLAGS_prompt_len);
  a->gen_len = absl::GetFlag(FLAGS_gen_len);
  a->budgets.clear();
  for (const std::string& b : absl::GetFlag(FLAGS_budgets)) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1) {
      std::fprintf(stderr, "--budgets: positive token counts, got \"%s\"\n", b.c_str());
      return false;
    }
    a->budgets.push_back(v);
  }
  a->tune_prefill = absl::GetFlag(FLAGS_tune_prefill);
  a->repeats = absl::GetFlag(FLAGS_repeats);
  a->decode_batch = absl::GetFlag(FLAGS_decode_batch);
  a->decode_logits_rows = absl::GetFlag(FLAGS_decode_logits_rows);
  a->decode_context = absl::GetFlag(FLAGS_decode_context);
  a->max_model_len = absl::GetFlag(FLAGS_max_model_len);
  a->gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  a->json = absl::GetFlag(FLAGS_json);
  a->skinny = absl::GetFlag(FLAGS_skinny);
  a->skinny_preference = absl::GetFlag(FLAGS_skinny_preference);
  a->skinny_wide = absl::GetFlag(FLAGS_skinny_wide);
  a->block_size = absl::GetFlag(FLAGS_block_size);
  a->fuse_norms = absl::GetFlag(FLAGS_fuse_norms);
  a->greedy_candidates = absl::GetFlag(FLAGS_greedy_candidates);
  a->upload_kernel = absl::GetFlag(FLAGS_upload_kernel);
  a->early_dependents = absl::GetFlag(FLAGS_early_dependents);
  if (a->skinny_preference != -1 && !(a->skinny_preference >= 0)) {
    std::fprintf(stderr, "--skinny_preference: -1 or at least 0, got %g\n",
                 a->skinny_preference);
    return false;
  }
  a->profile_decode_steps = absl::GetFlag(FLAGS_profile_decode_steps);
  a->engine_modes.clear();
  for (const std::string& mode : absl::GetFlag(FLAGS_engine)) {
    if (mode != "device" && mode != "device-sync" && mode != "host") {
      std::fprintf(stderr, "--engine: device, device-sync or host, got \"%s\"\n", mode.c_str());
      return false;
    }
    a->engine_modes.push_back(mode);
  }
  const struct {
    const char* name;
    int value, min;
  } ints[] = {{"prompts", a->prompts, 1},
              {"prompt_len", a->prompt_len, 1},
              {"gen_len", a->gen_len, 2},
              {"repeats", a->repeats, 0},
              {"decode_batch", a->decode_batch, 1},
              {"decode_logits_rows", a->decode_logits_rows, 0},
              {"decode_context", a->decode_context, 1},
              {"profile_decode_steps", a->profile_decode_steps, 0},
              {"max_model_len", a->max_model_len, 0}};
  for (const auto& i : ints) {
    if (i.value < i.min) {
      std::fprintf(stderr, "--%s: at least %d, got %d\n", i.name, i.min, i.value);
      return false;
    }
  }
  if (a->budgets.empty()) {
    std::fprintf(stderr, "--budgets: at least one token budget\n");
    return false;
  }
  if (a->tune_prefill < 0 || a->tune_prefill > 2) {
    std::fprintf(stderr, "--tune_prefill: 0, 1 or 2, got %d\n", a->tune_prefill);
    return false;
  }
  if (!(a->gpu_memory_utilization > 0 && a->gpu_memory_utilization <= 1)) {
    std::fprintf(stderr, "--gpu_memory_utilization: in (0, 1], got %g\n",
                 a->gpu_memory_utilization);
    return false;
  }
  return true;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// config.json values of deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (as in
// ../shared/bench/hf_baseline.py and bench/floor.py).
engine::model::ModelConfig R1DistillQwen7B() {
  engine::model::ModelConfig c;
  c.architecture = engine::model::Architecture::kQwen2;
  c.architecture_name = "Qwen2ForCausalLM";
  c.vocab_size = 152064;
  c.hidden_size = 3584;
  c.intermediate_size = 18944;
  c.num_layers = 28;
  c.num_heads = 28;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 131072;
  c.tie_word_embeddings = false;
  c.qkv_bias = true;
  return c;
}

class Report {
 public:
  explicit Report(const std::string& path) {
    if (!path.empty()) file_.open(path);
  }
  void Add(const std::string& json) {
    std::printf("%s\n", json.c_str());
    std::fflush(stdout);
    if (file_.is_open()) file_ << json << "\n";
  }

 private:
  std::ofstream file_;
};

#define CHECK_OK(expr)                                                                 \
  do {                                                                                 \
    const absl::Status s__ = (expr);                                                   \
    if (!s__.ok()) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, s__.ToString().c_str()); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

#define CHECK_CUDA(expr)                                                                \
  do {                                                                                  \
    const cudaError_t e__ = (expr);                                                     \
    if (e__ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e__)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

// Device-to-device copy of 1 GiB: bytes read + written per second.
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void* a = nullptr;
  void* b = nullptr;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemset(a, 1, bytes));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    CHECK_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 2) t.push_back(ms * 1e-3);
  }
  cudaFree(a);
  cudaFree(b);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 2.0 * bytes / Median(t);
}

// bf16 8192^3 GEMM through the backend's cuBLASLt wrapper, random inputs.
double GemmRate() {
  const int n = 8192;
  const size_t elems = size_t{n} * n;
  void* x = nullptr;
  void* w = nullptr;
  void* y = nullptr;
  CHECK_CUDA(cudaMalloc(&x, elems * 2));
  CHECK_CUDA(cudaMalloc(&w, elems * 2));
  CHECK_CUDA(cudaMalloc(&y, elems * 2));
  CHECK_OK(kernels::LaunchDummyNormalBf16(1, 1.f, elems, 0, elems, 0, x, nullptr));
  CHECK_OK(kernels::LaunchDummyNormalBf16(2, 1.f, elems, 0, elems, 0, w, nullptr));
  auto gemm = engine::cuda::CublasLtGemm::Create({});
  CHECK_OK(gemm.status());
  engine::cuda::GemmArgs g;
  g.m = g.n = g.k = n;
  g.x = x;
  g.ldx = n;
  g.w = w;
  g.ldw = n;
  g.y = y;
  g.ldy = n;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    CHECK_OK((*gemm)->Matmul(g, nullptr));
    cudaEventRecord(e1);
    CHECK_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 2) t.push_back(ms * 1e-3);
  }
  gemm->reset();
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
  return 2.0 * n * n * double(n) / Median(t);
}

struct Seq {
  std::vector<int32_t> prompt;
  std::vector<int32_t> table;
  int computed = 0;   // tokens whose KV is in the cache
  int generated = 0;  // output tokens so far (the first comes from prefill)
  int32_t last = 0;   // the last sampled token
};

struct ThroughputResult {
  double seconds = 0;
  double prefill_step_seconds = 0;     // steps that carried prompt tokens
  double decode_step_seconds = 0;      // pure decode steps
  double decode_step_gpu_seconds = 0;  // their device time
  int steps = 0;
  int prefill_steps = 0;
  int decode_steps = 0;
  int64_t output_tokens = 0;
};

ThroughputResult RunThroughput(CudaBackend& b, const Args& a, int budget, uint64_t seed) {
  const int V = b.vocab_size();
  const int bs = b.kv_spec().block_size;
  const int blocks_per_seq = (a.prompt_len + a.gen_len + bs - 1) / bs;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(10, V - 10);
  std::vector<Seq> seqs(a.prompts);
  for (int i = 0; i < a.prompts; ++i) {
    seqs[i].prompt.resize(a.prompt_len);
    for (auto& t : seqs[i].prompt) t = tok(rng);
    for (int k = 0; k < blocks_per_seq; ++k) seqs[i].table.push_back(i * blocks_per_seq + k);
  }
  DeviceSampling greedy;  // temperature 0: argmax on the GPU
  ThroughputResult r;
  StepOutput out;
  const double t0 = Now();
  while (true) {
    StepPlan plan;
    std::vector<int> who;
    int left = budget;
    bool has_prefill = false;
    // Running sequences decode first.
    for (int i = 0; i < a.prompts; ++i) {
      Seq& s = seqs[i];
      if (s.computed < a.prompt_len || s.generated >= a.gen_len || left == 0) continue;
      SequenceChunk c;
      c.seq_id = i;
      c.start_pos = s.computed;
      c.token_ids = {s.last};
      c.block_tables = {s.table};
      c.sampling = greedy;
      plan.sequences.push_back(std::move(c));
      who.push_back(i);
      --left;
    }
    // Then prompts, in chunks, within the remaining budget.
    for (int i = 0; i < a.prompts && left > 0; ++i) {
      Seq& s = seqs[i];
      if (s.computed >= a.prompt_len) continue;
      const int n = std::min(left, a.prompt_len - s.computed);
      SequenceChunk c;
      c.seq_id = i;
      c.start_pos = s.computed;
      c.token_ids.assign(s.prompt.begin() + s.computed, s.prompt.begin() + s.computed + n);
      c.block_tables = {s.table};
      c.compute_logits = s.computed + n == a.prompt_len;
      if (c.compute_logits) c.sampling = greedy;
      plan.sequences.push_back(std::move(c));
      who.push_back(i);
      left -= n;
      has_prefill = true;
    }
    if (plan.sequences.empty()) break;
    const double s0 = Now();
    CHECK_OK(b.Forward(plan, &out));
    const double dt = Now() - s0;
    ++r.steps;
    (has_prefill ? r.prefill_step_seconds : r.decode_step_seconds) += dt;
    if (!has_prefill) r.decode_step_gpu_seconds += b.last_step_gpu_seconds();
    ++(has_prefill ? r.prefill_steps : r.decode_steps);
    for (size_t k = 0; k < plan.sequences.size(); ++k) {
      seqs[who[k]].computed += static_cast<int>(plan.sequences[k].token_ids.size());
    }
    for (size_t row = 0; row < out.rows.size(); ++row) {
      Seq& s = seqs[who[out.rows[row]]];
      s.last = out.sampled_token_ids[row];
      if (s.last < 0 || s.last >= V) {
        std::fprintf(stderr, "bad sampled token %d\n", s.last);
        std::exit(1);
      }
      ++s.generated;
      ++r.output_tokens;
    }
  }
  r.seconds = Now() - t0;
  return r;
}

}  // namespace
}  // namespace memshare::bench

int main(int argc, char** argv) {
  using namespace memshare::bench;  // NOLINT
  memshare::ParseFlags(argc, argv,
                       "CUDA backend benchmarks on R1-Distill-Qwen-7B shapes with dummy weights: "
                       "copy and GEMM ceilings, offline throughput, decode step, block distance. "
                       "Needs a GPU.");
  Args a;
  if (!ArgsFromFlags(&a)) return 2;
  Report report(a.json);
  cudaDeviceProp props;
  CHECK_CUDA(cudaGetDeviceProperties(&props, 0));
  const std::string card = props.name;

  const double bw = CopyBandwidth();
  const double rate = GemmRate();
  report.Add(absl::StrCat("{\"measure\":\"ceilings\",\"gpu\":\"", card,
                          "\",\"copy_gbs\":", bw / 1e9, ",\"gemm_tflops\":", rate / 1e12, "}"));

  CudaBackend::Options o;
  o.load_format = memshare::engine::model::LoadFormat::kDummy;
  o.config = R1DistillQwen7B();
  o.dummy.seed = 0;
  o.dummy.std = 0.02f;
  o.max_num_seqs = std::max(a.prompts, a.decode_batch);
  o.max_num_batched_tokens = *std::max_element(a.budgets.begin(), a.budgets.end());
  o.max_model_len = std::max({a.prompt_len + a.gen_len, a.decode_context + 1, a.max_model_len});
  o.gpu_memory_utilization = a.gpu_memory_utilization;
  o.skinny_gemm = a.skinny ? memshare::engine::cuda::SkinnyGemmMode::kWhenFaster
                           : memshare::engine::cuda::SkinnyGemmMode::kOff;
  if (a.skinny_preference >= 0) o.skinny_gemm_preference = a.skinny_preference;
  o.skinny_wide = a.skinny_wide;
  o.block_size = a.block_size;
  o.fuse_norms = a.fuse_norms;
  o.greedy_candidates = a.greedy_candidates;
  o.upload_by_kernel = a.upload_kernel;
  o.early_dependents = a.early_dependents;
  const double c0 = Now();
  auto backend = CudaBackend::Create(o);
  CHECK_OK(backend.status());
  CudaBackend& b = **backend;
  const double create_s = Now() - c0;
  report.Add(absl::StrCat("{\"measure\":\"create\",\"seconds\":", create_s,
                          ",\"weight_gib\":", b.weight_bytes() / double(1 << 30),
                          ",\"kv_pool_gib\":", b.kv_pool_bytes() / double(1 << 30),
                          ",\"num_blocks\":", b.kv_spec().num_blocks,
                          ",\"buckets\":", b.decode_buckets().size(), "}"));

  // Throughput per budget: untuned prefill GEMMs, then tuned for the
  // budget. The first run of each warms the GEMM plans of its step sizes.
  ThroughputResult best;
  best.seconds = 1e30;
  std::string best_label;
  for (int pass = a.tune_prefill == 2 ? 1 : 0; pass < (a.tune_prefill > 0 ? 2 : 1); ++pass) {
    for (int budget : a.budgets) {
      if (pass == 1) {
        const double t0 = Now();
        CHECK_OK(b.TuneForTokens(budget));
        report.Add(absl::StrCat("{\"measure\":\"tune_prefill\",\"tokens\":", budget,
                                ",\"seconds\":", Now() - t0, "}"));
      }
      std::vector<ThroughputResult> runs;
      for (int i = 0; i < a.repeats + 1; ++i) runs.push_back(RunThroughput(b, a, budget, 1 + i));
      runs.erase(runs.begin());
      std::sort(runs.begin(), runs.end(), [](const ThroughputResult& x, const ThroughputResult& y) {
        return x.seconds < y.seconds;
      });
      const std::string label = absl::StrCat("budget ", budget, pass == 1 ? ", prefill tuned" : "");
      for (const ThroughputResult& r : runs) {
        report.Add(absl::StrCat(
            "{\"measure\":\"throughput\",\"gpu\":\"", card, "\",\"config\":\"", label,
            "\",\"prompts\":", a.prompts, ",\"prompt_len\":", a.prompt_len, ",\"gen_len\":",
            a.gen_len, ",\"max_batched_tokens\":", budget, ",\"prefill_tuned\":", pass,
            ",\"seconds\":", r.seconds, ",\"output_tokens\":", r.output_tokens,
            ",\"output_tok_per_s\":", r.output_tokens / r.seconds, ",\"steps\":", r.steps,
            ",\"prefill_steps\":", r.prefill_steps, ",\"prefill_step_seconds\":",
            r.prefill_step_seconds, ",\"decode_steps\":", r.decode_steps,
            ",\"decode_step_seconds\":", r.decode_step_seconds,
            ",\"mean_decode_step_ms\":", 1e3 * r.decode_step_seconds / std::max(1, r.decode_steps),
            ",\"mean_decode_step_gpu_ms\":",
            1e3 * r.decode_step_gpu_seconds / std::max(1, r.decode_steps), "}"));
      }
      const ThroughputResult& med = runs[runs.size() / 2];
      // The same workload through the engine, each sampling mode.
      for (const std::string& mode : a.engine_modes) {
        std::vector<EngineResult> eruns;
        for (int i = 0; i < a.repeats + 1; ++i) {
          eruns.push_back(RunEngineThroughput(b, a.prompts, a.prompt_len, a.gen_len, budget,
                                              mode != "host", mode == "device", 1 + i));
        }
        eruns.erase(eruns.begin());
        std::sort(eruns.begin(), eruns.end(), [](const EngineResult& x, const EngineResult& y) {
          return x.seconds < y.seconds;
        });
        for (const EngineResult& r : eruns) {
          report.Add(absl::StrCat(
              "{\"measure\":\"engine_throughput\",\"gpu\":\"", card, "\",\"config\":\"", label,
              "\",\"sampling\":\"", mode, "\",\"prompts\":", a.prompts,
              ",\"prompt_len\":", a.prompt_len, ",\"gen_len\":", a.gen_len,
              ",\"max_batched_tokens\":", budget, ",\"prefill_tuned\":", pass,
              ",\"seconds\":", r.seconds, ",\"output_tokens\":", r.output_tokens,
              ",\"output_tok_per_s\":", r.output_tokens / r.seconds,
              ",\"direct_tok_per_s\":", med.output_tokens / med.seconds, ",\"ratio_to_direct\":",
              (r.output_tokens / r.seconds) / (med.output_tokens / med.seconds),
              ",\"device_sampled_tokens\":", r.device_sampled_tokens, ",\"steps\":", r.steps,
              ",\"decode_steps\":", r.decode_steps, ",\"schedule_seconds\":", r.schedule_seconds,
              ",\"prefill_forward_seconds\":", r.prefill_seconds,
              ",\"decode_forward_seconds\":", r.decode_seconds,
              ",\"sample_seconds\":", r.sample_seconds, ",\"mean_decode_forward_ms\":",
              1e3 * r.decode_seconds / std::max<int64_t>(1, r.decode_steps),
              ",\"mean_sample_ms\":", 1e3 * r.sample_seconds / std::max<int64_t>(1, r.steps), "}"));
        }
      }
      if (med.seconds < best.seconds) {
        best = med;
        best_label = label;
      }
    }
  }
  const ThroughputResult& med = best;

  // Decode step at batch B, context C, over random KV.
  CHECK_OK(b.FillKvPoolsForBenchmark(7, 1.0f));
  const int B = a.decode_batch;
  const int C = a.decode_context;
  const int bs = b.kv_spec().block_size;
  const int bps = (C + bs) / bs;
  double step_ms = 0;
  if (int64_t{B} * bps <= b.kv_spec().num_blocks) {
    StepPlan plan;
    std::mt19937 rng(9);
    std::uniform_int_distribution<int32_t> tok(10, b.vocab_size() - 10);
    for (int i = 0; i < B; ++i) {
      SequenceChunk c;
      c.seq_id = i;
      c.start_pos = C - 1;  // the step's token is the C-th key
      c.token_ids = {tok(rng)};
      std::vector<int32_t> t(bps);
      for (int k = 0; k < bps; ++k) t[k] = i * bps + k;
      c.block_tables = {t};
      c.sampling = DeviceSampling{};
      c.sampling->return_logits = i < a.decode_logits_rows;
      plan.sequences.push_back(std::move(c));
    }
    StepOutput out;
    std::vector<double> t, gpu;
    std::vector<double> prepare, submit, wait, finish;  // host phases
    for (int i = 0; i < 60; ++i) {
      const double s0 = Now();
      CHECK_OK(b.Forward(plan, &out));
      if (i >= 10) {
        t.push_back(Now() - s0);
        gpu.push_back(b.last_step_gpu_seconds());
        const CudaBackend::HostPhases& h = b.last_step_host_phases();
        prepare.push_back(h.prepare);
        submit.push_back(h.submit);
        wait.push_back(h.wait);
        finish.push_back(h.finish);
      }
    }
    step_ms = Median(t) * 1e3;
    // Pipelined (Backend::Submit / Collect): step i + 1, its tokens fed
    // from step i's on the device, is submitted before step i is collected,
    // so the device runs the steps back to back; a step's time is the
    // interval between two collects.
    StepPlan fed = plan;
    for (int i = 0; i < B; ++i) {
      fed.sequences[i].fed_row = i;
      fed.sequences[i].token_ids = {0};
    }
    std::vector<double> pt, pgpu;
    CHECK_OK(b.Submit(plan));
    double last = Now();
    for (int i = 0; i < 60; ++i) {
      CHECK_OK(b.Submit(fed));
      CHECK_OK(b.Collect(&out));
      const double now = Now();
      if (i >= 10) {
        pt.push_back(now - last);
        pgpu.push_back(b.last_step_gpu_seconds());
      }
      last = now;
    }
    CHECK_OK(b.Collect(&out));
    const double pipelined_ms = Median(pt) * 1e3;
    // The graph alone, replayed back to back: what the step costs without
    // its upload, sampling and host work.
    double replay_ms = 0;
    if (absl::StatusOr<double> r = b.TimeGraphReplayForBenchmark(B, 20); r.ok()) {
      replay_ms = *r * 1e3;
    }
    if (a.profile_decode_steps > 0) {
      CHECK_CUDA(cudaProfilerStart());
      for (int i = 0; i < a.profile_decode_steps; ++i) CHECK_OK(b.Forward(plan, &out));
      CHECK_CUDA(cudaProfilerStop());
    }
    const auto& c = *o.config;
    const double weight_bytes =
        2.0 *
        (c.num_layers * (c.hidden_size * (c.q_dim() + 2 * c.kv_dim()) + c.q_dim() * c.hidden_size +
                         3.0 * c.hidden_size * c.intermediate_size) +
         double(c.vocab_size) * c.hidden_size);
    const double kv_bytes = double(B) * C * c.num_layers * 2 * c.kv_dim() * 2;
    const double floor_ms = (weight_bytes + kv_bytes) / bw * 1e3;
    report.Add(absl::StrCat(
        "{\"measure\":\"decode_step\",\"gpu\":\"", card, "\",\"batch\":", B, ",\"context\":", C,
        ",\"logits_rows\":", std::min(B, a.decode_logits_rows),
        ",\"max_model_len\":", b.max_model_len(), ",\"median_ms\":", step_ms, ",\"min_ms\":",
        *std::min_element(t.begin(), t.end()) * 1e3, ",\"median_gpu_ms\":", Median(gpu) * 1e3,
        ",\"graph_replay_ms\":", replay_ms, ",\"host_prepare_us\":", Median(prepare) * 1e6,
        ",\"host_submit_us\":", Median(submit) * 1e6, ",\"host_wait_us\":", Median(wait) * 1e6,
        ",\"host_finish_us\":", Median(finish) * 1e6, ",\"floor_ms\":", floor_ms,
        ",\"ratio_to_floor\":", step_ms / floor_ms, ",\"pipelined_ms\":", pipelined_ms,
        ",\"pipelined_gpu_ms\":", Median(pgpu) * 1e3, ",\"pipelined_ratio_to_floor\":",
        pipelined_ms / floor_ms, ",\"weight_gb\":", weight_bytes / 1e9,
        ",\"kv_gb\":", kv_bytes / 1e9, ",\"graph_steps\":", b.graph_steps(),
        ",\"greedy_candidate_steps\":", b.greedy_candidate_steps(), ",\"gemms\":\"",
        b.GemmChoices(B), "\"}"));
    std::printf("decode step GEMMs at %d tokens: %s\n", B, b.GemmChoices(B).c_str());
    std::printf("decode step ms: wall %.3f, GPU %.3f, graph replayed alone %.3f\n", step_ms,
                Median(gpu) * 1e3, replay_ms);
    std::printf("decode step ms, pipelined (fed tokens): wall %.3f, GPU %.3f; floor %.3f\n",
                pipelined_ms, Median(pgpu) * 1e3, floor_ms);
    std::printf(
        "decode step host us (medians): prepare %.1f, submit %.1f, wait %.1f, finish %.1f\n",
        Median(prepare) * 1e6, Median(submit) * 1e6, Median(wait) * 1e6, Median(finish) * 1e6);
  }

  // Block distance: calls of N random distinct pairs.
  {
    const int nb = b.kv_spec().num_blocks;
    std::mt19937 rng(17);
    std::vector<int32_t> ids(nb);
    for (int i = 0; i < nb; ++i) ids[i] = i;
    for (int n : {1, 8, 32, 128, 512, 2048}) {
      if (2 * n > nb) break;
      std::vector<double> t;
      for (int rep = 0; rep < 15; ++rep) {
        std::shuffle(ids.begin(), ids.end(), rng);
        std::vector<memshare::kvmanager::BlockPair> pairs(n);
        for (int i = 0; i < n; ++i) pairs[i] = {ids[2 * i], ids[2 * i + 1]};
        std::vector<memshare::kvmanager::DistanceSums> sums(n);
        const double s0 = Now();
        CHECK_OK(b.ComputeDistanceSums(0, pairs, absl::MakeSpan(sums)));
        if (rep >= 3) t.push_back(Now() - s0);
      }
      const double call_us = Median(t) * 1e6;
      report.Add(absl::StrCat(
          "{\"measure\":\"distance\",\"pairs\":", n, ",\"call_us\":", call_us,
          ",\"us_per_pair\":", call_us / n, ",\"block_bytes\":", b.kv_spec().BlockBytes(0),
          ",\"share_of_decode_step\":", step_ms > 0 ? call_us / (step_ms * 1e3) : 0, "}"));
    }
  }

  std::printf("\n%-34s %12s\n", "figure", "value");
  std::printf("%-34s %12.0f\n", "copy GB/s", bw / 1e9);
  std::printf("%-34s %12.0f\n", "GEMM TFLOP/s", rate / 1e12);
  std::printf("%-34s %12s\n", "best throughput config", best_label.c_str());
  std::printf("%-34s %12.3f\n", "throughput seconds (median)", med.seconds);
  std::printf("%-34s %12.0f\n", "output tok/s (median)", med.output_tokens / med.seconds);
  std::printf("%-34s %12.3f\n", "  of which prefill-step seconds", med.prefill_step_seconds);
  std::printf("%-34s %12.3f\n", "  mean pure decode step ms",
              1e3 * med.decode_step_seconds / std::max(1, med.decode_steps));
  std::printf("%-34s %12.3f\n", "decode step ms (batch x ctx)", step_ms);
  return 0;
}
