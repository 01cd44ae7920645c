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

}  // namespace
}  // namespace memshare::kvmanager
