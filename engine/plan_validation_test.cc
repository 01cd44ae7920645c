#include "engine/plan_validation.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

using ::testing::HasSubstr;

KvCacheSpec Spec(int groups, int block_size) {
  KvCacheSpec s;
  s.num_layer_groups = groups;
  s.group_layer_begin = SplitLayers(4, groups);
  s.num_blocks = 8;
  s.block_size = block_size;
  s.kv_heads_local = 1;
  s.head_dim = 8;
  return s;
}

PlanLimits Limits() {
  PlanLimits l;
  l.vocab_size = 100;
  l.max_positions = 64;
  l.max_positions_name = "max_model_len";
  l.backend_name = "the test backend";
  return l;
}

SequenceChunk Chunk(int start, std::vector<int32_t> tokens,
                    std::vector<std::vector<int32_t>> tables) {
  SequenceChunk c;
  c.seq_id = 9;
  c.start_pos = start;
  c.token_ids = std::move(tokens);
  c.block_tables = std::move(tables);
  return c;
}

SequenceChunk ViewChunk(int start, std::vector<int32_t> tokens,
                        std::vector<std::vector<int32_t>> tables,
                        std::vector<std::vector<int32_t>> hi,
                        std::vector<std::vector<int32_t>> shifts) {
  SequenceChunk c = Chunk(start, std::move(tokens), std::move(tables));
  c.block_tables_hi = std::move(hi);
  c.block_shifts = std::move(shifts);
  return c;
}

// Every rule refuses its case, naming the sequence and the field; the
// valid first chunk (which writes slots 0..2 of block 0) is never blamed.
TEST(ValidatePlanTest, RefusesEachBrokenRule) {
  const KvCacheSpec spec = Spec(1, 4);
  struct Case {
    SequenceChunk bad;
    const char* message;
  };
  const Case cases[] = {
      {Chunk(0, {1, 100}, {{1}}), "token_ids[1] = 100 outside the vocabulary [0, 100)"},
      {Chunk(0, {-1}, {{1}}), "token_ids[0] = -1"},
      {Chunk(0, {1, 2, 3, 4, 5}, {{1}}), "has 1 blocks; positions up to 4 need 2"},
      {Chunk(0, {1}, {{8}}), "block_tables[0][0] = 8 outside the pool [0, 8)"},
      {Chunk(0, {1}, {{-2}}), "outside the pool"},
      {Chunk(0, {1}, {{1}, {2}}), "2 block tables for 1 layer groups"},
      {Chunk(0, {}, {{1}}), "no tokens"},
      {Chunk(-1, {1}, {{1}}), "start_pos -1"},
      {Chunk(63, {1, 2}, {std::vector<int32_t>(16, 1)}), "exceed max_model_len (64)"},
      {Chunk(1, {7}, {{0}}), "another token of the step writes"},  // slot 1 of block 0
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 2}}, {{0, 0, 0}}),
       "block_tables_hi[0] / block_shifts[0] have 2 / 3 entries"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 2, 3}, {}}, {{0, 0, 0}}),
       "have 2 / 1 entries for 1 layer groups"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 2, 3}}, {{0, 4, 0}}), "block_shifts[0][1] = 4"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 2, 3}}, {{0, -1, 0}}), "block_shifts[0][1] = -1"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 8, 3}}, {{0, 1, 0}}), "block_tables_hi[0][1] = 8"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, -1, 3}}, {{0, 1, 0}}), "block_tables_hi[0][1] = -1"},
      {ViewChunk(6, {1}, {{1, 2}}, {{1, 1}}, {{0, 2}}), "is a shifted view but the step writes"},
      // A chunk that starts inside a view (not only one that appends to it).
      {ViewChunk(4, {1, 2, 3, 4, 5}, {{1, 2, 3}}, {{1, 1, 3}}, {{0, 2, 0}}),
       "logical block 1 of layer group 0 is a shifted view"},
  };
  for (const Case& c : cases) {
    StepPlan plan;
    plan.sequences.push_back(Chunk(0, {1, 2, 3}, {{0}}));
    plan.sequences.push_back(c.bad);
    plan.sequences.back().seq_id = 9;
    const absl::Status st = ValidatePlan(plan, spec, Limits());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.message));
    EXPECT_THAT(std::string(st.message()), HasSubstr("sequence 1 (seq_id 9)"));
  }
}

// Views that follow the rules pass: shift 0 entries need no valid hi, a
// group may have no views while another has, and the chunk writes past the
// views.
TEST(ValidatePlanTest, AcceptsValidViews) {
  const KvCacheSpec spec = Spec(2, 4);
  StepPlan plan;
  plan.sequences.push_back(ViewChunk(8, {1, 2, 3, 4, 5}, {{0, 1, 2, 3}, {4, 5, 6, 7}},
                                     {{0, 2, -1, -1}, {}}, {{0, 3, 0, 0}, {}}));
  EXPECT_TRUE(ValidatePlan(plan, spec, Limits()).ok()) << ValidatePlan(plan, spec, Limits());
  // A view in the group that had none, but at the block the chunk writes.
  plan.sequences[0].block_tables_hi[1] = {4, 5, 6, 7};
  plan.sequences[0].block_shifts[1] = {0, 0, 1, 0};
  const absl::Status st = ValidatePlan(plan, spec, Limits());
  EXPECT_THAT(std::string(st.message()), HasSubstr("logical block 2 of layer group 1"));
}

// A fed chunk (fed_row) has one token, whose id is not read (a placeholder
// outside the vocabulary passes), and names a row of the previous step that
// can be fed; without feedable rows (a backend that does not pipeline, or
// no previous step) none is accepted.
TEST(ValidatePlanTest, FedRows) {
  const KvCacheSpec spec = Spec(1, 4);
  PlanLimits l = Limits();
  StepPlan plan;
  plan.sequences.push_back(Chunk(3, {-1}, {{0}}));
  plan.sequences[0].fed_row = 1;
  const auto message = [&] { return std::string(ValidatePlan(plan, spec, l).message()); };
  EXPECT_THAT(message(), HasSubstr("fed_row 1 but the test backend has no previous step"));
  const std::vector<bool> rows = {true, true, false};
  l.feedable_rows = &rows;
  EXPECT_TRUE(ValidatePlan(plan, spec, l).ok()) << message();
  plan.sequences[0].fed_row = 2;
  EXPECT_THAT(message(),
              HasSubstr("fed_row 2 is not a row the previous step sampled on the device"));
  plan.sequences[0].fed_row = 3;
  EXPECT_THAT(message(), HasSubstr("(it had 3 rows)"));
  plan.sequences[0] = Chunk(2, {-1, -1}, {{0}});
  plan.sequences[0].fed_row = 0;
  EXPECT_THAT(message(), HasSubstr("fed_row 0 with 2 tokens (one only)"));
  plan.sequences[0].fed_row = -1;
  EXPECT_THAT(message(), HasSubstr("token_ids[0] = -1 outside the vocabulary"));
  plan.sequences[0] = Chunk(3, {5}, {{0}});
  plan.sequences[0].sampling = DeviceSampling{};
  plan.sequences[0].sampling->count_fed_token = true;
  EXPECT_THAT(message(), HasSubstr("count_fed_token without fed_row"));
  plan.sequences[0].fed_row = 0;
  EXPECT_TRUE(ValidatePlan(plan, spec, l).ok()) << message();
}

TEST(ValidatePlanTest, SlidingWindowAndEmptyPlan) {
  const KvCacheSpec spec = Spec(1, 4);
  PlanLimits l = Limits();
  l.sliding_window = 6;
  StepPlan plan;
  plan.sequences.push_back(Chunk(0, {1, 2, 3, 4, 5, 6}, {{0, 1}}));
  EXPECT_TRUE(ValidatePlan(plan, spec, l).ok());
  plan.sequences[0].token_ids.push_back(7);
  const absl::Status st = ValidatePlan(plan, spec, l);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("sliding_window (6), which the test backend does not implement"));
  EXPECT_TRUE(ValidatePlan(StepPlan{}, spec, l).ok());
}

// Overlapping writes are found with blocks of up to 64 slots (a bit mask
// per block) and beyond (an entry per slot), across sequences and groups.
TEST(ValidatePlanTest, OverlappingWritesAtEveryBlockSize) {
  for (int bs : {4, 64, 100}) {
    SCOPED_TRACE(bs);
    const KvCacheSpec spec = Spec(2, bs);
    PlanLimits l = Limits();
    l.max_positions = 4 * bs;
    StepPlan plan;
    plan.sequences.push_back(Chunk(0, std::vector<int32_t>(bs + 2, 1), {{0, 1}, {0, 1}}));
    // Slots bs + 2 .. of block 1: next to the first chunk's, not on them.
    plan.sequences.push_back(Chunk(bs + 2, {1, 2}, {{3, 1}, {3, 1}}));
    EXPECT_TRUE(ValidatePlan(plan, spec, l).ok()) << ValidatePlan(plan, spec, l);
    // One slot back: slot 1 of block 1 again, in group 0 first.
    plan.sequences[1].start_pos = bs + 1;
    const absl::Status st = ValidatePlan(plan, spec, l);
    EXPECT_THAT(std::string(st.message()), HasSubstr(absl::StrCat("positions from ", bs + 1,
                                                                  " would write slots of block 1 "
                                                                  "(layer group 0)")));
    // Other blocks in group 0 only: group 1 still collides.
    plan.sequences[1].block_tables[0] = {5, 6};
    EXPECT_THAT(std::string(ValidatePlan(plan, spec, l).message()), HasSubstr("(layer group 1)"));
  }
}

TEST(ValidateDistancePairsTest, RefusesEachBrokenRule) {
  const KvCacheSpec spec = Spec(2, 4);  // 8 blocks of 4 slots
  using Pair = kvmanager::BlockPair;
  const std::vector<Pair> good = {{1, 2, 0, 0}, {3, 4, 5, 2}};
  EXPECT_TRUE(ValidateDistancePairs(spec, 1, good, 2).ok());
  EXPECT_TRUE(ValidateDistancePairs(spec, 0, {}, 0).ok());
  auto message = [&](int group, std::vector<Pair> pairs, size_t results) {
    const absl::Status s = ValidateDistancePairs(spec, group, pairs, results);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    return std::string(s.message());
  };
  EXPECT_THAT(message(2, good, 2), HasSubstr("layer group 2 of 2"));
  EXPECT_THAT(message(-1, good, 2), HasSubstr("layer group -1"));
  EXPECT_THAT(message(0, good, 1), HasSubstr("2 pairs but room for 1 results"));
  EXPECT_THAT(message(0, {{8, 2, 0, 0}}, 1), HasSubstr("block outside the pool [0, 8)"));
  EXPECT_THAT(message(0, {{1, -1, 0, 0}}, 1), HasSubstr("block outside the pool"));
  EXPECT_THAT(message(0, {{1, 2, 9, 1}}, 1), HasSubstr("pair (1, 2, 9)"));
  EXPECT_TRUE(ValidateDistancePairs(spec, 0, std::vector<Pair>{{1, 2, 9, 0}}, 1).ok());  // unused
  EXPECT_THAT(message(0, {{1, 2, 3, 4}}, 1), HasSubstr("shift 4 outside [0, 4)"));
  EXPECT_THAT(message(0, {{1, 2, 3, -1}}, 1), HasSubstr("shift -1"));
}

}  // namespace
}  // namespace memshare::engine
