#include "engine/model/weight_spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::model {
namespace {

using ::testing::ElementsAre;

ModelConfig Tiny(Architecture a, bool tied) {
  ModelConfig c;
  c.architecture = a;
  c.architecture_name = "x";
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  c.qkv_bias = a == Architecture::kQwen2;
  c.qk_norm = a == Architecture::kQwen3;
  return c;
}

const WeightSpec* Find(const std::vector<WeightSpec>& v, const std::string& name) {
  for (const WeightSpec& s : v) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

TEST(WeightSpecTest, NamesAndShapesPerArchitecture) {
  absl::StatusOr<std::vector<WeightSpec>> llama = ListWeights(Tiny(Architecture::kLlama, false));
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(llama->size(), 3u + 2 * 9);
  const WeightSpec* q = Find(*llama, "model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->role, WeightRole::kQProj);
  EXPECT_EQ(q->layer, 1);
  EXPECT_THAT(q->shape, ElementsAre(16, 8));
  EXPECT_EQ(q->split_dim, -1);
  EXPECT_THAT(Find(*llama, "model.layers.0.self_attn.k_proj.weight")->shape, ElementsAre(8, 8));
  EXPECT_THAT(Find(*llama, "model.layers.0.self_attn.o_proj.weight")->shape, ElementsAre(8, 16));
  EXPECT_THAT(Find(*llama, "model.layers.0.mlp.down_proj.weight")->shape, ElementsAre(8, 12));
  EXPECT_NE(Find(*llama, "lm_head.weight"), nullptr);

  absl::StatusOr<std::vector<WeightSpec>> tied = ListWeights(Tiny(Architecture::kLlama, true));
  EXPECT_EQ(tied->size(), 2u + 2 * 9);
  EXPECT_EQ(Find(*tied, "lm_head.weight"), nullptr);

  absl::StatusOr<std::vector<WeightSpec>> qwen2 = ListWeights(Tiny(Architecture::kQwen2, false));
  EXPECT_EQ(qwen2->size(), 3u + 2 * 12);
  EXPECT_THAT(Find(*qwen2, "model.layers.0.self_attn.k_proj.bias")->shape, ElementsAre(8));

  absl::StatusOr<std::vector<WeightSpec>> qwen3 = ListWeights(Tiny(Architecture::kQwen3, true));
  EXPECT_EQ(qwen3->size(), 2u + 2 * 11);
  EXPECT_THAT(Find(*qwen3, "model.layers.1.self_attn.q_norm.weight")->shape, ElementsAre(4));
}

TEST(WeightSpecTest, TensorParallelSlicesCoverEachTensorOnce) {
  const ModelConfig c = Tiny(Architecture::kQwen2, false);
  absl::StatusOr<std::vector<WeightSpec>> r0 = ListWeights(c, {0, 2});
  absl::StatusOr<std::vector<WeightSpec>> r1 = ListWeights(c, {1, 2});
  ASSERT_TRUE(r0.ok() && r1.ok());
  ASSERT_EQ(r0->size(), r1->size());
  for (size_t i = 0; i < r0->size(); ++i) {
    const WeightSpec& a = (*r0)[i];
    const WeightSpec& b = (*r1)[i];
    ASSERT_EQ(a.split_dim, b.split_dim) << a.name;
    if (a.split_dim < 0) continue;
    EXPECT_EQ(a.begin, 0) << a.name;
    EXPECT_EQ(a.end, b.begin) << a.name;
    EXPECT_EQ(b.end, a.shape[a.split_dim]) << a.name;
  }
  const WeightSpec* o = Find(*r1, "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(o->split_dim, 1);  // row-parallel: a column range
  EXPECT_THAT(o->LocalShape(), ElementsAre(8, 8));
  const WeightSpec* k = Find(*r1, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(k->split_dim, 0);
  EXPECT_EQ(k->begin, 4);  // the second KV head
  EXPECT_EQ(Find(*r1, "model.norm.weight")->split_dim, -1);
  const WeightSpec* emb = Find(*r1, "model.embed_tokens.weight");
  EXPECT_EQ(emb->begin, 5);
  EXPECT_EQ(emb->end, 10);
}

TEST(WeightSpecTest, KvHeadsReplicateWhenFewerThanRanks) {
  // 4 query heads, 2 KV heads, 4 ranks: each rank holds one query head and
  // the KV head of its query group (ranks 0, 1: KV head 0; ranks 2, 3: 1).
  const ModelConfig c = Tiny(Architecture::kQwen2, false);
  for (int r = 0; r < 4; ++r) {
    absl::StatusOr<std::vector<WeightSpec>> w = ListWeights(c, {r, 4});
    ASSERT_TRUE(w.ok()) << w.status();
    const KvHeadRange kv = LocalKvHeads(c, {r, 4});
    EXPECT_EQ(kv.count, 1);
    EXPECT_EQ(kv.first, r / 2);
    const WeightSpec* k = Find(*w, "model.layers.1.self_attn.k_proj.weight");
    EXPECT_EQ(k->begin, (r / 2) * 4);
    EXPECT_EQ(k->end, (r / 2 + 1) * 4);
    const WeightSpec* vb = Find(*w, "model.layers.0.self_attn.v_proj.bias");
    EXPECT_EQ(vb->begin, (r / 2) * 4);
    const WeightSpec* q = Find(*w, "model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(q->begin, r * 4);  // query head r reads KV head r / 2 (GQA group of 2)
  }
  // Split when they divide: 2 ranks, one KV head each.
  EXPECT_EQ(LocalKvHeads(c, {1, 2}).first, 1);
  EXPECT_EQ(LocalKvHeads(c, {1, 2}).count, 1);
  EXPECT_EQ(LocalKvHeads(c, {0, 1}).count, 2);
  const VocabRange v = LocalVocab(c, {1, 4});
  EXPECT_EQ(v.chunk, 3);
  EXPECT_EQ(v.begin, 3);
  EXPECT_EQ(v.end, 6);
  EXPECT_EQ(LocalVocab(c, {3, 4}).end, 10);
  EXPECT_EQ(LocalVocab(c, {3, 4}).begin, 9);
}

TEST(WeightSpecTest, RejectsUnevenSplitsAndBadRanks) {
  const ModelConfig c = Tiny(Architecture::kLlama, false);
  EXPECT_EQ(ListWeights(c, {0, 3}).status().code(), absl::StatusCode::kUnimplemented);
  ModelConfig three_kv = c;
  three_kv.num_heads = 12;
  three_kv.num_kv_heads = 3;
  EXPECT_EQ(ListWeights(three_kv, {0, 4}).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ListWeights(c, {2, 2}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ListWeights(c, {0, 0}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::engine::model
