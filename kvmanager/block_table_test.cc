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

}  // namespace
}  // namespace memshare::kvmanager
