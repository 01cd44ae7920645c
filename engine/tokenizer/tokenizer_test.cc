#include "engine/tokenizer/tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/tokenizer/test_tokenizers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::tokenizer {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<Tokenizer> Make(const json& tokenizer, const json& config) {
  Tokenizer::Options options;
  options.tokenizer_json = tokenizer.dump();
  options.tokenizer_config_json = config.dump();
  auto t = Tokenizer::Create(options);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

absl::Status LoadStatus(const std::string& tokenizer_json, const std::string& config_json = "") {
  Tokenizer::Options options;
  options.tokenizer_json = tokenizer_json;
  options.tokenizer_config_json = config_json;
  return Tokenizer::Create(options).status();
}

std::vector<int32_t> Enc(const Tokenizer& t, const std::string& text, bool special = true) {
  auto ids = t.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

class ByteLevelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = Make(testing::ByteLevelTokenizerJson(), testing::ByteLevelConfigJson());
    ASSERT_NE(tok_, nullptr);
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(ByteLevelTest, MergesApplyInRankOrder) {
  EXPECT_THAT(Enc(*tok_, "hello"), ElementsAre(261));
  EXPECT_THAT(Enc(*tok_, " the"), ElementsAre(258));
  EXPECT_THAT(Enc(*tok_, "the"), ElementsAre('t', 257));
  // "b c" outranks "a b", so "abc" is a + bc, not ab + c.
  EXPECT_THAT(Enc(*tok_, "abc"), ElementsAre('a', 263));
  EXPECT_THAT(Enc(*tok_, "ab"), ElementsAre(264));
}

TEST_F(ByteLevelTest, MultiByteCharactersAreBytesUnlessMerged) {
  // 你 has merges; 好 (E5 A5 BD) does not.
  EXPECT_THAT(Enc(*tok_, "\xE4\xBD\xA0\xE5\xA5\xBD"), ElementsAre(266, 0xE5, 0xA5, 0xBD));
  EXPECT_EQ(tok_->Decode({266, 0xE5, 0xA5, 0xBD}, false), "\xE4\xBD\xA0\xE5\xA5\xBD");
  EXPECT_EQ(tok_->TokenPiece(265), "\xE4\xBD");
  EXPECT_EQ(tok_->TokenPiece(266), "\xE4\xBD\xA0");
  EXPECT_EQ(tok_->TokenPiece(258), " the");
  EXPECT_EQ(tok_->IdToToken(258), "\xC4\xA0the");  // "Ġthe"
}

TEST_F(ByteLevelTest, SplitRegexIsAppliedAsWritten) {
  // \s+(?!\S) leaves the last space to the word: "  hello" -> " ", " hello".
  EXPECT_THAT(Enc(*tok_, "  hello"), ElementsAre(' ', 267));
  // \p{N} splits digits one by one; ASCII punctuation run with newline.
  EXPECT_THAT(Enc(*tok_, "42!?\n"), ElementsAre('4', '2', '!', '?', '\n'));
  // Case-insensitive contractions are their own words.
  EXPECT_THAT(Enc(*tok_, "it'LL"), ElementsAre('i', 't', '\'', 'L', 'L'));
}

TEST_F(ByteLevelTest, SpecialAndAddedTokensInsideText) {
  EXPECT_THAT(Enc(*tok_, "<|im_start|>user\nhi<|im_end|>"),
              ElementsAre(301, 'u', 's', 'e', 'r', '\n', 'h', 'i', 302));
  EXPECT_THAT(Enc(*tok_, "<think>x</think>"), ElementsAre(303, 'x', 304));
  // Leftmost-longest: the longer token wins where both start.
  EXPECT_THAT(Enc(*tok_, "a<|endoftext|>"), ElementsAre('a', 300));
  // Near misses are text.
  EXPECT_THAT(Enc(*tok_, "<|im_end"), ElementsAre('<', '|', 'i', 'm', '_', 'e', 'n', 'd'));
  // Byte-level post-processor adds nothing.
  EXPECT_THAT(Enc(*tok_, "hello", true), ElementsAre(261));
}

TEST_F(ByteLevelTest, NfcNormalizationBeforeBpe) {
  // e + COMBINING ACUTE ACCENT becomes U+00E9 (C3 A9).
  EXPECT_THAT(Enc(*tok_, "e\xCC\x81"), ElementsAre(0xC3, 0xA9));
  EXPECT_EQ(tok_->Decode(Enc(*tok_, "e\xCC\x81"), false), "\xC3\xA9");
}

TEST_F(ByteLevelTest, SpecialIdsAndConfigTokens) {
  EXPECT_TRUE(tok_->IsSpecial(302));
  EXPECT_FALSE(tok_->IsSpecial(303));
  EXPECT_FALSE(tok_->IsSpecial(-5));
  EXPECT_EQ(tok_->eos_id(), 302);
  EXPECT_EQ(tok_->pad_id(), 300);
  EXPECT_EQ(tok_->bos_id(), std::nullopt);
  EXPECT_EQ(tok_->vocab_size(), 305);
  EXPECT_EQ(tok_->TokenToId("<think>"), 303);
  EXPECT_EQ(tok_->TokenToId("he"), 257);
  EXPECT_EQ(tok_->TokenToId("nope"), std::nullopt);
  const std::vector<int32_t> ids = {301, 261, 303, 304, 302};
  EXPECT_EQ(tok_->Decode(ids, false), "<|im_start|>hello<think></think><|im_end|>");
  EXPECT_EQ(tok_->Decode(ids, true), "hello<think></think>");
}

TEST_F(ByteLevelTest, DecodeSkipsIdsWithoutToken) {
  // 290..299 are a hole between the vocabulary and the added tokens.
  EXPECT_EQ(tok_->Decode({-1, 261, 295, 100000, 302}, false), "hello<|im_end|>");
  EXPECT_EQ(tok_->TokenPiece(295), "");
  EXPECT_EQ(tok_->IdToToken(295), std::nullopt);
}

TEST_F(ByteLevelTest, DecodeReplacesBrokenUtf8) {
  // A lone continuation byte, and a character cut short at the end.
  EXPECT_EQ(tok_->Decode({'a', 0xA0, 'b', 265}, false),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
}

TEST_F(ByteLevelTest, RoundTripsLongWhitespaceAndMixedText) {
  const std::string spaces(100000, ' ');
  EXPECT_EQ(tok_->Decode(Enc(*tok_, spaces), false), spaces);
  const std::string mixed =
      "Hello,\tworld!\r\n\n  \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80 123456 it's "
      "<think>ok</think>";
  EXPECT_EQ(tok_->Decode(Enc(*tok_, mixed), false), mixed);
}

TEST_F(ByteLevelTest, RejectsInvalidUtf8Input) {
  auto ids = tok_->Encode("ab\xFFz", true);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("offset 2"));
  EXPECT_FALSE(tok_->Encode("\xED\xA0\x80", true).ok());  // a surrogate
}

TEST_F(ByteLevelTest, ConcurrentEncodesAgree) {
  const std::string text = "the hello world <|im_end|> abc \xE4\xBD\xA0 42";
  const std::vector<int32_t> want = Enc(*tok_, text);
  std::vector<std::thread> threads;
  std::vector<bool> ok(4, true);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto ids = tok_->Encode(text + std::to_string(i % 7), false);
        if (!ids.ok() || std::vector<int32_t>(ids->begin(), ids->begin() + want.size()) != want) {
          ok[t] = false;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (bool b : ok) EXPECT_TRUE(b);
}

class ByteFallbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = Make(testing::ByteFallbackTokenizerJson(), testing::ByteFallbackConfigJson());
    ASSERT_NE(tok_, nullptr);
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(ByteFallbackTest, PrependReplaceAndMerges) {
  EXPECT_THAT(Enc(*tok_, "hello world"), ElementsAre(1, 271, 276));
  EXPECT_THAT(Enc(*tok_, "hello world", false), ElementsAre(271, 276));
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
}

TEST_F(ByteFallbackTest, UnknownCharactersBecomeBytes) {
  // 你 = E4 BD A0 -> <0xE4><0xBD><0xA0> = 3 + byte.
  EXPECT_THAT(Enc(*tok_, "hello \xE4\xBD\xA0"),
              ElementsAre(1, 271, 259, 3 + 0xE4, 3 + 0xBD, 3 + 0xA0));
  const std::vector<int32_t> ids = Enc(*tok_, "hello \xE4\xBD\xA0");
  EXPECT_EQ(tok_->Decode(ids, true), "hello \xE4\xBD\xA0");
  // The leading-space strip applies to the text's first character only.
  EXPECT_EQ(tok_->Decode(ids, false), "<s> hello \xE4\xBD\xA0");
  EXPECT_EQ(tok_->TokenPiece(271), " hello");
  EXPECT_EQ(tok_->TokenPiece(3 + 0xE4), "\xE4");
}

TEST_F(ByteFallbackTest, SpecialTokensInsideTextGetTheirOwnPrefix) {
  // Each piece between added tokens is normalized on its own, as in HF.
  EXPECT_THAT(Enc(*tok_, "hello</s>world", false), ElementsAre(271, 2, 276));
}

TEST_F(ByteFallbackTest, UnknownTokenWithoutByteFallbackIsFused) {
  json t = testing::ByteFallbackTokenizerJson();
  t["model"]["byte_fallback"] = false;
  auto tok = Make(t, testing::ByteFallbackConfigJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "hello \xE4\xBD\xA0\xE5\xA5\xBD"), ElementsAre(1, 271, 259, 0));
}

TEST_F(ByteFallbackTest, LlamaConfigControlsBosAndEos) {
  json config = testing::ByteFallbackConfigJson();
  config["add_bos_token"] = false;
  config["add_eos_token"] = true;
  auto tok = Make(testing::ByteFallbackTokenizerJson(), config);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Enc(*tok, "hello"), ElementsAre(271, 2));
}

TEST(TokenizerLoadTest, FromDirectoryReadsBothFiles) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/bytelevel";
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  std::ofstream(dir + "/tokenizer.json") << testing::ByteLevelTokenizerJson().dump();
  std::ofstream(dir + "/tokenizer_config.json") << testing::ByteLevelConfigJson().dump();
  auto tok = Tokenizer::FromDirectory(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->eos_id(), 302);
  EXPECT_THAT((*tok)->config_json(), HasSubstr("chat_template"));

  EXPECT_EQ(Tokenizer::FromDirectory(dir + "/missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenizerLoadTest, MalformedFilesAreClearErrors) {
  const json good = testing::ByteLevelTokenizerJson();
  auto code = [](const absl::Status& s) { return s.code(); };
  using absl::StatusCode;

  absl::Status s = LoadStatus("{\"model\": ");
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tokenizer.json is not valid JSON"));

  EXPECT_EQ(code(LoadStatus("[1, 2]")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(LoadStatus("")), StatusCode::kInvalidArgument);

  json t = good;
  t.erase("model");
  s = LoadStatus(t.dump());
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("\"model\""));

  t = good;
  t["model"]["type"] = "WordPiece";
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kUnimplemented);

  t = good;
  t["model"]["vocab"]["zzz"] = -3;
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  t = good;
  t["model"]["vocab"]["zzz"] = "seven";
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  t = good;
  t["model"]["merges"].push_back({"q", "no-such-token"});
  s = LoadStatus(t.dump());
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not in the vocab"));

  t = good;
  t["model"]["merges"].push_back("three part merge");
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  t = good;
  t["added_tokens"][0]["id"] = "300";
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  t = good;
  t["added_tokens"][0]["content"] = "";
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  t = good;
  t["normalizer"] = {{"type", "BertNormalizer"}};
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kUnimplemented);

  t = good;
  t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  s = LoadStatus(t.dump());
  EXPECT_EQ(code(s), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cannot compile regex"));

  t = good;
  t["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  t = good;
  t["decoder"] = nullptr;
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kUnimplemented);

  t = good;
  t["model"]["vocab"]["huge"] = int64_t{1} << 40;
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  t = good;
  t["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<nope>"}}}}}}};
  EXPECT_EQ(code(LoadStatus(t.dump())), StatusCode::kInvalidArgument);

  EXPECT_EQ(code(LoadStatus(good.dump(), "not json")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(LoadStatus(good.dump(), "[]")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(LoadStatus(good.dump(), R"({"eos_token": 5})")), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::tokenizer
