#include "engine/cli/generate_command.h"

#include <algorithm>
#include <sstream>

#include "engine/llm_engine.h"
#include "engine/testing/fake_backend.h"
#include "engine/testing/fake_text_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::cli {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<LlmEngine> MakeEngine() {
  FakeBackend::Options model;
  model.vocab_size = 64;
  model.num_blocks = 64;
  model.block_size = 4;
  LlmEngine::Parts parts;
  parts.backend = *FakeBackend::Create(model);
  parts.codec = std::make_unique<FakeTextCodec>();
  return *LlmEngine::Create({}, std::move(parts));
}

std::string Greedy(const std::string& prompt, int n) {
  FakeBackend::Options model;
  model.vocab_size = 64;
  auto backend = *FakeBackend::Create(model);
  std::vector<int32_t> history = *FakeTextCodec().EncodePrompt(prompt);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = backend->LogitsFor(history);
    const int32_t t = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    history.push_back(t);
    out.push_back(t);
  }
  return FakeTextCodec::Decode(out);
}

GenerateArgs Args(std::vector<std::string> argv) { return *ParseGenerateArgs(argv); }

TEST(GenerateCommandTest, PromptStreamsTextAndSummary) {
  auto engine = MakeEngine();
  std::istringstream in;
  std::ostringstream out, err;
  ASSERT_TRUE(RunGenerate(Args({"--model", "/x", "--prompt", "hello", "--max-tokens", "9"}),
                          *engine, 1000, {&in, &out, &err})
                  .ok());
  EXPECT_EQ(out.str(), Greedy("hello", 9) + "\n");
  EXPECT_THAT(err.str(), HasSubstr("prompt 5 tokens (0 cached), generated 9 tokens in"));
  EXPECT_THAT(err.str(), HasSubstr("finish length"));
  EXPECT_THAT(err.str(), HasSubstr("KV blocks peak 4 physical / 4 logical"));
}

TEST(GenerateCommandTest, PromptFromStdinAndLogprobs) {
  auto engine = MakeEngine();
  std::istringstream in("abc");
  std::ostringstream out, err;
  ASSERT_TRUE(RunGenerate(Args({"--model", "/x", "--prompt-file", "-", "--max-tokens", "3",
                                "--logprobs", "2"}),
                          *engine, 0, {&in, &out, &err})
                  .ok());
  EXPECT_EQ(out.str(), Greedy("abc", 3) + "\n");
  EXPECT_THAT(err.str(), HasSubstr("logprobs[2] token"));
}

TEST(GenerateCommandTest, BadValuesAndFilesAreErrors) {
  auto engine = MakeEngine();
  std::istringstream in;
  std::ostringstream out, err;
  absl::Status s = RunGenerate(Args({"--model", "/x", "--prompt", "abc", "--top-p", "0"}), *engine,
                               0, {&in, &out, &err});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("top_p"));
  s = RunGenerate(Args({"--model", "/x", "--prompt-file", "/nonexistent/p.txt"}), *engine, 0,
                  {&in, &out, &err});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--prompt-file"));
}

TEST(GenerateCommandTest, ChatKeepsTheConversation) {
  auto engine = MakeEngine();
  std::istringstream in("hi\nmore\n\n");
  std::ostringstream out, err;
  ASSERT_TRUE(RunGenerate(Args({"--model", "/x", "--chat", "--system", "sys", "--max-tokens", "4",
                                "--quiet"}),
                          *engine, 0, {&in, &out, &err})
                  .ok());
  const std::string first = Greedy("system sys user hi assistant ", 4);
  const std::string second =
      Greedy("system sys user hi assistant " + first + " user more assistant ", 4);
  EXPECT_EQ(out.str(), first + "\n" + second + "\n");
  const std::string log = err.str();
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 2);  // two summaries
}

TEST(GenerateCommandTest, FormatSummaryPricesSharedBlocks) {
  RunSummary run;
  run.usage.prompt_tokens = 12;
  run.usage.completion_tokens = 11;
  run.usage.kv_blocks_peak_physical = 5;
  run.usage.kv_blocks_peak_logical = 7;
  run.usage.shared_blocks = 2;
  run.total = absl::Seconds(2);
  run.first_token = absl::Seconds(1);
  run.finish_reason = FinishReason::kStop;
  EXPECT_EQ(FormatSummary(run, 100),
            "prompt 12 tokens (0 cached), generated 11 tokens in 2.000 s: 5.5 tok/s (first token "
            "1.000 s, decode 10.0 tok/s) | KV blocks peak 5 physical / 7 logical, 2 shared by "
            "MemShare, 200 bytes saved | finish stop");
}

}  // namespace
}  // namespace memshare::engine::cli
