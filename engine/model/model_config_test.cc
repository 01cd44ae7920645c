#include "engine/model/model_config.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::model {
namespace {

using ::testing::HasSubstr;

// As transformers 5.17 writes it (tests/data/golden/llama_tied_llama3).
constexpr char kLlama3V5[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "head_dim": 32,
  "hidden_act": "silu", "hidden_size": 96, "intermediate_size": 192,
  "max_position_embeddings": 512, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 1,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 64, "rope_theta": 500000.0,
                      "rope_type": "llama3"},
  "tie_word_embeddings": true, "vocab_size": 512})";

// As Llama 3.1 checkpoints on the hub write it (transformers 4.x).
constexpr char kLlama3V4[] = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "vocab_size": 128256})";

std::string Qwen(const std::string& arch, const std::string& extra = "") {
  return R"({"architectures": [")" + arch + R"("], "hidden_size": 64,
    "intermediate_size": 160, "max_position_embeddings": 512, "num_attention_heads": 8,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "rope_scaling": null, "sliding_window": 4096,
    "use_sliding_window": false, "tie_word_embeddings": true, "vocab_size": 640)" +
         extra + "}";
}

TEST(ModelConfigTest, ParsesTransformers5Llama3) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kLlama3V5);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_EQ(c->architecture_name, "LlamaForCausalLM");
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->hidden_size, 96);
  EXPECT_EQ(c->head_dim, 32);  // explicit, != 96 / 4
  EXPECT_EQ(c->q_dim(), 128);
  EXPECT_EQ(c->kv_dim(), 32);
  EXPECT_EQ(c->num_kv_heads, 1);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, ParsesTransformers4Llama3) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kLlama3V4);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);  // hidden / heads
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c->tie_word_embeddings);
}

TEST(ModelConfigTest, QwenFamilies) {
  absl::StatusOr<ModelConfig> q2 = ModelConfig::FromJson(Qwen("Qwen2ForCausalLM"));
  ASSERT_TRUE(q2.ok()) << q2.status();
  EXPECT_EQ(q2->architecture, Architecture::kQwen2);
  EXPECT_TRUE(q2->qkv_bias);
  EXPECT_FALSE(q2->qk_norm);
  EXPECT_EQ(q2->head_dim, 8);
  EXPECT_EQ(q2->sliding_window, 0);  // use_sliding_window false
  EXPECT_EQ(q2->rope_scaling.type, RopeScaling::Type::kNone);

  absl::StatusOr<ModelConfig> q3 =
      ModelConfig::FromJson(Qwen("Qwen3ForCausalLM", R"(, "head_dim": 128)"));
  ASSERT_TRUE(q3.ok()) << q3.status();
  EXPECT_EQ(q3->architecture, Architecture::kQwen3);
  EXPECT_FALSE(q3->qkv_bias);
  EXPECT_TRUE(q3->qk_norm);
  EXPECT_EQ(q3->head_dim, 128);
}

TEST(ModelConfigTest, MistralKeepsSlidingWindowAndModelTypeFallback) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(R"({"model_type": "mistral",
    "hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 1024,
    "num_attention_heads": 4, "num_hidden_layers": 2, "sliding_window": 4096,
    "vocab_size": 512})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture_name, "MistralForCausalLM");
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->num_kv_heads, 4);  // defaults to the head count
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
}

TEST(ModelConfigTest, OldStyleScalingTypeKey) {
  std::string j = kLlama3V4;
  j.replace(j.find("\"rope_type\""), 11, "\"type\"");
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
}

struct BadCase {
  const char* json;
  absl::StatusCode code;
  const char* message;
};

TEST(ModelConfigTest, RejectsBadConfigsWithClearErrors) {
  const BadCase cases[] = {
      {"{\"architectures\": [\"LlamaForCausalLM\"], ", absl::StatusCode::kInvalidArgument,
       "not valid JSON"},
      {"[1, 2]", absl::StatusCode::kInvalidArgument, "expected a JSON object"},
      {R"({"architectures": ["GPT2LMHeadModel"], "vocab_size": 5})",
       absl::StatusCode::kUnimplemented, "unsupported architecture \"GPT2LMHeadModel\""},
      {R"({"model_type": "gpt2"})", absl::StatusCode::kUnimplemented, "model_type \"gpt2\""},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64})",
       absl::StatusCode::kInvalidArgument, "field 'vocab_size'"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": "64",
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
          "max_position_embeddings": 8})",
       absl::StatusCode::kInvalidArgument, "field 'hidden_size': expected an integer, got \"64\""},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
          "num_key_value_heads": 3, "max_position_embeddings": 8})",
       absl::StatusCode::kInvalidArgument, "not a multiple of num_key_value_heads"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 0, "num_attention_heads": 4,
          "max_position_embeddings": 8})",
       absl::StatusCode::kInvalidArgument, "'num_hidden_layers' = 0"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
          "max_position_embeddings": 8, "rope_scaling": {"rope_type": "yarn", "factor": 4}})",
       absl::StatusCode::kUnimplemented, "rope type \"yarn\""},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
          "max_position_embeddings": 8, "rope_scaling": {"rope_type": "llama3", "factor": 8}})",
       absl::StatusCode::kInvalidArgument, "rope_scaling.low_freq_factor"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
          "max_position_embeddings": 8, "hidden_act": "gelu"})",
       absl::StatusCode::kUnimplemented, "hidden_act"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
          "max_position_embeddings": 8, "attention_bias": true})",
       absl::StatusCode::kUnimplemented, "attention_bias"},
      {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
          "max_position_embeddings": 8, "use_sliding_window": true})",
       absl::StatusCode::kUnimplemented, "use_sliding_window"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 64,
          "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
          "head_dim": 15, "max_position_embeddings": 8})",
       absl::StatusCode::kInvalidArgument, "must be even"},
  };
  for (const BadCase& c : cases) {
    absl::StatusOr<ModelConfig> r = ModelConfig::FromJson(c.json, "/models/x/config.json");
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("/models/x/config.json"));
  }
}

TEST(ModelConfigTest, MissingDirectoryIsNotFound) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromModelDir("/nonexistent/model");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/model/config.json"));
}

TEST(ModelConfigTest, DefaultRopeFrequencies) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(Qwen("Qwen2ForCausalLM"));
  ASSERT_TRUE(c.ok());
  std::vector<float> inv = c->RopeInvFreq();
  ASSERT_EQ(inv.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(inv[i], std::pow(1e6, -2.0 * i / 8), 1e-6 * std::pow(1e6, -2.0 * i / 8));
  }
}

TEST(ModelConfigTest, Llama3RopeFrequenciesCoverAllThreeBands) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kLlama3V5);
  ASSERT_TRUE(c.ok());
  std::vector<float> inv = c->RopeInvFreq();
  ASSERT_EQ(inv.size(), 16u);
  // Reference in double: Llama 3.1's published frequency remap.
  int kept = 0, scaled = 0, smoothed = 0;
  for (int i = 0; i < 16; ++i) {
    const double f = std::pow(500000.0, -2.0 * i / 32);
    const double wavelen = 2 * M_PI / f;
    double want;
    if (wavelen < 64.0 / 4) {
      want = f;
      ++kept;
    } else if (wavelen > 64.0 / 1) {
      want = f / 8;
      ++scaled;
    } else {
      const double s = (64.0 / wavelen - 1) / (4 - 1);
      want = (1 - s) * f / 8 + s * f;
      ++smoothed;
    }
    EXPECT_NEAR(inv[i], want, 2e-6 * want) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(scaled, 0);
  EXPECT_GT(smoothed, 0);
}

}  // namespace
}  // namespace memshare::engine::model
