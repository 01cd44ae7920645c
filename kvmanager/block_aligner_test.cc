#include "kvmanager/block_aligner.h"

#include <vector>

#include "gtest/gtest.h"

namespace memshare::kvmanager {
namespace {

TEST(BlockAlignerTest, AStepOwnsTheFullBlocksWhoseLastTokenItHolds) {
  auto owned = [](int32_t b, int32_t e, int32_t bs) {
    const BlockAligner::Range r = BlockAligner::OwnedBlocks({b, e}, bs);
    return std::make_pair(r.begin, r.end);
  };
  EXPECT_EQ(owned(0, 64, 16), std::make_pair(0, 4));
  EXPECT_EQ(owned(10, 40, 16), std::make_pair(0, 2));  // block 0 straddles: owned here
  EXPECT_EQ(owned(16, 40, 16), std::make_pair(1, 2));
  EXPECT_EQ(owned(17, 40, 16), std::make_pair(1, 2));
  EXPECT_EQ(owned(32, 47, 16), std::make_pair(2, 2));  // no block ends inside: none
  EXPECT_EQ(owned(10, 14, 8), std::make_pair(1, 1));   // zero full blocks
  EXPECT_EQ(owned(5, 5, 8), std::make_pair(0, 0));
}

// A sequence of 4-token blocks: a passage repeated at a block-aligned offset.
TEST(BlockAlignerTest, PairsRepeatedBlocksSlotBySlot) {
  std::vector<int32_t> tokens = {90, 91, 92, 93,  // block 0 (prompt)
                                 1,  2,  3,  4,   // block 1  step A
                                 5,  6,  7,  8,   // block 2  step A
                                 40, 41, 42, 43,  // block 3  step B
                                 1,  2,  3,  4,   // block 4  step B
                                 5,  6,  9,  8,   // block 5  step B (one slot differs)
                                 50, 51};         // partial block 6
  std::vector<BlockAligner::Match> out;
  BlockAligner::Align(tokens, 4, {12, 24}, {4, 12}, 3, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].logical, 4);
  EXPECT_EQ(out[0].reference, 1);
  EXPECT_EQ(out[0].overlap, 4);
  EXPECT_EQ(out[1].logical, 5);
  EXPECT_EQ(out[1].reference, 2);
  EXPECT_EQ(out[1].overlap, 3);
  // A stricter overlap drops the differing block.
  out.clear();
  BlockAligner::Align(tokens, 4, {12, 24}, {4, 12}, 4, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].logical, 4);
}

TEST(BlockAlignerTest, NeverPairsABlockWithItselfOrALaterBlockOrAPartialOne) {
  // Steps overlap the same block 1: it may only pair with block 0.
  std::vector<int32_t> tokens = {1, 2, 3, 4, 1, 2, 3, 4, 1, 2};
  std::vector<BlockAligner::Match> out;
  BlockAligner::Align(tokens, 4, {6, 10}, {2, 6}, 1, &out);
  // Step [6, 10) owns block 1 (last slot 7); its partner must be block 0.
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].logical, 1);
  EXPECT_EQ(out[0].reference, 0);
  // The partial block 2 is never owned even though the step covers it.
  out.clear();
  BlockAligner::Align(tokens, 4, {8, 10}, {0, 8}, 1, &out);
  EXPECT_TRUE(out.empty());
}

TEST(BlockAlignerTest, NoPartnerBelowTheOverlap) {
  std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<BlockAligner::Match> out;
  BlockAligner::Align(tokens, 4, {4, 8}, {0, 4}, 1, &out);
  EXPECT_TRUE(out.empty());
}

// The same passage restated one token later: every block of the restatement
// is a window off the grid.
TEST(BlockAlignerTest, ShiftedWindowsFindRepeatsOffTheGrid) {
  std::vector<int32_t> tokens = {90, 91, 92, 93,  // block 0 (prompt)
                                 1,  2,  3,  4,   // block 1  step A
                                 5,  6,  7,  8,   // block 2  step A
                                 40, 41, 42, 1,   // block 3  step B
                                 2,  3,  4,  5,   // block 4  step B: window at 5 (block 1 + 1)
                                 6,  7,  8,  50,  // block 5  step B: 3 slots of window at 9
                                 51};
  auto all = [](int32_t) { return true; };
  std::vector<BlockAligner::Match> out;
  BlockAligner::AlignShifted(tokens, 4, {12, 24}, {4, 12}, 3, all, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].logical, 4);
  EXPECT_EQ(out[0].reference, 1);
  EXPECT_EQ(out[0].shift, 1);
  EXPECT_EQ(out[0].overlap, 4);
  EXPECT_EQ(out[1].logical, 5);
  EXPECT_EQ(out[1].reference, 2);
  EXPECT_EQ(out[1].shift, 1);
  EXPECT_EQ(out[1].overlap, 3);
  // Grid alignment finds neither.
  out.clear();
  BlockAligner::Align(tokens, 4, {12, 24}, {4, 12}, 3, &out);
  EXPECT_TRUE(out.empty());
  // Blocks that may not back a view are skipped.
  out.clear();
  BlockAligner::AlignShifted(
      tokens, 4, {12, 24}, {4, 12}, 3, [](int32_t k) { return k != 3; }, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].logical, 4);
  EXPECT_EQ(out[0].reference, 1);
  // Windows that overlap the block itself or its predecessor are never
  // proposed: [1 2 3 4] at positions 15..18 straddles blocks 3 and 4.
  out.clear();
  BlockAligner::AlignShifted(tokens, 4, {12, 24}, {12, 24}, 1, all, &out);
  for (const BlockAligner::Match& m : out) {
    EXPECT_LT(m.reference + (m.shift > 0 ? 1 : 0), m.logical);
  }
}

TEST(BlockAlignerTest, GridWindowsWinTiesAndFullMatchesStopTheSearch) {
  // Block 3 equals block 1 (grid) and the window at 5 (shift 1) equally.
  std::vector<int32_t> tokens = {7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 0, 7, 7, 7, 7};
  std::vector<BlockAligner::Match> out;
  BlockAligner::AlignShifted(
      tokens, 4, {12, 16}, {0, 12}, 4, [](int32_t) { return true; }, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].reference, 0);
  EXPECT_EQ(out[0].shift, 0);
  EXPECT_EQ(out[0].overlap, 4);
}

TEST(BlockAlignerTest, AnchoredRunCountsOnlyAgreementAtAnEnd) {
  const std::vector<int32_t> block = {1, 2, 3, 4};
  auto both = [&](std::vector<int32_t> window) {
    return std::make_pair(
        BlockAligner::Agreement(block.data(), window.data(), 4, OverlapMeasure::kAnySlots),
        BlockAligner::Agreement(block.data(), window.data(), 4, OverlapMeasure::kAnchoredRun));
  };
  EXPECT_EQ(both({1, 2, 3, 4}), std::make_pair(4, 4));
  EXPECT_EQ(both({1, 2, 3, 9}), std::make_pair(3, 3));  // a run from the first slot
  EXPECT_EQ(both({9, 2, 3, 4}), std::make_pair(3, 3));  // a run to the last slot
  EXPECT_EQ(both({1, 9, 3, 4}), std::make_pair(3, 2));  // the longer of the two end runs
  EXPECT_EQ(both({9, 2, 3, 9}), std::make_pair(2, 0));  // agreement in the middle only
  EXPECT_EQ(both({9, 9, 9, 9}), std::make_pair(0, 0));
}

// Two steps of one template around different numbers agree in scattered
// slots; a restatement that ends inside a block agrees in a run at its
// start. The anchored measure pairs only the restatement.
TEST(BlockAlignerTest, AnchoredMeasurePairsRestatementsNotTemplateSiblings) {
  std::vector<int32_t> tokens = {90, 91, 92, 93,  // block 0 (prompt)
                                 5,  1,  6,  2,   // block 1  step A: "has 5 + 6 ="
                                 7,  8,  8,  8,   // block 2  step A
                                 5,  1,  7,  2,   // block 3  step B: "has 5 + 7 =" (sibling)
                                 7,  8,  8,  3};  // block 4  step B: restates block 2, then more
  std::vector<BlockAligner::Match> out;
  BlockAligner::Align(tokens, 4, {12, 20}, {4, 12}, 3, OverlapMeasure::kAnySlots, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].logical, 3);
  EXPECT_EQ(out[0].overlap, 3);
  out.clear();
  BlockAligner::Align(tokens, 4, {12, 20}, {4, 12}, 3, OverlapMeasure::kAnchoredRun, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].logical, 4);
  EXPECT_EQ(out[0].reference, 2);
  EXPECT_EQ(out[0].overlap, 3);
  // The same through shifted windows.
  out.clear();
  BlockAligner::AlignShifted(
      tokens, 4, {12, 20}, {4, 12}, 3, OverlapMeasure::kAnchoredRun,
      [](int32_t) { return true; }, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].logical, 4);
}

}  // namespace
}  // namespace memshare::kvmanager
