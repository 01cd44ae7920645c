#include "engine/cli/generate_args.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::cli {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<GenerateArgs> Parse(std::vector<std::string> args) {
  return ParseGenerateArgs(args);
}

std::string Error(std::vector<std::string> args) {
  auto r = Parse(std::move(args));
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

TEST(GenerateArgsTest, Defaults) {
  auto a = Parse({"--model", "/m", "--prompt", "hi"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->model_dir, "/m");
  EXPECT_EQ(a->prompt, "hi");
  EXPECT_EQ(a->sampling.temperature, 0.0f);  // greedy unless asked
  EXPECT_EQ(a->sampling.max_tokens, 256);
  EXPECT_EQ(a->memshare, MemShareParams::Mode::kOff);
  EXPECT_EQ(a->load_format, "auto");
  EXPECT_EQ(a->block_size, 8);
  EXPECT_TRUE(a->prefix_cache);
  EXPECT_TRUE(a->fuse_norms);
  EXPECT_TRUE(a->async_scheduling);
}

TEST(GenerateArgsTest, EveryFlagParses) {
  auto a = Parse({"--model=/m",
                  "--prompt-file",
                  "p.txt",
                  "--load-format",
                  "dummy",
                  "--memshare",
                  "on",
                  "--tau-lex",
                  "0.6",
                  "--tau-kv=0.2",
                  "--max-tokens",
                  "7",
                  "--temperature",
                  "0.7",
                  "--top-k",
                  "40",
                  "--top-p",
                  "0.9",
                  "--min-p",
                  "0.05",
                  "--repetition-penalty",
                  "1.1",
                  "--presence-penalty",
                  "0.5",
                  "--frequency-penalty",
                  "-0.5",
                  "--seed",
                  "42",
                  "--stop",
                  "A",
                  "--stop",
                  "B",
                  "--stop-token-id",
                  "3",
                  "--ignore-eos",
                  "--logprobs",
                  "2",
                  "--max-model-len",
                  "512",
                  "--block-size",
                  "8",
                  "--num-blocks",
                  "100",
                  "--kv-cache-mib",
                  "64",
                  "--layer-groups",
                  "2",
                  "--max-num-seqs",
                  "4",
                  "--max-batched-tokens",
                  "256",
                  "--threads",
                  "2",
                  "--no-prefix-cache",
                  "--no-fuse-norms",
                  "--no-async-scheduling",
                  "--quiet"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->prompt_file, "p.txt");
  EXPECT_EQ(a->load_format, "dummy");
  EXPECT_EQ(a->memshare, MemShareParams::Mode::kOn);
  EXPECT_FLOAT_EQ(*a->tau_lex, 0.6f);
  EXPECT_FLOAT_EQ(*a->tau_kv, 0.2f);
  EXPECT_EQ(a->sampling.max_tokens, 7);
  EXPECT_FLOAT_EQ(a->sampling.temperature, 0.7f);
  EXPECT_EQ(a->sampling.top_k, 40);
  EXPECT_FLOAT_EQ(a->sampling.top_p, 0.9f);
  EXPECT_FLOAT_EQ(a->sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(a->sampling.repetition_penalty, 1.1f);
  EXPECT_FLOAT_EQ(a->sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(a->sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(*a->sampling.seed, 42u);
  EXPECT_EQ(a->sampling.stop, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(a->sampling.stop_token_ids, (std::vector<int32_t>{3}));
  EXPECT_TRUE(a->sampling.ignore_eos);
  EXPECT_EQ(a->sampling.logprobs, 2);
  EXPECT_EQ(a->max_model_len, 512);
  EXPECT_EQ(a->block_size, 8);
  EXPECT_EQ(a->num_blocks, 100);
  EXPECT_EQ(a->kv_cache_mib, 64);
  EXPECT_EQ(a->layer_groups, 2);
  EXPECT_EQ(a->max_num_seqs, 4);
  EXPECT_EQ(a->max_batched_tokens, 256);
  EXPECT_EQ(a->threads, 2);
  EXPECT_FALSE(a->prefix_cache);
  EXPECT_FALSE(a->fuse_norms);
  EXPECT_FALSE(a->async_scheduling);
  EXPECT_TRUE(a->quiet);
}

TEST(GenerateArgsTest, ChatWithSystem) {
  auto a = Parse({"--model", "/m", "--chat", "--system", "be brief"});
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->chat);
  EXPECT_EQ(a->system_prompt, "be brief");
}

TEST(GenerateArgsTest, ErrorsNameTheFlag) {
  EXPECT_THAT(Error({"--prompt", "x"}), HasSubstr("--model"));
  EXPECT_THAT(Error({"--model", "/m"}), HasSubstr("exactly one"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--chat"}), HasSubstr("exactly one"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--system", "s"}), HasSubstr("--system"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--max-tokens", "lots"}),
              HasSubstr("--max-tokens: expects an integer, got \"lots\""));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--temperature", "hot"}),
              HasSubstr("--temperature"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--memshare", "maybe"}),
              HasSubstr("--memshare: must be on or off"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--load-format", "pt"}),
              HasSubstr("--load-format"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--seed", "-1"}), HasSubstr("--seed"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--block-size", "0"}),
              HasSubstr("--block-size: must be >= 1"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--threads", "-2"}), HasSubstr("--threads"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--device", "tpu"}), HasSubstr("--device"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--gpu-memory-utilization", "1.5"}),
              HasSubstr("--gpu-memory-utilization"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt"}), HasSubstr("--prompt needs a value"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--bogus"}),
              HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(Error({"--model", "/m", "--prompt", "x", "--chat=1"}), HasSubstr("takes no value"));
  EXPECT_THAT(Error({"--model", "/m", "positional"}), HasSubstr("unexpected argument"));
}

TEST(GenerateArgsTest, HelpSkipsChecksAndListsEveryFlag) {
  auto a = Parse({"--help"});
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->help);
  const std::string usage = GenerateUsage();
  for (const char* flag : {"--model DIR",
                           "--load-format",
                           "--prompt TEXT",
                           "--prompt-file FILE",
                           "--chat",
                           "--system",
                           "--memshare on|off",
                           "--tau-lex",
                           "--tau-kv",
                           "--max-tokens",
                           "--temperature",
                           "--top-k",
                           "--top-p",
                           "--min-p",
                           "--repetition-penalty",
                           "--presence-penalty",
                           "--frequency-penalty",
                           "--seed",
                           "--stop TEXT",
                           "--stop-token-id",
                           "--ignore-eos",
                           "--logprobs",
                           "--max-model-len",
                           "--block-size",
                           "--num-blocks",
                           "--kv-cache-mib",
                           "--layer-groups",
                           "--max-num-seqs",
                           "--max-batched-tokens",
                           "--threads",
                           "--no-prefix-cache",
                           "--quiet",
                           "--help"}) {
    EXPECT_THAT(usage, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace memshare::engine::cli
