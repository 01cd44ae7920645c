// The weights of one tensor-parallel rank of a model, in float32 host memory,
// in the layout the CPU backend computes with: Q, K and V projections fused
// into one matrix, gate and up fused into another (one matrix product each).
//
// Loaded from a checkpoint (SafetensorsReader, any of F32/F16/BF16, shapes
// checked against the config) or made up (`--load-format dummy`: normal
// random values of a given std, norms 1, for benchmarks of models that cannot
// be downloaded here). Dummy values are a function of (seed, tensor name,
// element index in the whole tensor), so every rank of a tensor-parallel
// group draws its slice of the same model.
//
// Immutable after creation: thread-safe.
#ifndef MEMSHARE_ENGINE_MODEL_MODEL_WEIGHTS_H_
#define MEMSHARE_ENGINE_MODEL_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors_reader.h"
#include "engine/model/weight_spec.h"

namespace memshare::engine::model {

enum class LoadFormat {
  kSafetensors,  // the checkpoint's *.safetensors
  kDummy,        // random weights of the config's shape
};

// "auto" and "safetensors" -> kSafetensors, "dummy" -> kDummy.
absl::StatusOr<LoadFormat> ParseLoadFormat(absl::string_view s);

// One layer; every matrix row-major [rows][cols].
struct LayerWeights {
  std::vector<float> input_norm;           // [hidden]
  std::vector<float> qkv;                  // [q_local + 2 * kv_local][hidden]: Q, K, V rows
  std::vector<float> qkv_bias;             // [q_local + 2 * kv_local], empty without bias
  std::vector<float> q_norm;               // [head_dim], empty without q/k norm
  std::vector<float> k_norm;               // [head_dim], empty without q/k norm
  std::vector<float> o_proj;               // [hidden][q_local]
  std::vector<float> post_attention_norm;  // [hidden]
  std::vector<float> gate_up;              // [2 * inter_local][hidden]: gate rows, then up rows
  std::vector<float> down;                 // [hidden][inter_local]
};

class ModelWeights {
 public:
  struct DummyOptions {
    uint64_t seed = 0;  // same seed, same model
    float std = 0.02f;  // of every matrix and bias element
  };

  // Errors name the tensor and the file: NOT_FOUND for a missing tensor,
  // INVALID_ARGUMENT for a wrong shape or dtype; RESOURCE_EXHAUSTED when
  // the float32 weights would not fit in this machine's memory.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const ModelConfig& config,
                                                            const SafetensorsReader& reader,
                                                            TensorParallel tp = {});
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Dummy(const ModelConfig& config,
                                                             const DummyOptions& options,
                                                             TensorParallel tp = {});

  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  const ModelConfig& config() const { return config_; }
  TensorParallel tp() const { return tp_; }
  int64_t heads_local() const { return config_.num_heads / tp_.size; }
  int64_t kv_heads_local() const { return config_.num_kv_heads / tp_.size; }
  int64_t intermediate_local() const { return config_.intermediate_size / tp_.size; }
  // Rows [vocab_begin, vocab_end) of the embedding and the LM head.
  int64_t vocab_begin() const { return vocab_begin_; }
  int64_t vocab_end() const { return vocab_end_; }

  const std::vector<float>& embedding() const { return embedding_; }  // [vocab_local][hidden]
  const std::vector<float>& lm_head() const {                         // [vocab_local][hidden]
    return config_.tie_word_embeddings ? embedding_ : lm_head_;
  }
  const std::vector<float>& final_norm() const { return final_norm_; }  // [hidden]
  const LayerWeights& layer(int64_t l) const { return layers_[l]; }

 private:
  ModelWeights(const ModelConfig& config, TensorParallel tp) : config_(config), tp_(tp) {}

  // Sizes every buffer; returns, per spec, where its local slice goes.
  absl::StatusOr<std::vector<float*>> Allocate(const std::vector<WeightSpec>& specs);

  const ModelConfig config_;
  const TensorParallel tp_;
  int64_t vocab_begin_ = 0;
  int64_t vocab_end_ = 0;
  std::vector<float> embedding_;
  std::vector<float> lm_head_;  // empty when tied
  std::vector<float> final_norm_;
  std::vector<LayerWeights> layers_;
};

}  // namespace memshare::engine::model

#endif  // MEMSHARE_ENGINE_MODEL_MODEL_WEIGHTS_H_
