#include "engine/model/weight_spec.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace memshare::engine::model {

std::vector<int64_t> WeightSpec::LocalShape() const {
  std::vector<int64_t> s = shape;
  if (split_dim >= 0) s[split_dim] = end - begin;
  return s;
}

int64_t WeightSpec::LocalElements() const {
  int64_t n = 1;
  for (int64_t d : LocalShape()) n *= d;
  return n;
}

KvHeadRange LocalKvHeads(const ModelConfig& c, TensorParallel tp) {
  if (tp.size <= 1 || c.num_kv_heads <= 0) return {0, c.num_kv_heads};
  if (c.num_kv_heads % tp.size == 0) {
    const int64_t n = c.num_kv_heads / tp.size;
    return {tp.rank * n, n};
  }
  // Replicated: rank r's query heads all read KV head r / (size / kv_heads).
  return {tp.rank / std::max<int64_t>(1, tp.size / c.num_kv_heads), 1};
}

VocabRange LocalVocab(const ModelConfig& c, TensorParallel tp) {
  const int64_t size = std::max<int32_t>(tp.size, 1);
  VocabRange v;
  v.chunk = (c.vocab_size + size - 1) / size;
  v.begin = std::min<int64_t>(c.vocab_size, tp.rank * v.chunk);
  v.end = std::min<int64_t>(c.vocab_size, v.begin + v.chunk);
  return v;
}

absl::StatusOr<std::vector<WeightSpec>> ListWeights(const ModelConfig& c, TensorParallel tp) {
  if (tp.size < 1 || tp.rank < 0 || tp.rank >= tp.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor parallel rank ", tp.rank, " of ", tp.size));
  }
  const bool kv_split = c.num_kv_heads % tp.size == 0;
  const bool kv_replicated =
      c.num_kv_heads > 0 && c.num_kv_heads < tp.size && tp.size % c.num_kv_heads == 0;
  if (c.num_heads % tp.size != 0 || !(kv_split || kv_replicated) ||
      c.intermediate_size % tp.size != 0) {
    return absl::UnimplementedError(absl::StrCat(
        "tensor parallel size ", tp.size, " must divide num_attention_heads (", c.num_heads,
        ") and intermediate_size (", c.intermediate_size, "), and divide num_key_value_heads (",
        c.num_kv_heads, ") or be a multiple of it"));
  }
  const int64_t r = tp.rank;
  const int64_t heads = c.num_heads / tp.size;
  const KvHeadRange kv_range = LocalKvHeads(c, tp);
  const int64_t inter = c.intermediate_size / tp.size;
  const VocabRange vocab = LocalVocab(c, tp);
  const int64_t vocab_begin = vocab.begin;
  const int64_t vocab_end = vocab.end;
  const int64_t h = c.hidden_size;
  const int64_t d = c.head_dim;
  const int64_t kv_begin = kv_range.first * d;
  const int64_t kv_end = (kv_range.first + kv_range.count) * d;
  const bool split = tp.size > 1;

  std::vector<WeightSpec> out;
  auto add = [&](WeightRole role, int32_t layer, std::string name, std::vector<int64_t> shape,
                 int split_dim = -1, int64_t begin = 0, int64_t end = 0) {
    WeightSpec s;
    s.role = role;
    s.layer = layer;
    s.name = std::move(name);
    s.shape = std::move(shape);
    if (split && split_dim >= 0) {
      s.split_dim = split_dim;
      s.begin = begin;
      s.end = end;
    }
    out.push_back(std::move(s));
  };

  add(WeightRole::kEmbedding, -1, "model.embed_tokens.weight", {c.vocab_size, h}, 0, vocab_begin,
      vocab_end);
  add(WeightRole::kFinalNorm, -1, "model.norm.weight", {h});
  if (!c.tie_word_embeddings) {
    add(WeightRole::kLmHead, -1, "lm_head.weight", {c.vocab_size, h}, 0, vocab_begin, vocab_end);
  }
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(WeightRole::kInputNorm, l, p + "input_layernorm.weight", {h});
    add(WeightRole::kQProj, l, p + "self_attn.q_proj.weight", {c.q_dim(), h}, 0, r * heads * d,
        (r + 1) * heads * d);
    add(WeightRole::kKProj, l, p + "self_attn.k_proj.weight", {c.kv_dim(), h}, 0, kv_begin, kv_end);
    add(WeightRole::kVProj, l, p + "self_attn.v_proj.weight", {c.kv_dim(), h}, 0, kv_begin, kv_end);
    if (c.qkv_bias) {
      add(WeightRole::kQBias, l, p + "self_attn.q_proj.bias", {c.q_dim()}, 0, r * heads * d,
          (r + 1) * heads * d);
      add(WeightRole::kKBias, l, p + "self_attn.k_proj.bias", {c.kv_dim()}, 0, kv_begin, kv_end);
      add(WeightRole::kVBias, l, p + "self_attn.v_proj.bias", {c.kv_dim()}, 0, kv_begin, kv_end);
    }
    if (c.qk_norm) {
      add(WeightRole::kQNorm, l, p + "self_attn.q_norm.weight", {d});
      add(WeightRole::kKNorm, l, p + "self_attn.k_norm.weight", {d});
    }
    add(WeightRole::kOProj, l, p + "self_attn.o_proj.weight", {h, c.q_dim()}, 1, r * heads * d,
        (r + 1) * heads * d);
    add(WeightRole::kPostAttentionNorm, l, p + "post_attention_layernorm.weight", {h});
    add(WeightRole::kGateProj, l, p + "mlp.gate_proj.weight", {c.intermediate_size, h}, 0,
        r * inter, (r + 1) * inter);
    add(WeightRole::kUpProj, l, p + "mlp.up_proj.weight", {c.intermediate_size, h}, 0, r * inter,
        (r + 1) * inter);
    add(WeightRole::kDownProj, l, p + "mlp.down_proj.weight", {h, c.intermediate_size}, 1,
        r * inter, (r + 1) * inter);
  }
  return out;
}

}  // namespace memshare::engine::model
