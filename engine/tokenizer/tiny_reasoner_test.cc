// The repository's own model (assets/models/tiny-reasoner): its Qwen2-style
// byte-level tokenizer and ChatML template load and work end to end.
#include <cstdlib>
#include <string>

#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/incremental_decoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace memshare::tokenizer {
namespace {

std::string ModelDir() {
  return std::string(std::getenv("TEST_SRCDIR")) + "/" + std::getenv("TEST_WORKSPACE") +
         "/assets/models/tiny-reasoner";
}

TEST(TinyReasonerTest, PromptEncodesAndStreamsBack) {
  auto tok = Tokenizer::FromDirectory(ModelDir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto chat = ChatTemplate::FromDirectory(ModelDir());
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ((*chat)->family(), ChatTemplate::Family::kChatML);
  EXPECT_TRUE((*chat)->generation_opens_think());

  auto prompt = (*chat)->Render({{"user", "What is 12+7?", std::nullopt}}, {});
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(*prompt, "<|im_start|>user\nWhat is 12+7?<|im_end|>\n<|im_start|>assistant\n<think>\n");

  const auto im_start = (*tok)->TokenToId("<|im_start|>");
  const auto im_end = (*tok)->TokenToId("<|im_end|>");
  const auto think = (*tok)->TokenToId("<think>");
  ASSERT_TRUE(im_start && im_end && think);
  EXPECT_EQ((*tok)->eos_id(), im_end);
  EXPECT_TRUE((*tok)->IsSpecial(*im_end));

  auto ids = (*tok)->Encode(*prompt, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->front(), *im_start);
  EXPECT_EQ(ids->back(), 198);  // "\n" after <think>
  EXPECT_EQ((*ids)[ids->size() - 2], *think);
  EXPECT_EQ((*tok)->Decode(*ids, false), *prompt);

  IncrementalDecoder stream(tok->get(), {.skip_special_tokens = false});
  std::string text;
  for (int32_t id : *ids) text += stream.Add(id);
  EXPECT_EQ(text + stream.Flush(), *prompt);
}

}  // namespace
}  // namespace memshare::tokenizer
