// Which tensors a model reads from its checkpoint, under which Hugging Face
// names, with which shapes, and which part of each one tensor-parallel rank
// holds (DESIGN.md §5: column-parallel QKV/gate/up, row-parallel O/down,
// vocab-parallel embedding and LM head, KV heads split across ranks).
// Shared by every backend: the CPU backend loads these in float32, the CUDA
// backend in bf16.
#ifndef MEMSHARE_ENGINE_MODEL_WEIGHT_SPEC_H_
#define MEMSHARE_ENGINE_MODEL_WEIGHT_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"

namespace memshare::engine::model {

enum class WeightRole {
  kEmbedding,          // [vocab, hidden]
  kFinalNorm,          // [hidden]
  kLmHead,             // [vocab, hidden]; absent with tied embeddings
  kInputNorm,          // [hidden]
  kQProj,              // [heads * head_dim, hidden]
  kKProj,              // [kv_heads * head_dim, hidden]
  kVProj,              // [kv_heads * head_dim, hidden]
  kQBias,              // [heads * head_dim]        Qwen2
  kKBias,              // [kv_heads * head_dim]     Qwen2
  kVBias,              // [kv_heads * head_dim]     Qwen2
  kQNorm,              // [head_dim]                Qwen3
  kKNorm,              // [head_dim]                Qwen3
  kOProj,              // [hidden, heads * head_dim]
  kPostAttentionNorm,  // [hidden]
  kGateProj,           // [intermediate, hidden]
  kUpProj,             // [intermediate, hidden]
  kDownProj,           // [hidden, intermediate]
};

struct TensorParallel {
  int32_t rank = 0;
  int32_t size = 1;
};

// The KV heads of one rank: [first, first + count). With size dividing
// num_kv_heads each rank holds num_kv_heads / size of them; with fewer KV
// heads than ranks (size a multiple of num_kv_heads) each rank holds one,
// the KV head of its query heads, replicated on size / num_kv_heads ranks.
struct KvHeadRange {
  int64_t first = 0;
  int64_t count = 0;
};
KvHeadRange LocalKvHeads(const ModelConfig& config, TensorParallel tp);

// The vocabulary rows of the embedding and the LM head one rank holds:
// [begin, end), chunks of `chunk` = ceil(vocab / size) rows (the last one
// may be shorter).
struct VocabRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t chunk = 0;
};
VocabRange LocalVocab(const ModelConfig& config, TensorParallel tp);

struct WeightSpec {
  WeightRole role = WeightRole::kEmbedding;
  int32_t layer = -1;          // -1 for the model-level tensors
  std::string name;            // e.g. "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // of the whole tensor in the checkpoint
  // This rank's part: indices [begin, end) of dimension `split_dim`;
  // split_dim -1 means the whole tensor.
  int split_dim = -1;
  int64_t begin = 0;
  int64_t end = 0;

  std::vector<int64_t> LocalShape() const;
  int64_t LocalElements() const;
};

// Every tensor the model reads, model-level first, then layer by layer, in
// the order of WeightRole. UNIMPLEMENTED when the query heads or the
// intermediate size do not split evenly over `tp.size` ranks, or the KV
// heads neither split evenly nor replicate evenly (LocalKvHeads);
// INVALID_ARGUMENT for a bad rank.
absl::StatusOr<std::vector<WeightSpec>> ListWeights(const ModelConfig& config,
                                                    TensorParallel tp = {});

}  // namespace memshare::engine::model

#endif  // MEMSHARE_ENGINE_MODEL_WEIGHT_SPEC_H_
