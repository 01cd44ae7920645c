#include "engine/tokenizer/internal/decoder.h"

#include "gtest/gtest.h"

namespace memshare::tokenizer::internal {
namespace {

TEST(DecoderTest, ByteLevel) {
  const Json config = {{"type", "ByteLevel"}};
  auto d = Decoder::FromJson(&config);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)->TokenBytes("\xC4\xA0the"), " the");           // Ġthe
  EXPECT_EQ((*d)->TokenBytes("\xC3\xA4\xC2\xBD"), "\xE4\xBD");  // half of 你
  // A token outside the alphabet stands for its own UTF-8.
  EXPECT_EQ((*d)->TokenBytes("<\xEF\xBD\x9CUser\xEF\xBD\x9C>"), "<\xEF\xBD\x9CUser\xEF\xBD\x9C>");
  EXPECT_EQ((*d)->strip_start(), 0);
}

TEST(DecoderTest, SentencePieceSequence) {
  const Json config = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  auto d = Decoder::FromJson(&config);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->TokenBytes("\xE2\x96\x81hello"), " hello");
  EXPECT_EQ((*d)->TokenBytes("<0xE4>"), "\xE4");
  EXPECT_EQ((*d)->TokenBytes("<0xZZ>"), "<0xZZ>");
  EXPECT_EQ((*d)->strip_start(), 1);
  std::string text = "  hi ";
  ApplyWholeTextStrip(**d, &text);
  EXPECT_EQ(text, " hi ");
}

TEST(DecoderTest, MetaspaceFirstToken) {
  const Json config = {
      {"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}};
  auto d = Decoder::FromJson(&config);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE((*d)->has_first_token_rule());
  EXPECT_EQ((*d)->TokenBytes("\xE2\x96\x81hi"), " hi");
  EXPECT_EQ((*d)->FirstTokenBytes("\xE2\x96\x81hi"), "hi");
}

TEST(DecoderTest, Errors) {
  EXPECT_EQ(Decoder::FromJson(nullptr).status().code(), absl::StatusCode::kUnimplemented);
  const Json wordpiece = {{"type", "WordPiece"}};
  EXPECT_EQ(Decoder::FromJson(&wordpiece).status().code(), absl::StatusCode::kUnimplemented);
  const Json regex = {{"type", "Replace"}, {"pattern", {{"Regex", "x"}}}, {"content", ""}};
  EXPECT_EQ(Decoder::FromJson(&regex).status().code(), absl::StatusCode::kUnimplemented);
  const Json strip = {{"type", "Strip"}, {"content", "ab"}, {"start", 1}, {"stop", 0}};
  EXPECT_EQ(Decoder::FromJson(&strip).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::tokenizer::internal
