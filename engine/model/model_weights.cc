#include "engine/model/model_weights.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memshare::engine::model {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t HashName(absl::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Standard normal from (stream, index): Box-Muller over two counter-based
// uniforms, so any element can be drawn on its own.
float NormalAt(uint64_t stream, uint64_t index) {
  const uint64_t a = SplitMix64(stream ^ SplitMix64(2 * index));
  const uint64_t b = SplitMix64(stream ^ SplitMix64(2 * index + 1));
  const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1p-53;  // (0, 1]
  const double u2 = static_cast<double>(b >> 11) * 0x1p-53;          // [0, 1)
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

bool IsNorm(WeightRole r) {
  return r == WeightRole::kFinalNorm || r == WeightRole::kInputNorm ||
         r == WeightRole::kPostAttentionNorm || r == WeightRole::kQNorm || r == WeightRole::kKNorm;
}

std::string ShapeString(absl::Span<const int64_t> s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

absl::Status CheckFitsInMemory(const std::vector<WeightSpec>& specs) {
  int64_t elements = 0;
  for (const WeightSpec& s : specs) elements += s.LocalElements();
  const int64_t bytes = elements * 4;
  const int64_t phys = static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGESIZE);
  if (phys > 0 && bytes > phys) {
    return absl::ResourceExhaustedError(absl::StrCat("the model's float32 weights need ",
                                                     bytes >> 20, " MiB; this machine has ",
                                                     phys >> 20, " MiB"));
  }
  return absl::OkStatus();
}

// Copies this rank's slice of `t` (checked to have the spec's full shape).
absl::Status CopySlice(const TensorView& t, const WeightSpec& s, float* dst) {
  if (s.split_dim < 0 || s.split_dim == 0) {
    int64_t row = 1;
    for (size_t i = 1; i < s.shape.size(); ++i) row *= s.shape[i];
    const int64_t begin = s.split_dim < 0 ? 0 : s.begin * row;
    return CopyToFloat(t, begin, s.LocalElements(), dst);
  }
  // split_dim 1 of a matrix: a column range of every row.
  const int64_t rows = s.shape[0];
  const int64_t cols = s.shape[1];
  const int64_t width = s.end - s.begin;
  for (int64_t r = 0; r < rows; ++r) {
    absl::Status st = CopyToFloat(t, r * cols + s.begin, width, dst + r * width);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoadFormat> ParseLoadFormat(absl::string_view s) {
  if (s == "auto" || s == "safetensors") return LoadFormat::kSafetensors;
  if (s == "dummy") return LoadFormat::kDummy;
  return absl::InvalidArgumentError(
      absl::StrCat("load format \"", s, "\": expected auto, safetensors or dummy"));
}

absl::StatusOr<std::vector<float*>> ModelWeights::Allocate(const std::vector<WeightSpec>& specs) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size;
  const int64_t d = c.head_dim;
  const int64_t q_local = heads_local() * d;
  const int64_t kv_local = kv_heads_local() * d;
  const int64_t inter = intermediate_local();
  const int64_t qkv_rows = q_local + 2 * kv_local;

  for (const WeightSpec& s : specs) {
    if (s.role == WeightRole::kEmbedding && s.split_dim == 0) {
      vocab_begin_ = s.begin;
      vocab_end_ = s.end;
    }
  }
  if (tp_.size == 1) {
    vocab_begin_ = 0;
    vocab_end_ = c.vocab_size;
  }
  const int64_t vocab_local = vocab_end_ - vocab_begin_;
  embedding_.assign(vocab_local * h, 0.0f);
  if (!c.tie_word_embeddings) lm_head_.assign(vocab_local * h, 0.0f);
  final_norm_.assign(h, 0.0f);
  layers_.resize(c.num_layers);
  for (LayerWeights& L : layers_) {
    L.input_norm.assign(h, 0.0f);
    L.qkv.assign(qkv_rows * h, 0.0f);
    if (c.qkv_bias) L.qkv_bias.assign(qkv_rows, 0.0f);
    if (c.qk_norm) {
      L.q_norm.assign(d, 0.0f);
      L.k_norm.assign(d, 0.0f);
    }
    L.o_proj.assign(h * q_local, 0.0f);
    L.post_attention_norm.assign(h, 0.0f);
    L.gate_up.assign(2 * inter * h, 0.0f);
    L.down.assign(h * inter, 0.0f);
  }

  std::vector<float*> dst;
  dst.reserve(specs.size());
  for (const WeightSpec& s : specs) {
    float* p = nullptr;
    LayerWeights* L = s.layer >= 0 ? &layers_[s.layer] : nullptr;
    switch (s.role) {
      case WeightRole::kEmbedding:
        p = embedding_.data();
        break;
      case WeightRole::kFinalNorm:
        p = final_norm_.data();
        break;
      case WeightRole::kLmHead:
        p = lm_head_.data();
        break;
      case WeightRole::kInputNorm:
        p = L->input_norm.data();
        break;
      case WeightRole::kQProj:
        p = L->qkv.data();
        break;
      case WeightRole::kKProj:
        p = L->qkv.data() + q_local * h;
        break;
      case WeightRole::kVProj:
        p = L->qkv.data() + (q_local + kv_local) * h;
        break;
      case WeightRole::kQBias:
        p = L->qkv_bias.data();
        break;
      case WeightRole::kKBias:
        p = L->qkv_bias.data() + q_local;
        break;
      case WeightRole::kVBias:
        p = L->qkv_bias.data() + q_local + kv_local;
        break;
      case WeightRole::kQNorm:
        p = L->q_norm.data();
        break;
      case WeightRole::kKNorm:
        p = L->k_norm.data();
        break;
      case WeightRole::kOProj:
        p = L->o_proj.data();
        break;
      case WeightRole::kPostAttentionNorm:
        p = L->post_attention_norm.data();
        break;
      case WeightRole::kGateProj:
        p = L->gate_up.data();
        break;
      case WeightRole::kUpProj:
        p = L->gate_up.data() + inter * h;
        break;
      case WeightRole::kDownProj:
        p = L->down.data();
        break;
    }
    dst.push_back(p);
  }
  return dst;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const ModelConfig& config,
                                                                 const SafetensorsReader& reader,
                                                                 TensorParallel tp) {
  absl::Status valid = config.Validate();
  if (!valid.ok()) return valid;
  absl::StatusOr<std::vector<WeightSpec>> specs = ListWeights(config, tp);
  if (!specs.ok()) return specs.status();
  // Every tensor is looked up and shape-checked before any memory is
  // allocated: a wrong checkpoint fails fast, naming the tensor.
  std::vector<TensorView> views;
  views.reserve(specs->size());
  for (const WeightSpec& s : *specs) {
    absl::StatusOr<TensorView> t = reader.Find(s.name);
    if (!t.ok()) return t.status();
    if (!std::equal(t->shape.begin(), t->shape.end(), s.shape.begin(), s.shape.end())) {
      return absl::InvalidArgumentError(
          absl::StrCat(t->file, ": tensor '", s.name, "' has shape ", ShapeString(t->shape),
                       ", but config.json implies ", ShapeString(s.shape)));
    }
    if (t->dtype == DType::kOther) {
      return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", s.name, "' has dtype ",
                                                     t->dtype_name,
                                                     "; supported dtypes are F32, F16 and BF16"));
    }
    views.push_back(*t);
  }
  absl::Status fits = CheckFitsInMemory(*specs);
  if (!fits.ok()) return fits;
  std::unique_ptr<ModelWeights> w(new ModelWeights(config, tp));
  absl::StatusOr<std::vector<float*>> dst = w->Allocate(*specs);
  if (!dst.ok()) return dst.status();
  for (size_t i = 0; i < specs->size(); ++i) {
    absl::Status st = CopySlice(views[i], (*specs)[i], (*dst)[i]);
    if (!st.ok()) return st;
  }
  return w;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Dummy(const ModelConfig& config,
                                                                  const DummyOptions& options,
                                                                  TensorParallel tp) {
  absl::Status valid = config.Validate();
  if (!valid.ok()) return valid;
  if (!(options.std >= 0) || !std::isfinite(options.std)) {
    return absl::InvalidArgumentError(absl::StrCat("dummy weight std ", options.std));
  }
  absl::StatusOr<std::vector<WeightSpec>> specs = ListWeights(config, tp);
  if (!specs.ok()) return specs.status();
  absl::Status fits = CheckFitsInMemory(*specs);
  if (!fits.ok()) return fits;
  std::unique_ptr<ModelWeights> w(new ModelWeights(config, tp));
  absl::StatusOr<std::vector<float*>> dst = w->Allocate(*specs);
  if (!dst.ok()) return dst.status();
  for (size_t i = 0; i < specs->size(); ++i) {
    const WeightSpec& s = (*specs)[i];
    float* out = (*dst)[i];
    const int64_t n = s.LocalElements();
    if (IsNorm(s.role)) {
      std::fill(out, out + n, 1.0f);
      continue;
    }
    const uint64_t stream = SplitMix64(options.seed ^ HashName(s.name));
    // Index in the whole tensor of local element j.
    int64_t row = 1;
    for (size_t k = 1; k < s.shape.size(); ++k) row *= s.shape[k];
    for (int64_t j = 0; j < n; ++j) {
      int64_t full = j;
      if (s.split_dim == 0) {
        full = s.begin * row + j;
      } else if (s.split_dim == 1) {
        const int64_t width = s.end - s.begin;
        full = (j / width) * s.shape[1] + s.begin + j % width;
      }
      out[j] = options.std * NormalAt(stream, static_cast<uint64_t>(full));
    }
  }
  return w;
}

}  // namespace memshare::engine::model
