#include "engine/model/model_config.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace memshare::engine::model {
namespace {

using Json = nlohmann::json;

// Sizes above this are not a model this project runs; the bound keeps every
// product of two sizes well inside int64.
constexpr int64_t kMaxDim = int64_t{1} << 24;
// Far above any real model (Llama 3.1 405B has 126); bounds the per-layer
// bookkeeping a bad config could make the loader allocate.
constexpr int64_t kMaxLayers = 4096;

struct ArchitectureEntry {
  absl::string_view name;
  absl::string_view model_type;
  Architecture architecture;
};
constexpr ArchitectureEntry kArchitectures[] = {
    {"LlamaForCausalLM", "llama", Architecture::kLlama},
    {"MistralForCausalLM", "mistral", Architecture::kLlama},
    {"Qwen2ForCausalLM", "qwen2", Architecture::kQwen2},
    {"Qwen3ForCausalLM", "qwen3", Architecture::kQwen3},
};

std::string Supported() {
  std::vector<std::string> names;
  for (const auto& e : kArchitectures) names.emplace_back(e.name);
  return absl::StrJoin(names, ", ");
}

// Field readers: JSON of the wrong type is an error naming the field, never
// an exception.
class Reader {
 public:
  Reader(const Json& obj, absl::string_view source, std::string prefix = "")
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  bool Has(const char* key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }

  absl::Status Error(const char* key, absl::string_view what) const {
    const std::string got = obj_.contains(key) ? obj_.at(key).dump() : "nothing";
    return absl::InvalidArgumentError(absl::StrCat(
        source_, ": field '", prefix_, key, "': expected ", what, ", got ", got.substr(0, 80)));
  }

  absl::Status Int(const char* key, int64_t* out, bool required) const {
    if (!Has(key)) return required ? Error(key, "an integer") : absl::OkStatus();
    const Json& v = obj_.at(key);
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return absl::OkStatus();
    }
    // 4096.0 is written by some tools; accept integral floats.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9e15) {
        *out = static_cast<int64_t>(d);
        return absl::OkStatus();
      }
    }
    return Error(key, "an integer");
  }

  absl::Status Double(const char* key, double* out, bool required) const {
    if (!Has(key)) return required ? Error(key, "a number") : absl::OkStatus();
    const Json& v = obj_.at(key);
    if (!v.is_number() || !std::isfinite(v.get<double>())) return Error(key, "a number");
    *out = v.get<double>();
    return absl::OkStatus();
  }

  absl::Status Bool(const char* key, bool* out) const {
    if (!Has(key)) return absl::OkStatus();
    const Json& v = obj_.at(key);
    if (!v.is_boolean()) return Error(key, "true or false");
    *out = v.get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const char* key, std::string* out) const {
    if (!Has(key)) return absl::OkStatus();
    const Json& v = obj_.at(key);
    if (!v.is_string()) return Error(key, "a string");
    *out = v.get<std::string>();
    return absl::OkStatus();
  }

 private:
  const Json& obj_;
  absl::string_view source_;
  std::string prefix_;
};

#define MS_RETURN_IF_ERROR(expr) \
  do {                           \
    absl::Status _st = (expr);   \
    if (!_st.ok()) return _st;   \
  } while (0)

absl::Status ParseArchitecture(const Json& j, absl::string_view source, ModelConfig* c) {
  std::vector<std::string> named;
  if (j.contains("architectures") && !j.at("architectures").is_null()) {
    const Json& a = j.at("architectures");
    if (!a.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field 'architectures': expected a list of strings"));
    }
    for (const Json& e : a) {
      if (!e.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": field 'architectures': expected a list of strings"));
      }
      named.push_back(e.get<std::string>());
    }
  }
  for (const std::string& n : named) {
    for (const auto& e : kArchitectures) {
      if (n == e.name) {
        c->architecture = e.architecture;
        c->architecture_name = n;
        return absl::OkStatus();
      }
    }
  }
  if (!named.empty()) {
    return absl::UnimplementedError(absl::StrCat(source, ": unsupported architecture \"",
                                                 absl::StrJoin(named, ", "),
                                                 "\"; supported: ", Supported()));
  }
  // No `architectures`: fall back on model_type.
  std::string model_type;
  MS_RETURN_IF_ERROR(Reader(j, source).String("model_type", &model_type));
  for (const auto& e : kArchitectures) {
    if (model_type == e.model_type) {
      c->architecture = e.architecture;
      c->architecture_name = std::string(e.name);
      return absl::OkStatus();
    }
  }
  return absl::UnimplementedError(
      absl::StrCat(source, ": unsupported architecture (no 'architectures', model_type \"",
                   model_type, "\"); supported: ", Supported()));
}

absl::Status ParseRopeType(const Json& params, absl::string_view source, const char* field,
                           ModelConfig* c) {
  Reader r(params, source, absl::StrCat(field, "."));
  std::string type = "default";
  if (params.contains("rope_type")) {
    MS_RETURN_IF_ERROR(r.String("rope_type", &type));
  } else if (params.contains("type")) {
    MS_RETURN_IF_ERROR(r.String("type", &type));
  }
  double partial = 1.0;
  MS_RETURN_IF_ERROR(r.Double("partial_rotary_factor", &partial, false));
  if (partial != 1.0) {
    return absl::UnimplementedError(
        absl::StrCat(source, ": field '", field, ".partial_rotary_factor' = ", partial,
                     ": only rotary embedding of the whole head is supported"));
  }
  if (type == "default") {
    c->rope_scaling = RopeScaling{};
    return absl::OkStatus();
  }
  if (type == "llama3") {
    RopeScaling s;
    s.type = RopeScaling::Type::kLlama3;
    MS_RETURN_IF_ERROR(r.Double("factor", &s.factor, true));
    MS_RETURN_IF_ERROR(r.Double("low_freq_factor", &s.low_freq_factor, true));
    MS_RETURN_IF_ERROR(r.Double("high_freq_factor", &s.high_freq_factor, true));
    MS_RETURN_IF_ERROR(
        r.Int("original_max_position_embeddings", &s.original_max_position_embeddings, true));
    c->rope_scaling = s;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(source, ": field '", field, "': rope type \"", type,
                                               "\" is not supported (default, llama3)"));
}

absl::Status ParseRope(const Json& j, absl::string_view source, ModelConfig* c) {
  Reader top(j, source);
  MS_RETURN_IF_ERROR(top.Double("rope_theta", &c->rope_theta, false));
  if (top.Has("rope_parameters")) {
    const Json& p = j.at("rope_parameters");
    if (!p.is_object()) return top.Error("rope_parameters", "an object");
    // One set of parameters per layer type (Gemma-style) is not a model we run.
    if (!p.contains("rope_type") && !p.contains("rope_theta") && !p.empty() &&
        p.begin()->is_object()) {
      return absl::UnimplementedError(absl::StrCat(
          source, ": field 'rope_parameters': per-layer-type rotary parameters are not supported"));
    }
    MS_RETURN_IF_ERROR(
        Reader(p, source, "rope_parameters.").Double("rope_theta", &c->rope_theta, false));
    return ParseRopeType(p, source, "rope_parameters", c);
  }
  if (top.Has("rope_scaling")) {
    const Json& s = j.at("rope_scaling");
    if (!s.is_object()) return top.Error("rope_scaling", "an object or null");
    return ParseRopeType(s, source, "rope_scaling", c);
  }
  return absl::OkStatus();
}

absl::Status Positive(absl::string_view source, const char* name, int64_t v,
                      int64_t max = kMaxDim) {
  if (v <= 0 || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field '", name, "' = ", v, ": expected 1 .. ", max));
  }
  return absl::OkStatus();
}

absl::Status ValidateImpl(const ModelConfig& c, absl::string_view source) {
  MS_RETURN_IF_ERROR(Positive(source, "vocab_size", c.vocab_size));
  MS_RETURN_IF_ERROR(Positive(source, "hidden_size", c.hidden_size));
  MS_RETURN_IF_ERROR(Positive(source, "intermediate_size", c.intermediate_size));
  MS_RETURN_IF_ERROR(Positive(source, "num_hidden_layers", c.num_layers, kMaxLayers));
  MS_RETURN_IF_ERROR(Positive(source, "num_attention_heads", c.num_heads));
  MS_RETURN_IF_ERROR(Positive(source, "num_key_value_heads", c.num_kv_heads));
  MS_RETURN_IF_ERROR(Positive(source, "head_dim", c.head_dim));
  MS_RETURN_IF_ERROR(Positive(source, "max_position_embeddings", c.max_position_embeddings));
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": num_attention_heads (", c.num_heads,
                                                   ") is not a multiple of num_key_value_heads (",
                                                   c.num_kv_heads, ")"));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'head_dim' = ", c.head_dim, ": must be even (rotary)"));
  }
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'rms_norm_eps' = ", c.rms_norm_eps, ": must be > 0"));
  }
  if (!(c.rope_theta > 1) || !std::isfinite(c.rope_theta)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'rope_theta' = ", c.rope_theta, ": must be > 1"));
  }
  if (c.sliding_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'sliding_window' = ", c.sliding_window));
  }
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    const RopeScaling& s = c.rope_scaling;
    if (!(s.factor >= 1) || !(s.low_freq_factor > 0) || !(s.high_freq_factor > s.low_freq_factor) ||
        s.original_max_position_embeddings <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          source,
          ": llama3 rope scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor "
          "and original_max_position_embeddings > 0; got factor ",
          s.factor, ", low_freq_factor ", s.low_freq_factor, ", high_freq_factor ",
          s.high_freq_factor, ", original_max_position_embeddings ",
          s.original_max_position_embeddings));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kQwen3:
      return "qwen3";
  }
  return "unknown";
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(absl::string_view json_text,
                                                  absl::string_view source) {
  Json j = Json::parse(json_text.begin(), json_text.end(), /*cb=*/nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  ModelConfig c;
  MS_RETURN_IF_ERROR(ParseArchitecture(j, source, &c));
  Reader r(j, source);
  MS_RETURN_IF_ERROR(r.Int("vocab_size", &c.vocab_size, true));
  MS_RETURN_IF_ERROR(r.Int("hidden_size", &c.hidden_size, true));
  MS_RETURN_IF_ERROR(r.Int("intermediate_size", &c.intermediate_size, true));
  MS_RETURN_IF_ERROR(r.Int("num_hidden_layers", &c.num_layers, true));
  MS_RETURN_IF_ERROR(r.Int("num_attention_heads", &c.num_heads, true));
  MS_RETURN_IF_ERROR(Positive(source, "num_attention_heads", c.num_heads));
  MS_RETURN_IF_ERROR(Positive(source, "hidden_size", c.hidden_size));
  c.num_kv_heads = c.num_heads;
  MS_RETURN_IF_ERROR(r.Int("num_key_value_heads", &c.num_kv_heads, false));
  if (r.Has("head_dim")) {
    MS_RETURN_IF_ERROR(r.Int("head_dim", &c.head_dim, true));
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": no 'head_dim', and hidden_size (", c.hidden_size,
                       ") is not a multiple of num_attention_heads (", c.num_heads, ")"));
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  MS_RETURN_IF_ERROR(r.Int("max_position_embeddings", &c.max_position_embeddings, true));
  MS_RETURN_IF_ERROR(r.Double("rms_norm_eps", &c.rms_norm_eps, false));
  MS_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));

  std::string act = "silu";
  MS_RETURN_IF_ERROR(r.String("hidden_act", &act));
  if (act != "silu") {
    return absl::UnimplementedError(absl::StrCat(source, ": field 'hidden_act' = \"", act,
                                                 "\": only silu (SwiGLU) is supported"));
  }
  bool mlp_bias = false;
  MS_RETURN_IF_ERROR(r.Bool("mlp_bias", &mlp_bias));
  if (mlp_bias) {
    return absl::UnimplementedError(
        absl::StrCat(source, ": field 'mlp_bias' = true is not supported"));
  }
  bool attention_bias = false;
  MS_RETURN_IF_ERROR(r.Bool("attention_bias", &attention_bias));
  if (attention_bias) {
    return absl::UnimplementedError(absl::StrCat(
        source, ": field 'attention_bias' = true is not supported for ", c.architecture_name));
  }
  c.qkv_bias = c.architecture == Architecture::kQwen2;
  c.qk_norm = c.architecture == Architecture::kQwen3;

  MS_RETURN_IF_ERROR(ParseRope(j, source, &c));

  // Sliding-window attention.
  if (c.architecture == Architecture::kLlama) {
    // Mistral: `sliding_window` (null: none).
    MS_RETURN_IF_ERROR(r.Int("sliding_window", &c.sliding_window, false));
  } else {
    bool use_sliding_window = false;
    MS_RETURN_IF_ERROR(r.Bool("use_sliding_window", &use_sliding_window));
    if (use_sliding_window) {
      return absl::UnimplementedError(
          absl::StrCat(source, ": field 'use_sliding_window' = true is not supported for ",
                       c.architecture_name));
    }
  }
  if (r.Has("layer_types")) {
    const Json& lt = j.at("layer_types");
    if (!lt.is_array()) return r.Error("layer_types", "a list of strings");
    for (const Json& t : lt) {
      if (!t.is_string()) return r.Error("layer_types", "a list of strings");
      if (t.get<std::string>() != "full_attention") {
        return absl::UnimplementedError(absl::StrCat(source, ": field 'layer_types': \"",
                                                     t.get<std::string>(),
                                                     "\" layers are not supported"));
      }
    }
    if (static_cast<int64_t>(lt.size()) != c.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": field 'layer_types' has ",
                                                     lt.size(), " entries for ", c.num_layers,
                                                     " layers"));
    }
  }
  MS_RETURN_IF_ERROR(ValidateImpl(c, source));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromModelDir(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return FromJson(ss.str(), path);
}

absl::Status ModelConfig::Validate() const { return ValidateImpl(*this, "model config"); }

std::vector<float> ModelConfig::RopeInvFreq() const {
  // float32 throughout, in transformers' order of operations, so that the
  // angles match the oracle's to the last bit in most cases.
  const int64_t half = head_dim / 2;
  std::vector<float> inv(half);
  const float base = static_cast<float>(rope_theta);
  for (int64_t i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / std::pow(base, e);
  }
  if (rope_scaling.type == RopeScaling::Type::kLlama3) {
    const RopeScaling& s = rope_scaling;
    const float factor = static_cast<float>(s.factor);
    const float low = static_cast<float>(s.low_freq_factor);
    const float high = static_cast<float>(s.high_freq_factor);
    const float old_len = static_cast<float>(s.original_max_position_embeddings);
    const double low_freq_wavelen =
        static_cast<double>(s.original_max_position_embeddings) / s.low_freq_factor;
    const double high_freq_wavelen =
        static_cast<double>(s.original_max_position_embeddings) / s.high_freq_factor;
    for (int64_t i = 0; i < half; ++i) {
      const float wavelen = static_cast<float>(2 * M_PI) / inv[i];
      if (wavelen < high_freq_wavelen) continue;  // high frequency: kept
      if (wavelen > low_freq_wavelen) {           // low frequency: scaled
        inv[i] = inv[i] / factor;
        continue;
      }
      const float smooth = (old_len / wavelen - low) / (high - low);
      inv[i] = (1.0f - smooth) * inv[i] / factor + smooth * inv[i];
    }
  }
  return inv;
}

}  // namespace memshare::engine::model
