// The reference backend (DESIGN.md §5): the whole forward pass of a Llama,
// Mistral, Qwen2 or Qwen3 model on the CPU, float32 arithmetic, bf16 paged
// KV storage, over every sequence of a StepPlan at once (prefill chunks and
// decode tokens in one step). Runs the small bundled model on machines
// without a GPU and is the oracle the CUDA backend is compared with.
//
// KV store: one pool per layer group, in this process's memory, laid out as
// backend.h says; zero-filled at creation. K is stored after its bias and
// (Qwen3) its RMSNorm but before RoPE; attention rotates every key for its
// logical position as it reads it, so one physical block may back several
// logical blocks at different positions.
//
// Per step: embedding -> per layer [RMSNorm, QKV (+bias), q/k RMSNorm, write
// K and V of every token, attention of every token over its sequence's
// block table (causal, GQA), O projection, residual, RMSNorm, SwiGLU MLP,
// residual] -> final RMSNorm and LM head for the rows that ask for logits.
// Matrix products are split over output rows, attention over (token, head),
// on `num_threads` threads. A token's results do not depend on the rest of
// the step (kernels.h).
//
// Tensor parallelism: the weights may be a shard (ModelWeights), but this
// backend runs world size 1 only.
//
// Thread-compatible (backend.h): one caller at a time.
#ifndef MEMSHARE_ENGINE_CPU_CPU_BACKEND_H_
#define MEMSHARE_ENGINE_CPU_CPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bf16.h"
#include "engine/backend.h"
#include "engine/cpu/thread_pool.h"
#include "engine/model/model_config.h"
#include "engine/model/model_weights.h"

namespace memshare::engine::cpu {

class CpuBackend : public Backend {
 public:
  struct Options {
    // Hugging Face model directory (config.json, *.safetensors). With
    // load_format kDummy it gives the config unless `config` is set.
    std::string model_dir;
    // kSafetensors: the directory's weights; kDummy: random weights.
    model::LoadFormat load_format = model::LoadFormat::kSafetensors;
    // The model's shape for kDummy without a model_dir.
    std::optional<model::ModelConfig> config;
    // kDummy only: seed and std of the random weights.
    model::ModelWeights::DummyOptions dummy;
    // Physical KV blocks per layer group.
    int32_t num_blocks = 256;
    // Tokens per block.
    int32_t block_size = 16;
    // Contiguous layer ranges with their own block tables (SplitLayers).
    int32_t num_layer_groups = 1;
    // Threads that compute a step, the caller's included.
    int32_t num_threads = 2;
  };

  // INVALID_ARGUMENT for bad options; the loader's errors (naming file and
  // tensor) for a bad checkpoint; RESOURCE_EXHAUSTED when weights or pools
  // would not fit in memory.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const Options& options);
  // With weights already loaded (several backends of one model share them);
  // options.model_dir, load_format, config and dummy are ignored.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(
      std::shared_ptr<const model::ModelWeights> weights, const Options& options);

  CpuBackend(const CpuBackend&) = delete;
  CpuBackend& operator=(const CpuBackend&) = delete;

  const KvCacheSpec& kv_spec() const override { return spec_; }
  int32_t vocab_size() const override { return static_cast<int32_t>(config().vocab_size); }
  bool SupportsShiftedViews() const override { return true; }
  const model::ModelConfig& config() const { return weights_->config(); }

  // Backend. Reads MemShare shifted views (SequenceChunk::block_tables_hi,
  // block_shifts) through their windows. INVALID_ARGUMENT (nothing written)
  // also for: an empty chunk, a position at or past max_position_embeddings
  // (or past a Mistral sliding_window, which this backend does not
  // implement), two tokens of the step that would write the same KV slot,
  // view arrays of the wrong size, a shift outside [0, block_size), and a
  // token whose slot is in a view.
  absl::Status Forward(const StepPlan& plan, StepOutput* output) override;
  absl::Status CopyBlocks(int layer_group,
                          absl::Span<const std::pair<int32_t, int32_t>> src_dst) override;

  // kvmanager::BlockDistance: sums in double over the group's layers, K and
  // V separately; a shifted reference is read as its window.
  absl::Status ComputeDistanceSums(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override;

 private:
  struct Step;  // per-step scratch, in cpu_backend.cc

  CpuBackend(std::shared_ptr<const model::ModelWeights> weights, const Options& options,
             KvCacheSpec spec);

  absl::Status Validate(const StepPlan& plan) const;
  // Index of element (0, 0) of (block, layer in group, K or V, kv head) in
  // the pool of its group.
  int64_t SlabOffset(int group, int64_t block, int64_t layer_in_group, int kv, int64_t head) const;
  void EnsureRope(int64_t positions);
  void RunLayer(int64_t layer, Step& step);
  void Attention(int64_t layer, Step& step);

  const std::shared_ptr<const model::ModelWeights> weights_;
  const KvCacheSpec spec_;
  std::vector<int32_t> group_of_layer_;
  std::vector<std::vector<Bf16>> pools_;  // per layer group
  std::vector<float> inv_freq_;           // [head_dim / 2]
  // cos and sin of position p * inv_freq[i] at [p][i], for p < rope_positions_.
  std::vector<float> rope_cos_;
  std::vector<float> rope_sin_;
  int64_t rope_positions_ = 0;
  ThreadPool pool_;
};

}  // namespace memshare::engine::cpu

#endif  // MEMSHARE_ENGINE_CPU_CPU_BACKEND_H_
