#include "engine/model/safetensors_reader.h"

#include <string>

#include "engine/model/testing/checkpoint_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::model {
namespace {

using testing::EncodeFloats;
using ::testing::HasSubstr;
using testing::SerializeSafetensors;
using testing::WriteFile;

TEST(SafetensorsReaderTest, SingleFile) {
  const std::string dir = testing::MakeTempDir("reader_single");
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors",
                        SerializeSafetensors({{"a", "F32", {2}, EncodeFloats({1, 2}, "F32")},
                                              {"b", "BF16", {1}, EncodeFloats({3}, "BF16")}}))
                  .ok());
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> r = SafetensorsReader::OpenDir(dir);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->Files().size(), 1u);
  EXPECT_TRUE((*r)->Contains("a"));
  absl::StatusOr<TensorView> b = (*r)->Find("b");
  ASSERT_TRUE(b.ok());
  float v;
  ASSERT_TRUE(CopyToFloat(*b, 0, 1, &v).ok());
  EXPECT_EQ(v, 3.0f);
  absl::StatusOr<TensorView> c = (*r)->Find("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("model.layers.0.mlp.up_proj.weight"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(dir));
}

class ShardedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("reader_sharded");
    ASSERT_TRUE(WriteFile(dir_ + "/s1.safetensors",
                          SerializeSafetensors({{"a", "F32", {1}, EncodeFloats({1}, "F32")}}))
                    .ok());
    ASSERT_TRUE(WriteFile(dir_ + "/s2.safetensors",
                          SerializeSafetensors({{"b", "F32", {1}, EncodeFloats({2}, "F32")},
                                                {"c", "F32", {1}, EncodeFloats({3}, "F32")}}))
                    .ok());
  }
  void Index(const std::string& text) {
    ASSERT_TRUE(WriteFile(dir_ + "/model.safetensors.index.json", text).ok());
  }
  std::string dir_;
};

TEST_F(ShardedTest, ReadsThroughTheIndex) {
  Index(R"({"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors",
           "c": "s2.safetensors"}})");
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> r = SafetensorsReader::OpenDir(dir_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->Files().size(), 2u);
  for (auto [name, want] : {std::pair{"a", 1.0f}, {"b", 2.0f}, {"c", 3.0f}}) {
    absl::StatusOr<TensorView> t = (*r)->Find(name);
    ASSERT_TRUE(t.ok()) << name;
    float v;
    ASSERT_TRUE(CopyToFloat(*t, 0, 1, &v).ok());
    EXPECT_EQ(v, want);
  }
}

TEST_F(ShardedTest, IndexErrors) {
  struct Case {
    const char* index;
    absl::StatusCode code;
    const char* message;
  };
  const Case cases[] = {
      {"{oops", absl::StatusCode::kInvalidArgument, "'weight_map'"},
      {R"({"weight_map": {"a": "missing.safetensors"}})", absl::StatusCode::kNotFound,
       "missing.safetensors"},
      {R"({"weight_map": {"a": "s2.safetensors"}})", absl::StatusCode::kInvalidArgument,
       "tensor 'a' is mapped to s2.safetensors, which does not contain it"},
      {R"({"weight_map": {"a": "../etc/s1.safetensors"}})", absl::StatusCode::kInvalidArgument,
       "not a file name in this directory"},
      {R"({"weight_map": {"a": 3}})", absl::StatusCode::kInvalidArgument, "not a file name"},
  };
  for (const Case& c : cases) {
    Index(c.index);
    absl::StatusOr<std::unique_ptr<SafetensorsReader>> r = SafetensorsReader::OpenDir(dir_);
    ASSERT_FALSE(r.ok()) << c.index;
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.message));
  }
}

TEST_F(ShardedTest, TruncatedShardNamesIt) {
  std::string good = SerializeSafetensors({{"a", "F32", {4}, EncodeFloats({1, 2, 3, 4}, "F32")}});
  ASSERT_TRUE(WriteFile(dir_ + "/s1.safetensors", good.substr(0, good.size() - 1)).ok());
  Index(R"({"weight_map": {"a": "s1.safetensors"}})");
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> r = SafetensorsReader::OpenDir(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("s1.safetensors"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("tensor 'a'"));
}

TEST(SafetensorsReaderTest, EmptyDirectory) {
  const std::string dir = testing::MakeTempDir("reader_empty");
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> r = SafetensorsReader::OpenDir(dir);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no model.safetensors"));
}

TEST(SafetensorsReaderTest, GoldenShardedCheckpoint) {
  // Written by transformers' save_pretrained with a small max_shard_size.
  absl::StatusOr<std::unique_ptr<SafetensorsReader>> r =
      SafetensorsReader::OpenDir("tests/data/golden/llama_tied_llama3");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->Files().size(), 11u);
  absl::StatusOr<TensorView> t = (*r)->Find("model.layers.1.mlp.down_proj.weight");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->dtype, DType::kBF16);
  EXPECT_EQ(t->NumElements(), 96 * 192);
  EXPECT_FALSE((*r)->Contains("lm_head.weight"));  // tied
}

}  // namespace
}  // namespace memshare::engine::model
