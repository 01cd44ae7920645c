#include "engine/tokenizer/internal/normalizer.h"

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

std::string Apply(const Json& config, std::string text) {
  auto n = Normalizer::FromJson(config);
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return "";
  EXPECT_TRUE((*n)->Normalize(&text).ok());
  return text;
}

TEST(NormalizerTest, UnicodeForms) {
  EXPECT_EQ(Apply({{"type", "NFC"}}, "e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(Apply({{"type", "NFD"}}, "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(Apply({{"type", "NFKC"}}, "\xEF\xAC\x81"), "fi");  // ﬁ ligature
  // Conjoining jamo compose into a syllable.
  EXPECT_EQ(Apply({{"type", "NFC"}}, "\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");
}

TEST(NormalizerTest, SentencePieceStyleSequence) {
  const Json seq = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}};
  EXPECT_EQ(Apply(seq, "a b"),
            "\xE2\x96\x81"
            "a\xE2\x96\x81"
            "b");
  EXPECT_EQ(Apply(seq, ""), "");  // Prepend leaves empty text alone
}

TEST(NormalizerTest, OthersAndErrors) {
  EXPECT_EQ(Apply({{"type", "Lowercase"}}, "HeLLo \xC3\x89"), "hello \xC3\xA9");
  EXPECT_EQ(Apply({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}, "  x y \n"),
            "x y");
  EXPECT_EQ(
      Apply({{"type", "Replace"}, {"pattern", {{"Regex", "\\d+"}}}, {"content", "#"}}, "a12b3"),
      "a#b#");
  EXPECT_EQ(Normalizer::FromJson({{"type", "Precompiled"}}).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Normalizer::FromJson({{"type", "Prepend"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Normalizer::FromJson(Json::array()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::tokenizer::internal
