#include "engine/tokenizer/internal/pre_tokenizer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

std::vector<std::string> Apply(const Json& config, const std::string& text, bool at_start = true) {
  auto p = PreTokenizer::FromJson(config);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {};
  std::vector<Piece> pieces = {{text, at_start}};
  EXPECT_TRUE((*p)->Apply(&pieces).ok());
  std::vector<std::string> out;
  for (const Piece& piece : pieces) out.push_back(piece.text);
  return out;
}

Json Split(const std::string& behavior, bool invert = false) {
  return {{"type", "Split"},
          {"pattern", {{"String", "-"}}},
          {"behavior", behavior},
          {"invert", invert}};
}

using V = std::vector<std::string>;

TEST(PreTokenizerTest, SplitBehaviors) {
  EXPECT_EQ(Apply(Split("Removed"), "a-b--c"), (V{"a", "b", "c"}));
  EXPECT_EQ(Apply(Split("Isolated"), "a-b--c"), (V{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(Apply(Split("MergedWithPrevious"), "a-b--c"), (V{"a-", "b-", "-", "c"}));
  EXPECT_EQ(Apply(Split("MergedWithNext"), "a-b--c"), (V{"a", "-b", "-", "-c"}));
  EXPECT_EQ(Apply(Split("Contiguous"), "a-b--c"), (V{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(Apply(Split("Removed", true), "a-b--c"), (V{"-", "-", "-"}));
}

TEST(PreTokenizerTest, ByteLevelMapsBytesAndOptionallySplits) {
  EXPECT_EQ(
      Apply({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}, "a b\n"),
      (V{"a\xC4\xA0"
         "b\xC4\x8A"}));  // aĠbĊ
  EXPECT_EQ(
      Apply({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}, "Hi there"),
      (V{"\xC4\xA0Hi", "\xC4\xA0there"}));
}

TEST(PreTokenizerTest, MetaspaceFirstScheme) {
  const Json m = {{"type", "Metaspace"},
                  {"replacement", "\xE2\x96\x81"},
                  {"prepend_scheme", "first"},
                  {"split", false}};
  EXPECT_EQ(Apply(m, "a b", true), (V{"\xE2\x96\x81"
                                      "a\xE2\x96\x81"
                                      "b"}));
  EXPECT_EQ(Apply(m, "a b", false), (V{"a\xE2\x96\x81"
                                       "b"}));
  const Json split = {{"type", "Metaspace"},
                      {"replacement", "\xE2\x96\x81"},
                      {"prepend_scheme", "always"},
                      {"split", true}};
  EXPECT_EQ(Apply(split, "a b", false), (V{"\xE2\x96\x81"
                                           "a",
                                           "\xE2\x96\x81"
                                           "b"}));
}

TEST(PreTokenizerTest, DigitsAndErrors) {
  EXPECT_EQ(Apply({{"type", "Digits"}, {"individual_digits", true}}, "a12"), (V{"a", "1", "2"}));
  EXPECT_EQ(Apply({{"type", "Digits"}, {"individual_digits", false}}, "a12"), (V{"a", "12"}));
  EXPECT_EQ(PreTokenizer::FromJson({{"type", "BertPreTokenizer"}}).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(
      PreTokenizer::FromJson({{"type", "Split"}, {"pattern", {{"Regex", "("}}}}).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PreTokenizer::FromJson({{"type", "Sequence"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::tokenizer::internal
