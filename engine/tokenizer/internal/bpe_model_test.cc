#include "engine/tokenizer/internal/bpe_model.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

BpeModel::Options Base() {
  BpeModel::Options o;
  int id = 0;
  for (const char* t : {"a", "b", "c", "d", "ab", "bc", "abc", "cd", "abcd"}) o.vocab[t] = id++;
  return o;
}

std::vector<int32_t> Enc(const BpeModel& m, const std::string& word) {
  std::vector<int32_t> ids;
  m.Encode(word, &ids);
  return ids;
}

TEST(BpeModelTest, LowestRankMergesFirstAndTiesGoLeft) {
  BpeModel::Options o = Base();
  o.merges = {{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"c", "d"}};
  auto m = BpeModel::Create(std::move(o));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Enc(**m, "abc"), (std::vector<int32_t>{6}));      // b+c, then a+bc
  EXPECT_EQ(Enc(**m, "abcd"), (std::vector<int32_t>{6, 3}));  // bc before cd
  EXPECT_EQ(Enc(**m, "abab"), (std::vector<int32_t>{4, 4}));
  EXPECT_EQ(Enc(**m, "cdcd"), (std::vector<int32_t>{7, 7}));
  // Cached result is identical.
  EXPECT_EQ(Enc(**m, "abcd"), (std::vector<int32_t>{6, 3}));
}

TEST(BpeModelTest, IgnoreMergesTakesWholeWords) {
  BpeModel::Options o = Base();
  o.merges = {{"a", "b"}, {"c", "d"}};
  o.ignore_merges = true;
  auto m = BpeModel::Create(std::move(o));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(Enc(**m, "abcd"), (std::vector<int32_t>{8}));  // in vocab, though no merge path
  EXPECT_EQ(Enc(**m, "abdc"), (std::vector<int32_t>{4, 3, 2}));
}

TEST(BpeModelTest, UnknownCharacters) {
  BpeModel::Options o = Base();
  o.vocab["<unk>"] = 20;
  o.unk_id = 20;
  o.fuse_unk = true;
  auto fused = BpeModel::Create(o);
  ASSERT_TRUE(fused.ok());
  EXPECT_EQ(Enc(**fused, "axyb"), (std::vector<int32_t>{0, 20, 1}));
  o.fuse_unk = false;
  auto plain = BpeModel::Create(o);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(Enc(**plain, "axyb"), (std::vector<int32_t>{0, 20, 20, 1}));
  // Without an unknown token the character is dropped.
  auto none = BpeModel::Create(Base());
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(Enc(**none, "axb"), (std::vector<int32_t>{0, 1}));
}

TEST(BpeModelTest, ByteFallback) {
  BpeModel::Options o = Base();
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    o.vocab[name] = 100 + b;
  }
  o.byte_fallback = true;
  auto m = BpeModel::Create(std::move(o));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(Enc(**m, "a\xC3\xA9"), (std::vector<int32_t>{0, 100 + 0xC3, 100 + 0xA9}));
}

TEST(BpeModelTest, BadMergesAndIds) {
  BpeModel::Options o = Base();
  o.merges = {{"a", "z"}};
  EXPECT_EQ(BpeModel::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Base();
  o.merges = {{"b", "d"}};  // "bd" is not in the vocab
  EXPECT_EQ(BpeModel::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Base();
  o.vocab["neg"] = -1;
  EXPECT_EQ(BpeModel::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::tokenizer::internal
