// The memshare binary end to end: flags, exit codes, the text on stdout and
// the summary on stderr, on a golden checkpoint (no tokenizer: token ids in
// and out) whose greedy tokens transformers recorded.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `memshare <args>` with stderr captured into a file.
Result RunCli(const std::string& args, const std::string& stdin_text = "") {
  const std::string err_path = absl::StrCat(::testing::TempDir(), "/memshare_err.txt");
  const std::string in_path = absl::StrCat(::testing::TempDir(), "/memshare_in.txt");
  std::ofstream(in_path) << stdin_text;
  const std::string cmd =
      absl::StrCat("engine/cli/memshare ", args, " <", in_path, " 2>", err_path);
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::stringstream err;
  err << std::ifstream(err_path).rdbuf();
  r.err = err.str();
  return r;
}

TEST(MemshareCliTest, GreedyOutputOfAGoldenCheckpoint) {
  std::ifstream file("tests/data/golden/qwen2_bias/golden.json");
  ASSERT_TRUE(file);
  std::stringstream text;
  text << file.rdbuf();
  const nlohmann::json golden = nlohmann::json::parse(text.str())["prompts"][0];
  std::string prompt, expected;
  for (int t : golden["prompt"]) absl::StrAppend(&prompt, prompt.empty() ? "" : " ", t);
  for (int t : golden["tokens"]) absl::StrAppend(&expected, " ", t);
  const Result r = RunCli(absl::StrCat("generate --model tests/data/golden/qwen2_bias --prompt '",
                                       prompt, "' --max-tokens ", golden["tokens"].size(),
                                       " --ignore-eos --threads 1 --kv-cache-mib 4"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expected + "\n");
  EXPECT_THAT(r.err, HasSubstr("[memshare] loading"));
  EXPECT_THAT(r.err, HasSubstr("no tokenizer"));
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat("generated ", golden["tokens"].size(), " tokens")));
  EXPECT_THAT(r.err, HasSubstr("tok/s"));
  EXPECT_THAT(r.err, HasSubstr("KV blocks peak"));
  EXPECT_THAT(r.err, HasSubstr("finish length"));
}

TEST(MemshareCliTest, MemShareOnPrintsItsCounters) {
  const Result r = RunCli(
      "generate --model tests/data/golden/qwen3_qknorm --prompt '1 2 3 4 5 6 7 8' --memshare on "
      "--max-tokens 120 --ignore-eos --threads 1 --block-size 4 --kv-cache-mib 4 --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("shared by MemShare"));
  EXPECT_THAT(r.err, HasSubstr("bytes saved"));
  EXPECT_THAT(r.err, HasSubstr("MemShare"));
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("[memshare] loading")));  // --quiet
}

TEST(MemshareCliTest, HelpAndUsage) {
  Result r = RunCli("generate --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--memshare on|off"));
  EXPECT_THAT(r.out, HasSubstr("--temperature"));
  r = RunCli("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("generate"));
  r = RunCli("serve");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command \"serve\""));
}

TEST(MemshareCliTest, BadInputIsAClearError) {
  const std::string model = "generate --model tests/data/golden/qwen2_bias --kv-cache-mib 4 ";
  Result r = RunCli(model + "--prompt '1 2' --top-p 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("top_p: must be in (0, 1]"));
  r = RunCli(model + "--prompt '1 2' --max-tokens many");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--max-tokens: expects an integer"));
  r = RunCli(model + "--prompt 'hello'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("prompt_text"));
  r = RunCli(model + "--prompt ' '");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("prompt"));
  std::string long_prompt;
  for (int i = 0; i < 600; ++i) absl::StrAppend(&long_prompt, " 5");
  r = RunCli(model + "--prompt '" + long_prompt + "'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("prompt: 600 tokens is longer than the limit"));
  r = RunCli("generate --model /nonexistent --prompt '1'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("config.json"));
}

}  // namespace
