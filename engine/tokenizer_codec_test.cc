#include "engine/tokenizer_codec.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

using ::testing::HasSubstr;

constexpr char kTinyReasoner[] = "assets/models/tiny-reasoner";

std::string Decode(const TextCodec& codec, const std::vector<int32_t>& ids) {
  auto stream = codec.NewStream({});
  std::string text;
  for (int32_t id : ids) text += stream->Append(id);
  return text + stream->Flush();
}

TEST(TokenizerCodecTest, TinyReasonerChatPromptMatchesTransformers) {
  auto codec = TokenizerCodec::Create({kTinyReasoner});
  ASSERT_TRUE(codec.ok()) << codec.status();
  EXPECT_TRUE((*codec)->has_chat_template());
  // generation_config.json: [1052, 1050]; config.json: 1052.
  EXPECT_EQ((*codec)->eos_token_ids(), (std::vector<int32_t>{1052, 1050}));

  // The held-out records hold transformers' chat-template prompt ids and
  // greedy reply ids; the question text is the user turn of the prompt.
  std::ifstream file("tests/data/tiny_reasoner/hf_greedy_fp32.jsonl");
  ASSERT_TRUE(file);
  std::string line;
  ASSERT_TRUE(std::getline(file, line));
  nlohmann::json record = nlohmann::json::parse(line);
  const std::vector<int32_t> prompt_ids = record["prompt_ids"].get<std::vector<int32_t>>();
  const std::vector<int32_t> reply_ids = record["reply_ids"].get<std::vector<int32_t>>();

  // Recover the user text from the prompt ids: <|im_start|>user\n TEXT <|im_end|>...
  const std::string rendered = (*codec)->tokenizer().Decode(prompt_ids, false);
  const std::string head = "<|im_start|>user\n";
  const size_t end = rendered.find("<|im_end|>");
  ASSERT_EQ(rendered.rfind(head, 0), 0u) << rendered;
  const std::string question = rendered.substr(head.size(), end - head.size());

  auto chat = (*codec)->EncodeChat({{"user", question}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*chat, prompt_ids);

  // Streaming the reply gives the tokenizer's text, without <|im_end|>.
  const std::string text = Decode(**codec, reply_ids);
  EXPECT_EQ(text, (*codec)->tokenizer().Decode(reply_ids, true));
  EXPECT_THAT(text, HasSubstr("Final answer:"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("<|im_end|>")));
}

TEST(TokenizerCodecTest, PlainPromptAndPieces) {
  auto codec = TokenizerCodec::Create({kTinyReasoner});
  ASSERT_TRUE(codec.ok());
  auto ids = (*codec)->EncodePrompt("Wait, let me check.");
  ASSERT_TRUE(ids.ok());
  std::string pieces;
  for (int32_t id : *ids) pieces += (*codec)->TokenPiece(id);
  EXPECT_EQ(pieces, "Wait, let me check.");
  EXPECT_EQ(Decode(**codec, *ids), "Wait, let me check.");
}

TEST(TokenizerCodecTest, ErrorsNameTheField) {
  EXPECT_EQ(TokenizerCodec::Create({"/nonexistent"}).status().code(), absl::StatusCode::kNotFound);
  auto codec = TokenizerCodec::Create({kTinyReasoner});
  ASSERT_TRUE(codec.ok());
  auto bad = (*codec)->EncodePrompt("\xff\xfe");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("prompt_text"));
  auto role = (*codec)->EncodeChat({{"wizard", "x"}});
  ASSERT_FALSE(role.ok());
  EXPECT_EQ(role.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(role.status().message()), HasSubstr("messages"));
}

}  // namespace
}  // namespace memshare::engine
