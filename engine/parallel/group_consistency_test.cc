#include "engine/parallel/group_consistency.h"

#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

StepPlan Plan(int32_t block) {
  StepPlan p;
  SequenceChunk s;
  s.seq_id = 4;
  s.start_pos = 16;
  s.token_ids = {1};
  s.block_tables = {{3, block}};
  p.sequences.push_back(s);
  return p;
}

TEST(GroupConsistencyTest, SameWorkSameHashAnyDifferenceChangesIt) {
  GroupConsistency a, b;
  EXPECT_EQ(a.hash(), b.hash());
  a.AddPlan(Plan(7));
  b.AddPlan(Plan(7));
  EXPECT_EQ(a.hash(), b.hash());

  GroupConsistency c = a;
  GroupConsistency d = a;
  c.AddPlan(Plan(7));
  d.AddPlan(Plan(8));  // one block id differs
  EXPECT_NE(c.hash(), d.hash());

  const kvmanager::BlockPair pairs[] = {{5, 2}};
  kvmanager::DistanceSums s1;
  s1.k_diff_sq = 1.0;
  s1.k_norm_sq = 4.0;
  kvmanager::DistanceSums s2 = s1;
  s2.k_diff_sq = std::nextafter(1.0, 2.0);  // one ulp
  GroupConsistency e = a, f = a;
  e.AddDistances(0, pairs, {&s1, 1});
  f.AddDistances(0, pairs, {&s2, 1});
  EXPECT_NE(e.hash(), f.hash());

  // A shifted view, or a reference window at another shift, is other work.
  StepPlan viewed = Plan(7);
  viewed.sequences[0].block_tables_hi = {{3, 3}};
  viewed.sequences[0].block_shifts = {{0, 2}};
  GroupConsistency v = a, w = a;
  v.AddPlan(Plan(7));
  w.AddPlan(viewed);
  EXPECT_NE(v.hash(), w.hash());
  const kvmanager::BlockPair shifted[] = {{5, 2, 3, 4}};
  const kvmanager::BlockPair shifted_more[] = {{5, 2, 3, 5}};
  GroupConsistency s_a = a, s_b = a;
  s_a.AddDistances(0, shifted, {&s1, 1});
  s_b.AddDistances(0, shifted_more, {&s1, 1});
  EXPECT_NE(s_a.hash(), s_b.hash());

  GroupConsistency g = a, h = a;
  const std::pair<int32_t, int32_t> c1[] = {{1, 2}};
  const std::pair<int32_t, int32_t> c2[] = {{1, 3}};
  g.AddCopies(0, c1);
  h.AddCopies(0, c2);
  EXPECT_NE(g.hash(), h.hash());
  // Order matters: the same steps in another order are another history.
  GroupConsistency x, y;
  x.AddPlan(Plan(1));
  x.AddPlan(Plan(2));
  y.AddPlan(Plan(2));
  y.AddPlan(Plan(1));
  EXPECT_NE(x.hash(), y.hash());
}

TEST(GroupConsistencyTest, CompareNamesTheRanksThatDiffer) {
  EXPECT_TRUE(CompareGroupHashes({7, 7, 7, 7}, 10).ok());
  EXPECT_TRUE(CompareGroupHashes({7}, 10).ok());
  const absl::Status s = CompareGroupHashes({7, 7, 9, 8}, 42);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("ranks 2, 3"), std::string::npos) << s;
  EXPECT_NE(s.message().find("step 42"), std::string::npos) << s;
  const absl::Status one = CompareGroupHashes({1, 2}, 3);
  EXPECT_NE(one.message().find("rank 1 differ"), std::string::npos) << one;
}

}  // namespace
}  // namespace memshare::engine
