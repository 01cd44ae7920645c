#include "engine/id_text_codec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

using ::testing::HasSubstr;

TEST(IdTextCodecTest, PromptIsIds) {
  IdTextCodec codec(512, {2});
  auto ids = codec.EncodePrompt(" 1 17,42\n99\t3 ");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 17, 42, 99, 3}));
  EXPECT_TRUE(codec.EncodePrompt("")->empty());
  EXPECT_EQ(codec.eos_token_ids(), std::vector<int32_t>{2});
}

TEST(IdTextCodecTest, RejectsWordsAndOutOfRangeIds) {
  IdTextCodec codec(512, {});
  auto bad = codec.EncodePrompt("1 hello");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("prompt_text"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"hello\""));
  EXPECT_FALSE(codec.EncodePrompt("512").ok());
  EXPECT_FALSE(codec.EncodePrompt("-1").ok());
  EXPECT_THAT(std::string(codec.EncodeChat({{"user", "hi"}}).status().message()),
              HasSubstr("messages"));
}

TEST(IdTextCodecTest, StreamsIds) {
  IdTextCodec codec(512, {});
  auto stream = codec.NewStream({});
  EXPECT_EQ(stream->Append(12) + stream->Append(404), " 12 404");
  EXPECT_EQ(stream->Flush(), "");
  EXPECT_EQ(codec.TokenPiece(7), " 7");
}

}  // namespace
}  // namespace memshare::engine
