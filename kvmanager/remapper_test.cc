#include "kvmanager/remapper.h"

#include <vector>

#include "gtest/gtest.h"

namespace memshare::kvmanager {
namespace {

class RemapperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = *BlockPool::Create({.num_blocks = 8});
    table_ = std::make_unique<BlockTable>(pool_.get(), 4);
    std::vector<BlockCopy> copies;
    ASSERT_TRUE(table_->Append(14, &copies).ok());  // blocks 0..2 full, 3 partial
  }
  RemapDecision Decision(int32_t logical, int32_t reference) const {
    return {logical, reference, {table_->block(logical), table_->block(reference)}};
  }
  std::unique_ptr<BlockPool> pool_;
  std::unique_ptr<BlockTable> table_;
};

TEST_F(RemapperTest, PointsTheLaterBlockAtTheEarlierOne) {
  const int32_t b0 = table_->block(0), b2 = table_->block(2);
  ASSERT_TRUE(Remapper::Apply(Decision(2, 0), 14, table_.get()).ok());
  EXPECT_EQ(table_->block(2), b0);
  EXPECT_EQ(pool_->ref_count(b0), 2);
  EXPECT_EQ(pool_->state(b2), BlockState::kFree);
  EXPECT_EQ(pool_->num_in_use(), 3);
  EXPECT_EQ(pool_->total_refs(), 4);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(RemapperTest, RefusesThePartialBlockAndUnwrittenBlocks) {
  // The partial block being written.
  EXPECT_TRUE(absl::IsFailedPrecondition(Remapper::Apply(Decision(3, 0), 14, table_.get())));
  // Full, but its tokens are not written yet (only 8 of 14 are).
  EXPECT_TRUE(absl::IsFailedPrecondition(Remapper::Apply(Decision(2, 0), 8, table_.get())));
  EXPECT_TRUE(Remapper::Apply(Decision(1, 0), 8, table_.get()).ok());
  EXPECT_EQ(pool_->total_refs(), 4);
}

TEST_F(RemapperTest, RefusesAReferenceThatIsNotEarlier) {
  EXPECT_TRUE(absl::IsFailedPrecondition(Remapper::Apply(Decision(1, 2), 14, table_.get())));
  EXPECT_TRUE(absl::IsFailedPrecondition(Remapper::Apply(Decision(1, 1), 14, table_.get())));
  EXPECT_TRUE(absl::IsFailedPrecondition(Remapper::Apply(Decision(-1, 0), 14, table_.get())));
}

TEST_F(RemapperTest, StaleDecisionsAreAbortedUntouched) {
  RemapDecision d = Decision(2, 1);
  ASSERT_TRUE(Remapper::Apply(Decision(1, 0), 14, table_.get()).ok());  // moves block 1
  const int32_t b2 = table_->block(2);
  EXPECT_TRUE(absl::IsAborted(Remapper::Apply(d, 14, table_.get())));
  EXPECT_EQ(table_->block(2), b2);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(RemapperTest, AlreadySharedIsANoOp) {
  ASSERT_TRUE(Remapper::Apply(Decision(2, 0), 14, table_.get()).ok());
  ASSERT_TRUE(Remapper::Apply(Decision(2, 0), 14, table_.get()).ok());
  EXPECT_EQ(pool_->ref_count(table_->block(0)), 2);
}

class ShiftedRemapperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = *BlockPool::Create({.num_blocks = 8});
    table_ = std::make_unique<BlockTable>(pool_.get(), 4);
    std::vector<BlockCopy> copies;
    ASSERT_TRUE(table_->Append(18, &copies).ok());  // blocks 0..3 full, 4 partial
  }
  RemapDecision View(int32_t logical, int32_t k, int32_t shift) const {
    return {logical, k, {table_->block(logical), table_->block(k), table_->block(k + 1), shift}};
  }
  std::unique_ptr<BlockPool> pool_;
  std::unique_ptr<BlockTable> table_;
};

TEST_F(ShiftedRemapperTest, MakesTheLaterBlockAViewOverTwoEarlierOnes) {
  const int32_t b0 = table_->block(0), b1 = table_->block(1), b3 = table_->block(3);
  ASSERT_TRUE(Remapper::Apply(View(3, 0, 1), 18, table_.get()).ok());
  EXPECT_EQ(table_->kind(3), BlockEntryKind::kView);
  EXPECT_EQ(table_->block(3), b0);
  EXPECT_EQ(table_->block_hi(3), b1);
  EXPECT_EQ(table_->shift(3), 1);
  EXPECT_EQ(pool_->state(b3), BlockState::kFree);
  EXPECT_EQ(pool_->num_in_use(), 4);
  EXPECT_EQ(pool_->total_refs(), 6);  // 5 entries + the view's second reference
  EXPECT_TRUE(table_->CheckEntries().ok());
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(ShiftedRemapperTest, RefusesUnwrittenBlocksAndReferencesNotEarlier) {
  auto refused = [](const absl::Status& s) { return absl::IsFailedPrecondition(s); };
  EXPECT_TRUE(refused(Remapper::Apply(View(3, 0, 1), 15, table_.get())));  // 3 not written
  EXPECT_TRUE(refused(Remapper::Apply(View(2, 1, 1), 18, table_.get())));  // k + 1 == logical
  EXPECT_TRUE(refused(Remapper::Apply(View(3, 0, 4), 18, table_.get())));  // shift
  EXPECT_TRUE(refused(Remapper::Apply(View(3, 0, -1), 18, table_.get())));
  EXPECT_EQ(pool_->total_refs(), 5);
  EXPECT_EQ(table_->num_views(), 0);
}

TEST_F(ShiftedRemapperTest, StaleOrNonPrimaryReferencesAreAborted) {
  const RemapDecision d = View(3, 0, 2);
  // The second block of the window was remapped since verification.
  ASSERT_TRUE(Remapper::Apply({1, 0, {table_->block(1), table_->block(0)}}, 18, table_.get()).ok());
  EXPECT_TRUE(absl::IsAborted(Remapper::Apply(d, 18, table_.get())));
  // The ids still match, but entry 1 is no longer primary.
  EXPECT_TRUE(absl::IsAborted(Remapper::Apply(View(3, 0, 2), 18, table_.get())));
  EXPECT_EQ(table_->num_views(), 0);
  EXPECT_TRUE(table_->CheckEntries().ok());
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST(RemapperViewReferenceTest, AWholeBlockReferenceThatBecameAViewIsStale) {
  auto pool = *BlockPool::Create({.num_blocks = 8});
  BlockTable table(pool.get(), 4);
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(table.Append(20, &copies).ok());  // blocks 0..4 full
  ASSERT_TRUE(table.MakeView(3, 0, 1).ok());
  // Block 4 onto entry 3 (a view: its block holds positions 0..3).
  const RemapDecision d{4, 3, {table.block(4), table.block(3)}};
  EXPECT_TRUE(absl::IsAborted(Remapper::Apply(d, 20, &table)));
}

}  // namespace
}  // namespace memshare::kvmanager
