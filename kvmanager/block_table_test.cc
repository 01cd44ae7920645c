#include "kvmanager/block_table.h"

#include <vector>

#include "gtest/gtest.h"

namespace memshare::kvmanager {
namespace {

class BlockTableTest : public ::testing::Test {
 protected:
  void SetUp() override { pool_ = *BlockPool::Create({.num_blocks = 8}); }
  std::unique_ptr<BlockPool> pool_;
  std::vector<BlockCopy> copies_;
};

TEST_F(BlockTableTest, AllocatesOnBlockBoundaries) {
  BlockTable t(pool_.get(), 4);
  EXPECT_EQ(t.BlocksNeeded(1), 1);
  ASSERT_TRUE(t.Append(1, &copies_).ok());
  EXPECT_EQ(t.num_blocks(), 1);
  EXPECT_EQ(t.BlocksNeeded(3), 0);
  EXPECT_EQ(t.BlocksNeeded(4), 1);
  ASSERT_TRUE(t.Append(3, &copies_).ok());
  EXPECT_EQ(t.num_blocks(), 1);
  EXPECT_EQ(t.num_full_blocks(), 1);
  ASSERT_TRUE(t.Append(5, &copies_).ok());
  EXPECT_EQ(t.num_tokens(), 9);
  EXPECT_EQ(t.num_blocks(), 3);
  EXPECT_EQ(t.num_full_blocks(), 2);
  EXPECT_EQ(pool_->num_in_use(), 3);
  EXPECT_TRUE(copies_.empty());
  EXPECT_TRUE(t.Append(0, &copies_).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(t.Append(-1, &copies_)));
}

TEST_F(BlockTableTest, ExhaustionChangesNothing) {
  BlockTable t(pool_.get(), 4);
  ASSERT_TRUE(t.Append(30, &copies_).ok());  // 8 blocks, 2 slots left
  EXPECT_EQ(pool_->num_available(), 0);
  ASSERT_TRUE(t.Append(2, &copies_).ok());  // fills the last block
  const auto blocks = std::vector<int32_t>(t.blocks().begin(), t.blocks().end());
  EXPECT_TRUE(absl::IsResourceExhausted(t.Append(1, &copies_)));
  EXPECT_EQ(t.num_tokens(), 32);
  EXPECT_EQ(std::vector<int32_t>(t.blocks().begin(), t.blocks().end()), blocks);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(BlockTableTest, ForkThenWriteCopiesTheSharedPartialBlock) {
  BlockTable parent(pool_.get(), 4);
  ASSERT_TRUE(parent.Append(6, &copies_).ok());  // blocks: full, partial(2)
  absl::StatusOr<BlockTable> forked = parent.Fork();
  ASSERT_TRUE(forked.ok());
  BlockTable child = *std::move(forked);
  const int32_t full = parent.block(0);
  const int32_t partial = parent.block(1);
  EXPECT_EQ(pool_->ref_count(full), 2);
  EXPECT_EQ(pool_->ref_count(partial), 2);
  EXPECT_EQ(child.num_tokens(), 6);

  // The child writes into the shared partial block: copy-on-write.
  EXPECT_EQ(child.BlocksNeeded(1), 1);
  ASSERT_TRUE(child.Append(1, &copies_).ok());
  ASSERT_EQ(copies_.size(), 1u);
  EXPECT_EQ(copies_[0].first, partial);
  EXPECT_EQ(copies_[0].second, child.block(1));
  EXPECT_NE(child.block(1), partial);
  EXPECT_EQ(child.block(0), full);  // full blocks stay shared
  EXPECT_EQ(pool_->ref_count(full), 2);
  EXPECT_EQ(pool_->ref_count(partial), 1);
  EXPECT_EQ(pool_->ref_count(child.block(1)), 1);

  // The parent is now the only holder: it writes in place.
  EXPECT_EQ(parent.BlocksNeeded(1), 0);
  ASSERT_TRUE(parent.Append(1, &copies_).ok());
  EXPECT_EQ(copies_.size(), 1u);
  EXPECT_EQ(parent.block(1), partial);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(BlockTableTest, ForkAtABlockBoundaryNeedsNoCopy) {
  BlockTable parent(pool_.get(), 4);
  ASSERT_TRUE(parent.Append(8, &copies_).ok());
  BlockTable child = *parent.Fork();
  EXPECT_EQ(child.BlocksNeeded(1), 1);
  ASSERT_TRUE(child.Append(1, &copies_).ok());
  EXPECT_TRUE(copies_.empty());
  EXPECT_EQ(pool_->ref_count(parent.block(1)), 2);
}

TEST_F(BlockTableTest, CopyOnWriteNeedsABlockAndFailsCleanlyWithout) {
  BlockTable parent(pool_.get(), 4);
  ASSERT_TRUE(parent.Append(30, &copies_).ok());  // all 8 blocks, last partial
  BlockTable child = *parent.Fork();
  EXPECT_EQ(child.BlocksNeeded(1), 1);
  EXPECT_TRUE(absl::IsResourceExhausted(child.Append(1, &copies_)));
  EXPECT_TRUE(copies_.empty());
  EXPECT_EQ(child.num_tokens(), 30);
  EXPECT_EQ(pool_->ref_count(child.block(7)), 2);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(BlockTableTest, AppendFullBlockNeedsABoundary) {
  const int32_t cached = *pool_->Allocate();
  BlockTable t(pool_.get(), 4);
  ASSERT_TRUE(t.AppendFullBlock(cached).ok());
  EXPECT_EQ(t.num_tokens(), 4);
  EXPECT_EQ(pool_->ref_count(cached), 2);
  ASSERT_TRUE(t.Append(1, &copies_).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(t.AppendFullBlock(cached)));
  EXPECT_EQ(pool_->ref_count(cached), 2);
  ASSERT_TRUE(pool_->Unref(cached).ok());
}

TEST_F(BlockTableTest, ReplaceSharesOnlyFullBlocks) {
  BlockTable t(pool_.get(), 4);
  ASSERT_TRUE(t.Append(10, &copies_).ok());  // full, full, partial
  const int32_t b0 = t.block(0), b1 = t.block(1), b2 = t.block(2);
  ASSERT_TRUE(t.Replace(1, b0).ok());
  EXPECT_EQ(t.block(1), b0);
  EXPECT_EQ(pool_->ref_count(b0), 2);
  EXPECT_EQ(pool_->state(b1), BlockState::kFree);
  // The partial block being written is never shared.
  EXPECT_TRUE(absl::IsFailedPrecondition(t.Replace(2, b0)));
  EXPECT_TRUE(absl::IsFailedPrecondition(t.Replace(3, b0)));
  EXPECT_TRUE(absl::IsFailedPrecondition(t.Replace(-1, b0)));
  EXPECT_EQ(t.block(2), b2);
  EXPECT_EQ(pool_->ref_count(b0), 2);
  ASSERT_TRUE(t.Replace(1, b0).ok());  // no-op
  EXPECT_EQ(pool_->ref_count(b0), 2);
  // Releasing a table that shares a block with itself drops both references.
  ASSERT_TRUE(t.Release().ok());
  EXPECT_EQ(pool_->num_in_use(), 0);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(BlockTableTest, ReleaseGoesLastBlockFirstAndIsIdempotent) {
  BlockTable t(pool_.get(), 2);
  ASSERT_TRUE(t.Append(6, &copies_).ok());
  for (int32_t b : t.blocks()) ASSERT_TRUE(pool_->SetCached(b).ok());
  const std::vector<int32_t> blocks(t.blocks().begin(), t.blocks().end());
  ASSERT_TRUE(t.Release().ok());
  ASSERT_TRUE(t.Release().ok());
  EXPECT_EQ(t.num_blocks(), 0);
  EXPECT_EQ(t.num_tokens(), 0);
  EXPECT_EQ(pool_->num_evictable(), 3);
  // Take the 5 free blocks, then evictions go tail of the prefix first.
  std::vector<int32_t> fresh;
  ASSERT_TRUE(pool_->Allocate(5, &fresh).ok());
  EXPECT_EQ(*pool_->Allocate(), blocks[2]);
  EXPECT_EQ(*pool_->Allocate(), blocks[1]);
  for (int32_t b : fresh) ASSERT_TRUE(pool_->Unref(b).ok());
  ASSERT_TRUE(pool_->Unref(blocks[2]).ok());
  ASSERT_TRUE(pool_->Unref(blocks[1]).ok());
}

TEST_F(BlockTableTest, DestructorAndMoveKeepReferencesExact) {
  {
    BlockTable a(pool_.get(), 4);
    ASSERT_TRUE(a.Append(9, &copies_).ok());
    BlockTable b(std::move(a));
    EXPECT_EQ(a.num_blocks(), 0);  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_EQ(b.num_blocks(), 3);
    BlockTable c(pool_.get(), 4);
    ASSERT_TRUE(c.Append(1, &copies_).ok());
    c = std::move(b);  // c's own block is released
    EXPECT_EQ(pool_->num_in_use(), 3);
    EXPECT_EQ(c.num_tokens(), 9);
  }
  EXPECT_EQ(pool_->num_in_use(), 0);
  EXPECT_EQ(pool_->total_refs(), 0);
}

TEST_F(BlockTableTest, ViewsReadTwoPrimaryEntriesAndHoldAReferenceOnEach) {
  BlockTable t(pool_.get(), 4);
  ASSERT_TRUE(t.Append(18, &copies_).ok());  // blocks 0..3 full, 4 partial
  EXPECT_TRUE(t.blocks_hi().empty());
  EXPECT_TRUE(t.shifts().empty());
  const std::vector<int32_t> b(t.blocks().begin(), t.blocks().end());
  ASSERT_TRUE(t.MakeView(3, 0, 2).ok());
  EXPECT_EQ(t.kind(3), BlockEntryKind::kView);
  EXPECT_EQ(t.block(3), b[0]);
  EXPECT_EQ(t.block_hi(3), b[1]);
  EXPECT_EQ(t.shift(3), 2);
  EXPECT_EQ(t.view_reference(3), 0);
  EXPECT_EQ(t.num_views(), 1);
  EXPECT_EQ(t.pins(0), 1);
  EXPECT_EQ(t.pins(1), 1);
  EXPECT_EQ(pool_->ref_count(b[0]), 2);
  EXPECT_EQ(pool_->ref_count(b[1]), 2);
  EXPECT_EQ(pool_->state(b[3]), BlockState::kFree);
  EXPECT_EQ(pool_->total_refs(), t.num_blocks() + t.num_views());
  // Dense arrays: other entries read their own block, unshifted.
  EXPECT_EQ(std::vector<int32_t>(t.blocks_hi().begin(), t.blocks_hi().end()),
            (std::vector<int32_t>{b[0], b[1], b[2], b[1], b[4]}));
  EXPECT_EQ(std::vector<int32_t>(t.shifts().begin(), t.shifts().end()),
            (std::vector<int32_t>{0, 0, 0, 2, 0}));
  EXPECT_TRUE(t.CheckEntries().ok());
  // Appending extends the dense arrays.
  ASSERT_TRUE(t.Append(4, &copies_).ok());
  EXPECT_EQ(t.blocks_hi().size(), 6u);
  EXPECT_EQ(t.block_hi(5), t.block(5));
  EXPECT_TRUE(t.CheckEntries().ok());
  ASSERT_TRUE(t.Release().ok());
  EXPECT_EQ(pool_->total_refs(), 0);
  EXPECT_TRUE(t.blocks_hi().empty());
  EXPECT_EQ(t.num_views(), 0);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(BlockTableTest, ViewsRefuseWhatWouldChainOrTouchUnfinishedBlocks) {
  BlockTable t(pool_.get(), 4);
  ASSERT_TRUE(t.Append(22, &copies_).ok());  // blocks 0..4 full, 5 partial
  auto refused = [](const absl::Status& s) { return absl::IsFailedPrecondition(s); };
  EXPECT_TRUE(refused(t.MakeView(5, 0, 1)));  // the partial block
  EXPECT_TRUE(refused(t.MakeView(2, 1, 1)));  // k + 1 == logical
  EXPECT_TRUE(refused(t.MakeView(2, -1, 1)));
  EXPECT_TRUE(refused(t.MakeView(3, 0, 0)));  // shift 0 is Replace
  EXPECT_TRUE(refused(t.MakeView(3, 0, 4)));
  ASSERT_TRUE(t.Replace(1, t.block(0)).ok());  // entry 1 is remapped: not primary
  EXPECT_EQ(t.kind(1), BlockEntryKind::kRemapped);
  EXPECT_TRUE(refused(t.MakeView(3, 0, 1)));
  EXPECT_TRUE(refused(t.MakeView(3, 1, 1)));
  ASSERT_TRUE(t.MakeView(4, 2, 3).ok());
  // A view is never a reference, its entries are never changed.
  EXPECT_TRUE(t.IsPrimary(2));
  EXPECT_FALSE(t.IsPrimary(4));
  EXPECT_TRUE(refused(t.Replace(2, t.block(0))));
  EXPECT_TRUE(refused(t.Replace(3, t.block(0))));
  EXPECT_TRUE(t.CheckEntries().ok());
  EXPECT_EQ(pool_->total_refs(), t.num_blocks() + t.num_views());
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

TEST_F(BlockTableTest, ReplacingAViewReleasesBothBlocksAndItsPins) {
  BlockTable t(pool_.get(), 4);
  ASSERT_TRUE(t.Append(16, &copies_).ok());
  const int32_t b0 = t.block(0), b1 = t.block(1);
  ASSERT_TRUE(t.MakeView(3, 0, 1).ok());
  ASSERT_TRUE(t.Replace(3, t.block(2)).ok());
  EXPECT_EQ(t.kind(3), BlockEntryKind::kRemapped);
  EXPECT_EQ(t.num_views(), 0);
  EXPECT_EQ(t.pins(0), 0);
  EXPECT_EQ(t.pins(1), 0);
  EXPECT_EQ(pool_->ref_count(b0), 1);
  EXPECT_EQ(pool_->ref_count(b1), 1);
  EXPECT_EQ(t.block_hi(3), t.block(3));
  EXPECT_EQ(t.shift(3), 0);
  EXPECT_TRUE(t.CheckEntries().ok());
  EXPECT_EQ(pool_->total_refs(), 4);
}

TEST_F(BlockTableTest, ForkAndMoveCarryViews) {
  BlockTable t(pool_.get(), 4);
  ASSERT_TRUE(t.Append(14, &copies_).ok());  // 3 full, 1 partial
  ASSERT_TRUE(t.MakeView(2, 0, 3).ok());
  const int32_t b0 = t.block(0), b1 = t.block(1);
  absl::StatusOr<BlockTable> forked = t.Fork();
  ASSERT_TRUE(forked.ok());
  EXPECT_EQ(forked->num_views(), 1);
  EXPECT_EQ(forked->shift(2), 3);
  EXPECT_EQ(forked->pins(0), 1);
  EXPECT_TRUE(forked->CheckEntries().ok());
  EXPECT_EQ(pool_->ref_count(b0), 4);
  EXPECT_EQ(pool_->ref_count(b1), 4);
  BlockTable moved(std::move(*forked));
  EXPECT_EQ(moved.num_views(), 1);
  EXPECT_TRUE(moved.CheckEntries().ok());
  // Copy-on-write of the shared partial block keeps hi == lo for it.
  ASSERT_TRUE(moved.Append(1, &copies_).ok());
  EXPECT_EQ(moved.block_hi(3), moved.block(3));
  EXPECT_NE(moved.block(3), t.block(3));
  EXPECT_TRUE(moved.CheckEntries().ok());
  ASSERT_TRUE(moved.Release().ok());
  EXPECT_EQ(pool_->ref_count(b0), 2);
  ASSERT_TRUE(t.Release().ok());
  EXPECT_EQ(pool_->total_refs(), 0);
  EXPECT_TRUE(pool_->CheckInvariants().ok());
}

}  // namespace
}  // namespace memshare::kvmanager
