#include "kvmanager/testing/fake_block_distance.h"

#include <vector>

#include "gtest/gtest.h"

namespace memshare::kvmanager::testing {
namespace {

TEST(FakeBlockDistanceTest, CountsDifferingSlots) {
  FakeBlockDistance kv(2, 4, 4);
  for (int32_t s = 0; s < 4; ++s) {
    kv.Write(1, 0, s, 10 + s);
    kv.Write(1, 1, s, 10 + s);
    kv.Write(1, 2, s, s == 3 ? 99 : 10 + s);
  }
  const BlockPair pairs[] = {{1, 0}, {2, 0}, {3, 0}};
  std::vector<DistanceSums> out(3);
  ASSERT_TRUE(kv.ComputeDistanceSums(1, pairs, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out[0].RelativeK(), 0.0);
  EXPECT_DOUBLE_EQ(out[1].RelativeK(), 0.5);  // sqrt(1/4)
  EXPECT_DOUBLE_EQ(out[1].RelativeV(), 0.5);
  EXPECT_DOUBLE_EQ(out[2].RelativeK(), 1.0);  // block 3 empty: all differ
  EXPECT_EQ(kv.calls(), 1);
  ASSERT_EQ(kv.call_log().size(), 1u);
  EXPECT_EQ(kv.call_log()[0], std::make_pair(1, size_t{3}));
}

TEST(FakeBlockDistanceTest, ShiftedReferencesReadAWindowOverTwoBlocks) {
  FakeBlockDistance kv(1, 4, 4);
  // Blocks 0, 1 hold 10..17; block 2 holds 11..14 (the window at shift 1),
  // block 3 holds 13..16 except its last slot (the window at shift 3).
  for (int32_t s = 0; s < 4; ++s) {
    kv.Write(0, 0, s, 10 + s);
    kv.Write(0, 1, s, 14 + s);
    kv.Write(0, 2, s, 11 + s);
    kv.Write(0, 3, s, s == 3 ? 0 : 13 + s);
  }
  EXPECT_EQ(kv.ReadReference(0, {2, 0, 1, 3}, 0), 13);
  EXPECT_EQ(kv.ReadReference(0, {2, 0, 1, 3}, 1), 14);
  const BlockPair pairs[] = {{2, 0, 1, 1}, {3, 0, 1, 3}, {2, 0, 1, 2}, {2, 0, 1, 0}};
  std::vector<DistanceSums> out(4);
  ASSERT_TRUE(kv.ComputeDistanceSums(0, pairs, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out[0].RelativeK(), 0.0);
  EXPECT_DOUBLE_EQ(out[1].RelativeK(), 0.5);  // one slot of four differs
  EXPECT_DOUBLE_EQ(out[2].RelativeK(), 1.0);  // off by one: every slot differs
  EXPECT_DOUBLE_EQ(out[3].RelativeK(), 1.0);  // shift 0: block 0 itself
  // The second block must be in the pool when the shift reads it.
  const BlockPair bad[] = {{2, 0, 4, 1}, {2, 0, -1, 1}, {2, 0, 1, 4}};
  for (const BlockPair& p : bad) {
    EXPECT_TRUE(absl::IsInvalidArgument(
        kv.ComputeDistanceSums(0, absl::MakeConstSpan(&p, 1), absl::MakeSpan(out).subspan(0, 1))));
  }
}

TEST(FakeBlockDistanceTest, CopiesRunInOrder) {
  FakeBlockDistance kv(1, 3, 2);
  kv.Write(0, 0, 0, 5);
  kv.Write(0, 1, 0, 6);
  // 0 -> 2, then 1 -> 0: block 2 gets 0's old content.
  kv.RunCopies({{{0, 2}, {1, 0}}});
  EXPECT_EQ(kv.Read(0, 2, 0), 5);
  EXPECT_EQ(kv.Read(0, 0, 0), 6);
}

TEST(FakeBlockDistanceTest, ValidatesAndInjects) {
  FakeBlockDistance kv(1, 2, 2);
  std::vector<DistanceSums> out(1);
  const BlockPair bad[] = {{0, 2}};
  EXPECT_TRUE(absl::IsInvalidArgument(kv.ComputeDistanceSums(0, bad, absl::MakeSpan(out))));
  const BlockPair ok[] = {{0, 1}};
  EXPECT_TRUE(absl::IsInvalidArgument(kv.ComputeDistanceSums(1, ok, absl::MakeSpan(out))));
  kv.override_sums = [](int32_t, const BlockPair&) { return DistanceSums{9, 1, 0, 1}; };
  ASSERT_TRUE(kv.ComputeDistanceSums(0, ok, absl::MakeSpan(out)).ok());
  EXPECT_DOUBLE_EQ(out[0].RelativeK(), 3.0);
  kv.fail_with = absl::InternalError("boom");
  EXPECT_TRUE(absl::IsInternal(kv.ComputeDistanceSums(0, ok, absl::MakeSpan(out))));
}

}  // namespace
}  // namespace memshare::kvmanager::testing
