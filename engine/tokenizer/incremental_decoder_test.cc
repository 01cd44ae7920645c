#include "engine/tokenizer/incremental_decoder.h"

#include <random>
#include <string>
#include <vector>

#include "engine/tokenizer/test_tokenizers.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace memshare::tokenizer {
namespace {

std::unique_ptr<Tokenizer> Make(const nlohmann::json& t, const nlohmann::json& c) {
  Tokenizer::Options options;
  options.tokenizer_json = t.dump();
  options.tokenizer_config_json = c.dump();
  auto tok = Tokenizer::Create(options);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(IncrementalDecoderTest, HoldsByteLevelCharacterSplitAcrossTokens) {
  auto tok = Make(testing::ByteLevelTokenizerJson(), testing::ByteLevelConfigJson());
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder d(tok.get(), {});
  EXPECT_EQ(d.Add(261), "hello");
  // 好 = E5 A5 BD as three byte tokens: nothing until the last one.
  EXPECT_EQ(d.Add(0xE5), "");
  EXPECT_EQ(d.pending_bytes(), 1u);
  EXPECT_EQ(d.Add(0xA5), "");
  EXPECT_EQ(d.Add(0xBD), "\xE5\xA5\xBD");
  EXPECT_EQ(d.pending_bytes(), 0u);
  // 你 as "E4 BD" + "A0"; then 😀 (F0 9F 98 80) byte by byte.
  EXPECT_EQ(d.Add(265), "");
  EXPECT_EQ(d.Add(0xA0), "\xE4\xBD\xA0");
  EXPECT_EQ(d.Add(0xF0), "");
  EXPECT_EQ(d.Add(0x9F), "");
  EXPECT_EQ(d.Add(0x98), "");
  EXPECT_EQ(d.Add(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.Flush(), "");
}

TEST(IncrementalDecoderTest, SpecialTokensSkippedOrKept) {
  auto tok = Make(testing::ByteLevelTokenizerJson(), testing::ByteLevelConfigJson());
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder skip(tok.get(), {.skip_special_tokens = true});
  EXPECT_EQ(skip.Add({303, 261, 304, 302}), "<think>hello</think>");
  IncrementalDecoder keep(tok.get(), {.skip_special_tokens = false});
  EXPECT_EQ(keep.Add({303, 261, 304, 302}), "<think>hello</think><|im_end|>");
  // Unknown ids are ignored.
  EXPECT_EQ(keep.Add({-7, 295, 999999}), "");
}

TEST(IncrementalDecoderTest, BrokenBytesBecomeReplacementCharacters) {
  auto tok = Make(testing::ByteLevelTokenizerJson(), testing::ByteLevelConfigJson());
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder d(tok.get(), {});
  EXPECT_EQ(d.Add(0xE4), "");
  // 'x' cannot continue E4: U+FFFD for E4 now, then x.
  EXPECT_EQ(d.Add('x'), "\xEF\xBF\xBDx");
  EXPECT_EQ(d.Add(0xA0), "\xEF\xBF\xBD");  // a lone continuation byte
  EXPECT_EQ(d.Add(265), "");
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");  // stream ended inside a character
}

TEST(IncrementalDecoderTest, ByteFallbackPiecesAndLeadingSpace) {
  auto tok = Make(testing::ByteFallbackTokenizerJson(), testing::ByteFallbackConfigJson());
  ASSERT_NE(tok, nullptr);
  // Generated after a prompt: "▁hello" keeps its space.
  IncrementalDecoder mid(tok.get(), {});
  EXPECT_EQ(mid.Add(271), " hello");
  EXPECT_EQ(mid.Add(259), " ");
  EXPECT_EQ(mid.Add(3 + 0xE4), "");
  EXPECT_EQ(mid.Add(3 + 0xBD), "");
  EXPECT_EQ(mid.Add(3 + 0xA0), "\xE4\xBD\xA0");
  // At the start of a text the decoder's Strip removes the first space.
  IncrementalDecoder start(tok.get(), {.skip_special_tokens = true, .at_text_start = true});
  EXPECT_EQ(start.Add(1), "");
  EXPECT_EQ(start.Add(271), "hello");
  EXPECT_EQ(start.Add(276), " world");
}

// Property: streaming any id sequence gives exactly Decode's text.
void CheckMatchesDecode(const Tokenizer& tok, int max_id, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 300; ++round) {
    std::vector<int32_t> ids(1 + rng() % 40);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % (max_id + 3)) - 1;
    for (bool skip : {false, true}) {
      IncrementalDecoder d(&tok, {.skip_special_tokens = skip, .at_text_start = true});
      std::string streamed;
      for (int32_t id : ids) streamed += d.Add(id);
      streamed += d.Flush();
      ASSERT_EQ(streamed, tok.Decode(ids, skip)) << "round " << round;
    }
  }
}

TEST(IncrementalDecoderTest, StreamEqualsDecodeByteLevel) {
  auto tok = Make(testing::ByteLevelTokenizerJson(), testing::ByteLevelConfigJson());
  ASSERT_NE(tok, nullptr);
  CheckMatchesDecode(*tok, tok->vocab_size(), 1);
}

TEST(IncrementalDecoderTest, StreamEqualsDecodeByteFallback) {
  auto tok = Make(testing::ByteFallbackTokenizerJson(), testing::ByteFallbackConfigJson());
  ASSERT_NE(tok, nullptr);
  CheckMatchesDecode(*tok, tok->vocab_size(), 2);
}

TEST(IncrementalDecoderTest, StreamOfEncodedTextReproducesIt) {
  auto tok = Make(testing::ByteLevelTokenizerJson(), testing::ByteLevelConfigJson());
  ASSERT_NE(tok, nullptr);
  const std::string text =
      "\xE4\xBD\xA0\xE5\xA5\xBD, hello \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9 "
      "\xC3\xA9t\xC3\xA9";
  auto ids = tok->Encode(text, false);
  ASSERT_TRUE(ids.ok());
  IncrementalDecoder d(tok.get(), {});
  std::string streamed;
  for (int32_t id : *ids) {
    const std::string delta = d.Add(id);
    // Every delta is whole characters.
    for (size_t i = 0; i < delta.size();) {
      const unsigned char c = delta[i];
      const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      ASSERT_LE(i + len, delta.size()) << "half a character emitted";
      i += len;
    }
    streamed += delta;
  }
  EXPECT_EQ(streamed + d.Flush(), text);
}

}  // namespace
}  // namespace memshare::tokenizer
