// The shape of a decoder-only transformer as a Hugging Face `config.json`
// describes it (DESIGN.md §5). Supported architectures:
//   LlamaForCausalLM, MistralForCausalLM   (kLlama)
//   Qwen2ForCausalLM                        (kQwen2: bias on q, k and v)
//   Qwen3ForCausalLM                        (kQwen3: RMSNorm of q and k per head)
// All of them: RMSNorm, rotary position embedding of the whole head
// (rotate-half convention), SwiGLU MLP, grouped-query attention.
//
// Both ways transformers writes the rotary parameters are read: the older
// top-level `rope_theta` + `rope_scaling` ({"type"|"rope_type": ...}) and the
// newer `rope_parameters` ({"rope_type", "rope_theta", ...}, transformers 5).
// Rope types: default and llama3.
//
// A plain value type; thread-compatible.
#ifndef MEMSHARE_ENGINE_MODEL_MODEL_CONFIG_H_
#define MEMSHARE_ENGINE_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memshare::engine::model {

enum class Architecture { kLlama, kQwen2, kQwen3 };

struct RopeScaling {
  enum class Type { kNone, kLlama3 };
  Type type = Type::kNone;
  // llama3: frequencies with wavelength above original / low_freq_factor are
  // divided by `factor`, those under original / high_freq_factor are kept,
  // the band between is interpolated.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as written in config.json
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // `head_dim`, else hidden_size / num_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2
  bool qk_norm = false;   // Qwen3
  // Attention looks back at most this many positions (Mistral); 0: no
  // window. Backends that attend to the whole context reject sequences
  // longer than this.
  int64_t sliding_window = 0;

  // Parses the text of a config.json; `source` (a path) names the file in
  // errors. INVALID_ARGUMENT for malformed JSON, a missing or mistyped
  // field or inconsistent sizes; UNIMPLEMENTED for an architecture, rope
  // type or activation this project does not run.
  static absl::StatusOr<ModelConfig> FromJson(absl::string_view json_text,
                                              absl::string_view source = "config.json");
  // Reads `dir`/config.json.
  static absl::StatusOr<ModelConfig> FromModelDir(const std::string& dir);

  // The checks FromJson runs, for configs built in code (dummy weights).
  absl::Status Validate() const;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }

  // Inverse frequencies of the rotary embedding, head_dim / 2 of them,
  // computed in float32 as transformers computes them (rope scaling
  // applied): angle of pair i at position p = p * inv_freq[i].
  std::vector<float> RopeInvFreq() const;
};

absl::string_view ArchitectureName(Architecture a);

}  // namespace memshare::engine::model

#endif  // MEMSHARE_ENGINE_MODEL_MODEL_CONFIG_H_
