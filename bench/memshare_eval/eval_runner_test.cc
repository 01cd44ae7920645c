// The evaluation runner on the bundled tiny reasoner, two held-out
// problems: what it measures is consistent, MemShare off measures no
// saving, and bad setups are refused.
#include "bench/memshare_eval/eval_runner.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::bench {
namespace {

using ::testing::HasSubstr;

std::vector<HeldoutProblem> TwoProblems() {
  auto all = LoadHeldout("tests/data/tiny_reasoner/heldout.jsonl", 4);
  EXPECT_TRUE(all.ok()) << all.status();
  // Problems 2 and 3: the shortest of the first four.
  return {(*all)[2], (*all)[3]};
}

EngineSetup SmallSetup() {
  EngineSetup setup;
  setup.threads = 2;
  setup.max_num_seqs = 2;
  return setup;
}

TEST(EvalRunnerTest, MemShareOffAnswersAndSavesNothing) {
  const std::vector<HeldoutProblem> problems = TwoProblems();
  EvalConfig off;
  off.memshare = false;
  auto r = RunEval(SmallSetup(), off, problems);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num_problems, 2);
  EXPECT_EQ(r->num_failed, 0);
  EXPECT_EQ(r->num_correct, 2);
  EXPECT_DOUBLE_EQ(r->accuracy(), 1.0);
  ASSERT_EQ(r->problems.size(), 2u);
  int64_t tokens = 0;
  for (size_t i = 0; i < 2; ++i) {
    const ProblemOutcome& p = r->problems[i];
    EXPECT_EQ(p.id, problems[i].id);
    EXPECT_THAT(p.text, HasSubstr("Final answer:"));
    EXPECT_EQ(p.predicted, p.answer);
    EXPECT_EQ(p.finish_reason, engine::FinishReason::kStop);
    EXPECT_GT(p.prompt_tokens, 40);
    EXPECT_GT(p.completion_tokens, 100);
    // Prompt and reply in blocks of the setup's size (the last token is
    // sampled, not stored).
    const int32_t bs = SmallSetup().block_size;
    const int32_t stored = p.prompt_tokens + p.completion_tokens - 1;
    EXPECT_EQ(p.peak_logical_blocks, (stored + bs - 1) / bs);
    EXPECT_EQ(p.peak_physical_blocks, p.peak_logical_blocks);
    tokens += p.completion_tokens;
  }
  EXPECT_EQ(r->generated_tokens, tokens);
  EXPECT_EQ(r->request_saved(), 0);
  EXPECT_EQ(r->pool_saved_at_peak(), 0);
  EXPECT_EQ(r->pool_mean_saved(), 0);
  EXPECT_EQ(r->pool_physical_step_sum, r->pool_logical_step_sum);
  EXPECT_GT(r->pool_mean_logical(), 0);
  EXPECT_LT(r->pool_mean_logical(), r->pool_peak_logical);  // the pool fills and drains
  EXPECT_EQ(r->dedup_steps, 0);
  EXPECT_EQ(r->dedup_phase_steps, 0);
  EXPECT_EQ(r->dedup_seconds, 0);
  // Both requests run together: the pool's logical peak is both requests'
  // peaks at most, and more than either alone.
  EXPECT_LE(r->pool_peak_logical, r->request_peak_logical);
  EXPECT_GT(r->pool_peak_logical,
            std::max(r->problems[0].peak_logical_blocks, r->problems[1].peak_logical_blocks));
  EXPECT_GE(r->steps, tokens / 2);
  EXPECT_GT(r->step_seconds, 0);
  EXPECT_GT(r->wall_seconds, 0);
  EXPECT_GT(r->tokens_per_second(), 0);
}

TEST(EvalRunnerTest, MemShareOnRunsTheFunnel) {
  const std::vector<HeldoutProblem> problems = TwoProblems();
  EvalConfig on;
  on.memshare = true;
  on.tau_kv = 0.5f;
  on.tau_lex = 0.2f;
  on.min_block_token_overlap = 0.5f;
  on.layer_groups = 2;
  auto r = RunEval(SmallSetup(), on, problems);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num_failed, 0);
  EXPECT_GE(r->dedup_steps, 8);  // finished reasoning steps were indexed
  EXPECT_GT(r->dedup_phase_steps, 0);
  EXPECT_GT(r->dedup_seconds, 0);
  EXPECT_LE(r->dedup_rejected, r->dedup_verified);
  EXPECT_LE(r->dedup_remapped, r->dedup_verified - r->dedup_rejected);
  EXPECT_LE(r->request_peak_physical, r->request_peak_logical);
  EXPECT_EQ(r->request_peak_physical<r->request_peak_logical, r->dedup_remapped> 0);
  // Sharing shows in the pool's mean only once blocks are shared.
  EXPECT_LE(r->pool_physical_step_sum, r->pool_logical_step_sum);
  EXPECT_EQ(r->pool_mean_saved() > 0, r->dedup_remapped > 0);
  for (const ProblemOutcome& p : r->problems) {
    // Two layer groups: every block counted once per group.
    EXPECT_EQ(p.peak_logical_blocks % 2, 0);
    const int32_t bs = SmallSetup().block_size;
    EXPECT_EQ(p.peak_logical_blocks,
              2 * ((p.prompt_tokens + p.completion_tokens - 1 + bs - 1) / bs));
  }
}

TEST(EvalRunnerTest, RefusesBadSetups) {
  const std::vector<HeldoutProblem> problems = TwoProblems();
  EngineSetup tpu = SmallSetup();
  tpu.device = "tpu";
  EXPECT_EQ(RunEval(tpu, {}, problems).status().code(), absl::StatusCode::kInvalidArgument);
  EvalConfig groups;
  groups.layer_groups = 0;
  auto r = RunEval(SmallSetup(), groups, problems);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("layer_groups"));
  EngineSetup tokens = SmallSetup();
  tokens.max_tokens = 0;
  EXPECT_EQ(RunEval(tokens, {}, problems).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::bench
