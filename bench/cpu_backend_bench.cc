// Decode throughput of the CPU backend: every iteration is one step that
// decodes one token for each of `batch` sequences, whose context cycles
// through positions [kPrompt, kPrompt + kWindow) (rewinding overwrites the
// same slots, so the context length stays in that range).
//
//   bazel run -c opt //bench:cpu_backend_bench
//
// items_per_second is generated tokens per second (wall clock).
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/cpu/cpu_backend.h"

namespace memshare::engine::cpu {
namespace {

constexpr int kPrompt = 32;
constexpr int kWindow = 64;
constexpr int kBlockSize = 16;

std::string GoldenDir(const std::string& name) {
  const std::string rel = "tests/data/golden/" + name;
  if (const char* runfiles = std::getenv("RUNFILES_DIR")) {
    return std::string(runfiles) + "/memshare/" + rel;
  }
  return rel;
}

// A Llama-shaped dummy model of ~45M parameters (float32: 180 MB).
model::ModelConfig MidConfig() {
  model::ModelConfig c;
  c.architecture = model::Architecture::kLlama;
  c.architecture_name = "LlamaForCausalLM";
  c.vocab_size = 32000;
  c.hidden_size = 512;
  c.intermediate_size = 1536;
  c.num_layers = 8;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.max_position_embeddings = 1024;
  return c;
}

void Decode(benchmark::State& state, std::unique_ptr<CpuBackend> b) {
  if (b == nullptr) {
    state.SkipWithError("backend creation failed");
    return;
  }
  const int batch = static_cast<int>(state.range(0));
  const int blocks_per_seq = (kPrompt + kWindow + kBlockSize - 1) / kBlockSize;
  StepPlan prefill;
  std::vector<std::vector<std::vector<int32_t>>> tables(batch);
  for (int s = 0; s < batch; ++s) {
    tables[s].resize(1);
    for (int i = 0; i < blocks_per_seq; ++i) tables[s][0].push_back(s * blocks_per_seq + i);
    SequenceChunk c;
    c.seq_id = s;
    c.start_pos = 0;
    for (int t = 0; t < kPrompt; ++t) c.token_ids.push_back((s * 131 + t * 17) % 500);
    c.block_tables = tables[s];
    prefill.sequences.push_back(std::move(c));
  }
  StepOutput out;
  if (!b->Forward(prefill, &out).ok()) {
    state.SkipWithError("prefill failed");
    return;
  }
  int step = 0;
  for (auto _ : state) {
    StepPlan plan;
    for (int s = 0; s < batch; ++s) {
      SequenceChunk c;
      c.seq_id = s;
      c.start_pos = kPrompt + step % kWindow;
      c.token_ids = {(s + step * 7) % 500};
      c.block_tables = tables[s];
      plan.sequences.push_back(std::move(c));
    }
    if (!b->Forward(plan, &out).ok()) {
      state.SkipWithError("decode failed");
      return;
    }
    benchmark::DoNotOptimize(out.logits.data());
    ++step;
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

std::unique_ptr<CpuBackend> Make(CpuBackend::Options o, int batch, int threads) {
  o.num_blocks = batch * ((kPrompt + kWindow + kBlockSize - 1) / kBlockSize);
  o.block_size = kBlockSize;
  o.num_threads = threads;
  absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(o);
  return b.ok() ? *std::move(b) : nullptr;
}

void BM_DecodeGoldenMistral(benchmark::State& state) {
  CpuBackend::Options o;
  o.model_dir = GoldenDir("mistral_mha");  // the smallest golden checkpoint, 148k parameters
  Decode(state, Make(o, static_cast<int>(state.range(0)), static_cast<int>(state.range(1))));
}
BENCHMARK(BM_DecodeGoldenMistral)
    ->ArgNames({"batch", "threads"})
    ->Args({1, 1})
    ->Args({1, 2})
    ->Args({8, 1})
    ->Args({8, 2})
    ->UseRealTime();

void BM_DecodeDummy45M(benchmark::State& state) {
  CpuBackend::Options o;
  o.load_format = model::LoadFormat::kDummy;
  o.config = MidConfig();
  Decode(state, Make(o, static_cast<int>(state.range(0)), static_cast<int>(state.range(1))));
}
BENCHMARK(BM_DecodeDummy45M)
    ->ArgNames({"batch", "threads"})
    ->Args({1, 1})
    ->Args({1, 2})
    ->Args({8, 1})
    ->Args({8, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace memshare::engine::cpu
