#include "engine/model/model_weights.h"

#include <cmath>
#include <string>

#include "engine/model/testing/checkpoint_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::model {
namespace {

using ::testing::HasSubstr;
using testing::ValueAt;

ModelConfig Tiny(Architecture a, bool tied) {
  ModelConfig c;
  c.architecture = a;
  c.architecture_name = a == Architecture::kQwen2   ? "Qwen2ForCausalLM"
                        : a == Architecture::kQwen3 ? "Qwen3ForCausalLM"
                                                    : "LlamaForCausalLM";
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

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadDir(const std::string& dir,
                                                      TensorParallel tp = {}) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromModelDir(dir);
  if (!c.ok()) return c.status();
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> r = SafetensorsReader::OpenDir(dir);
  if (!r.ok()) return r.status();
  return ModelWeights::Load(*c, **r, tp);
}

struct DtypeCase {
  const char* dtype;
  int shard;
};

class LoadTest : public ::testing::TestWithParam<DtypeCase> {};

TEST_P(LoadTest, PutsEveryTensorWhereTheBackendReadsIt) {
  const ModelConfig c = Tiny(Architecture::kQwen2, false);
  const std::string dir = testing::MakeTempDir(std::string("load_") + GetParam().dtype);
  testing::CheckpointOptions o;
  o.dtype = GetParam().dtype;
  o.tensors_per_shard = GetParam().shard;
  ASSERT_TRUE(testing::WriteCheckpoint(dir, c, o).ok());
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = LoadDir(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  const LayerWeights& L = (*w)->layer(1);
  const std::string p = "model.layers.1.";
  // qkv: Q rows (16), then K rows (8), then V rows (8), each 8 wide.
  EXPECT_EQ(L.qkv.size(), 32u * 8);
  EXPECT_EQ(L.qkv[0], ValueAt(1, p + "self_attn.q_proj.weight", 0));
  EXPECT_EQ(L.qkv[15 * 8 + 7], ValueAt(1, p + "self_attn.q_proj.weight", 15 * 8 + 7));
  EXPECT_EQ(L.qkv[16 * 8 + 3], ValueAt(1, p + "self_attn.k_proj.weight", 3));
  EXPECT_EQ(L.qkv[24 * 8 + 9], ValueAt(1, p + "self_attn.v_proj.weight", 9));
  EXPECT_EQ(L.qkv_bias[17], ValueAt(1, p + "self_attn.k_proj.bias", 1));
  EXPECT_EQ(L.qkv_bias[31], ValueAt(1, p + "self_attn.v_proj.bias", 7));
  EXPECT_EQ(L.gate_up[5], ValueAt(1, p + "mlp.gate_proj.weight", 5));
  EXPECT_EQ(L.gate_up[12 * 8 + 5], ValueAt(1, p + "mlp.up_proj.weight", 5));
  EXPECT_EQ(L.down[8 * 12 - 1], ValueAt(1, p + "mlp.down_proj.weight", 8 * 12 - 1));
  EXPECT_EQ(L.o_proj[20], ValueAt(1, p + "self_attn.o_proj.weight", 20));
  EXPECT_EQ(L.input_norm[2], ValueAt(1, p + "input_layernorm.weight", 2));
  EXPECT_EQ(L.post_attention_norm[2], ValueAt(1, p + "post_attention_layernorm.weight", 2));
  EXPECT_EQ((*w)->embedding()[33], ValueAt(1, "model.embed_tokens.weight", 33));
  EXPECT_EQ((*w)->lm_head()[33], ValueAt(1, "lm_head.weight", 33));
  EXPECT_EQ((*w)->final_norm()[7], ValueAt(1, "model.norm.weight", 7));
  EXPECT_TRUE(L.q_norm.empty());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, LoadTest,
                         ::testing::Values(DtypeCase{"F32", 0}, DtypeCase{"BF16", 0},
                                           DtypeCase{"F16", 0}, DtypeCase{"BF16", 4}));

TEST(ModelWeightsTest, TiedEmbeddingsShareTheTable) {
  const ModelConfig c = Tiny(Architecture::kQwen3, true);
  const std::string dir = testing::MakeTempDir("load_tied");
  ASSERT_TRUE(testing::WriteCheckpoint(dir, c, {}).ok());
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = LoadDir(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(&(*w)->lm_head(), &(*w)->embedding());
  EXPECT_EQ((*w)->layer(0).k_norm[3], ValueAt(1, "model.layers.0.self_attn.k_norm.weight", 3));
}

TEST(ModelWeightsTest, MissingTensorIsNamed) {
  const ModelConfig c = Tiny(Architecture::kLlama, false);
  const std::string dir = testing::MakeTempDir("load_missing");
  testing::CheckpointOptions o;
  o.omit_tensor = "model.layers.1.mlp.up_proj.weight";
  ASSERT_TRUE(testing::WriteCheckpoint(dir, c, o).ok());
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = LoadDir(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("model.layers.1.mlp.up_proj.weight"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr(dir));
}

TEST(ModelWeightsTest, WrongShapeIsNamed) {
  const ModelConfig c = Tiny(Architecture::kLlama, false);
  const std::string dir = testing::MakeTempDir("load_shape");
  testing::CheckpointOptions o;
  o.wrong_shape_tensor = "model.layers.0.self_attn.v_proj.weight";
  ASSERT_TRUE(testing::WriteCheckpoint(dir, c, o).ok());
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = LoadDir(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(w.status().message());
  EXPECT_THAT(msg, HasSubstr("model.layers.0.self_attn.v_proj.weight"));
  EXPECT_THAT(msg, HasSubstr("has shape [9, 8], but config.json implies [8, 8]"));
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
}

TEST(ModelWeightsTest, TruncatedCheckpointIsAnErrorNotACrash) {
  const ModelConfig c = Tiny(Architecture::kLlama, false);
  const std::string dir = testing::MakeTempDir("load_truncated");
  ASSERT_TRUE(testing::WriteCheckpoint(dir, c, {}).ok());
  ASSERT_EQ(std::system(("truncate -s -100 '" + dir + "/model.safetensors'").c_str()), 0);
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = LoadDir(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("truncated"));
}

TEST(ModelWeightsTest, TensorParallelSlicesMatchTheWholeModel) {
  const ModelConfig c = Tiny(Architecture::kQwen2, false);
  const std::string dir = testing::MakeTempDir("load_tp");
  ASSERT_TRUE(testing::WriteCheckpoint(dir, c, {}).ok());
  absl::StatusOr<std::unique_ptr<ModelWeights>> full = LoadDir(dir);
  absl::StatusOr<std::unique_ptr<ModelWeights>> r1 = LoadDir(dir, {1, 2});
  ASSERT_TRUE(full.ok() && r1.ok());
  EXPECT_EQ((*r1)->heads_local(), 2);
  EXPECT_EQ((*r1)->kv_heads_local(), 1);
  const LayerWeights& F = (*full)->layer(0);
  const LayerWeights& S = (*r1)->layer(0);
  // Q rows of heads 2..3, K and V rows of KV head 1.
  ASSERT_EQ(S.qkv.size(), (8u + 4 + 4) * 8);
  for (int i = 0; i < 8 * 8; ++i) EXPECT_EQ(S.qkv[i], F.qkv[8 * 8 + i]);
  for (int i = 0; i < 4 * 8; ++i) EXPECT_EQ(S.qkv[8 * 8 + i], F.qkv[(16 + 4) * 8 + i]);
  for (int i = 0; i < 4 * 8; ++i) EXPECT_EQ(S.qkv[12 * 8 + i], F.qkv[(24 + 4) * 8 + i]);
  // o_proj columns 8..15 of each of the 8 rows.
  for (int r = 0; r < 8; ++r) {
    for (int col = 0; col < 8; ++col) EXPECT_EQ(S.o_proj[r * 8 + col], F.o_proj[r * 16 + 8 + col]);
  }
  // Vocabulary rows 5..9.
  EXPECT_EQ((*r1)->vocab_begin(), 5);
  EXPECT_EQ((*r1)->embedding()[0], (*full)->embedding()[5 * 8]);
}

TEST(ModelWeightsTest, DummyIsSeededAndRankConsistent) {
  const ModelConfig c = Tiny(Architecture::kQwen3, false);
  ModelWeights::DummyOptions o;
  o.seed = 7;
  o.std = 0.5f;
  absl::StatusOr<std::unique_ptr<ModelWeights>> a = ModelWeights::Dummy(c, o);
  absl::StatusOr<std::unique_ptr<ModelWeights>> b = ModelWeights::Dummy(c, o);
  o.seed = 8;
  absl::StatusOr<std::unique_ptr<ModelWeights>> other = ModelWeights::Dummy(c, o);
  o.seed = 7;
  absl::StatusOr<std::unique_ptr<ModelWeights>> r1 = ModelWeights::Dummy(c, o, {1, 2});
  ASSERT_TRUE(a.ok() && b.ok() && other.ok() && r1.ok());
  EXPECT_EQ((*a)->layer(1).gate_up, (*b)->layer(1).gate_up);
  EXPECT_NE((*a)->layer(1).gate_up, (*other)->layer(1).gate_up);
  EXPECT_EQ((*a)->layer(0).q_norm, std::vector<float>(4, 1.0f));
  // Down projection, rank 1: columns 6..11 of the whole matrix.
  for (int r = 0; r < 8; ++r) {
    for (int col = 0; col < 6; ++col) {
      EXPECT_EQ((*r1)->layer(0).down[r * 6 + col], (*a)->layer(0).down[r * 12 + 6 + col]);
    }
  }
  // Spread of the draws.
  const std::vector<float>& e = (*a)->embedding();
  double sum = 0, sq = 0;
  for (float v : e) {
    sum += v;
    sq += v * v;
  }
  const double mean = sum / e.size();
  const double sd = std::sqrt(sq / e.size() - mean * mean);
  EXPECT_NEAR(sd, 0.5, 0.1);
}

TEST(ModelWeightsTest, ParseLoadFormat) {
  EXPECT_EQ(*ParseLoadFormat("dummy"), LoadFormat::kDummy);
  EXPECT_EQ(*ParseLoadFormat("auto"), LoadFormat::kSafetensors);
  EXPECT_EQ(*ParseLoadFormat("safetensors"), LoadFormat::kSafetensors);
  EXPECT_EQ(ParseLoadFormat("pt").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelWeightsTest, EveryGoldenCheckpointLoads) {
  for (const char* name :
       {"llama_gqa", "llama_tied_llama3", "qwen2_bias", "qwen3_qknorm", "mistral_mha"}) {
    absl::StatusOr<std::unique_ptr<ModelWeights>> w =
        LoadDir(std::string("tests/data/golden/") + name);
    ASSERT_TRUE(w.ok()) << name << ": " << w.status();
    // Randomized norms (not transformers' 1.0 init) came through.
    EXPECT_NE((*w)->final_norm()[0], 1.0f) << name;
  }
}

}  // namespace
}  // namespace memshare::engine::model
