#include "kvmanager/block_pool.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::kvmanager {
namespace {

// Misuse is an assertion in debug builds and a status in release builds.
#ifdef NDEBUG
#define EXPECT_MISUSE(expr, regex) EXPECT_TRUE(absl::IsFailedPrecondition(expr))
#else
#define EXPECT_MISUSE(expr, regex) EXPECT_DEATH((void)(expr), regex)
#endif

std::unique_ptr<BlockPool> MakePool(int32_t n, int32_t group = 0) {
  auto pool = BlockPool::Create({.layer_group = group, .num_blocks = n});
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

class RecordingListener : public BlockEvictionListener {
 public:
  void OnBlockEvicted(int32_t layer_group, int32_t block) override {
    evicted.emplace_back(layer_group, block);
  }
  std::vector<std::pair<int32_t, int32_t>> evicted;
};

TEST(BlockPoolTest, RejectsBadOptions) {
  EXPECT_TRUE(absl::IsInvalidArgument(BlockPool::Create({.num_blocks = 0}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(BlockPool::Create({.num_blocks = -3}).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(BlockPool::Create({.layer_group = -1, .num_blocks = 4}).status()));
}

TEST(BlockPoolTest, AllocatesDistinctBlocksUntilExhausted) {
  auto pool = MakePool(4);
  std::set<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<int32_t> b = pool->Allocate();
    ASSERT_TRUE(b.ok());
    EXPECT_TRUE(got.insert(*b).second);
    EXPECT_EQ(pool->ref_count(*b), 1);
    EXPECT_EQ(pool->state(*b), BlockState::kInUse);
  }
  EXPECT_EQ(pool->num_in_use(), 4);
  EXPECT_EQ(pool->num_available(), 0);
  EXPECT_TRUE(absl::IsResourceExhausted(pool->Allocate().status()));
  EXPECT_TRUE(pool->CheckInvariants().ok());
  for (int32_t b : got) ASSERT_TRUE(pool->Unref(b).ok());
  EXPECT_EQ(pool->num_free(), 4);
  EXPECT_EQ(pool->total_refs(), 0);
}

TEST(BlockPoolTest, BulkAllocateIsAllOrNothing) {
  auto pool = MakePool(5);
  std::vector<int32_t> out = {42};
  EXPECT_TRUE(absl::IsResourceExhausted(pool->Allocate(6, &out)));
  EXPECT_EQ(out, std::vector<int32_t>{42});
  EXPECT_EQ(pool->num_free(), 5);
  ASSERT_TRUE(pool->Allocate(5, &out).ok());
  EXPECT_EQ(out.size(), 6u);
  EXPECT_EQ(pool->num_available(), 0);
  EXPECT_TRUE(pool->Allocate(0, &out).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(pool->Allocate(-1, &out)));
  for (size_t i = 1; i < out.size(); ++i) ASSERT_TRUE(pool->Unref(out[i]).ok());
}

TEST(BlockPoolTest, CountsSharedReferences) {
  auto pool = MakePool(3);
  const int32_t b = *pool->Allocate();
  ASSERT_TRUE(pool->Ref(b).ok());
  ASSERT_TRUE(pool->Ref(b).ok());
  EXPECT_EQ(pool->ref_count(b), 3);
  EXPECT_EQ(pool->num_shared(), 1);
  EXPECT_EQ(pool->total_refs(), 3);
  EXPECT_EQ(pool->num_in_use(), 1);
  ASSERT_TRUE(pool->Unref(b).ok());
  ASSERT_TRUE(pool->Unref(b).ok());
  EXPECT_EQ(pool->num_shared(), 0);
  EXPECT_EQ(pool->state(b), BlockState::kInUse);
  ASSERT_TRUE(pool->Unref(b).ok());
  EXPECT_EQ(pool->state(b), BlockState::kFree);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolTest, CachedBlocksWaitOnLruAndAreEvictedOldestFirstOnlyWhenNeeded) {
  auto pool = MakePool(4, /*group=*/2);
  RecordingListener listener;
  pool->SetEvictionListener(&listener);
  std::vector<int32_t> b;
  ASSERT_TRUE(pool->Allocate(3, &b).ok());
  for (int32_t x : b) ASSERT_TRUE(pool->SetCached(x).ok());
  // Released in the order b[1], b[0], b[2]: the LRU keeps that order.
  ASSERT_TRUE(pool->Unref(b[1]).ok());
  ASSERT_TRUE(pool->Unref(b[0]).ok());
  ASSERT_TRUE(pool->Unref(b[2]).ok());
  EXPECT_EQ(pool->num_evictable(), 3);
  EXPECT_EQ(pool->num_free(), 1);
  EXPECT_EQ(pool->state(b[0]), BlockState::kEvictable);
  EXPECT_TRUE(pool->CheckInvariants().ok());

  // The free block goes first; no eviction yet.
  const int32_t fresh = *pool->Allocate();
  EXPECT_TRUE(listener.evicted.empty());
  EXPECT_EQ(pool->num_evictions(), 0);
  // Then the least recently released cached block.
  const int32_t evicted = *pool->Allocate();
  EXPECT_EQ(evicted, b[1]);
  ASSERT_EQ(listener.evicted.size(), 1u);
  EXPECT_EQ(listener.evicted[0], std::make_pair(2, b[1]));
  EXPECT_FALSE(pool->cached(evicted));
  EXPECT_EQ(pool->num_evictions(), 1);

  // Ref revives an evictable block: it leaves the LRU and is not evicted.
  ASSERT_TRUE(pool->Ref(b[0]).ok());
  EXPECT_EQ(pool->state(b[0]), BlockState::kInUse);
  EXPECT_TRUE(pool->cached(b[0]));
  EXPECT_EQ(*pool->Allocate(), b[2]);
  EXPECT_EQ(pool->num_available(), 0);
  EXPECT_TRUE(pool->CheckInvariants().ok());
  for (int32_t x : {fresh, evicted, b[0], b[2]}) ASSERT_TRUE(pool->Unref(x).ok());
  pool->SetEvictionListener(nullptr);
}

TEST(BlockPoolTest, NeverEvictsAReferencedCachedBlock) {
  auto pool = MakePool(2);
  RecordingListener listener;
  pool->SetEvictionListener(&listener);
  std::vector<int32_t> b;
  ASSERT_TRUE(pool->Allocate(2, &b).ok());
  ASSERT_TRUE(pool->SetCached(b[0]).ok());
  ASSERT_TRUE(pool->SetCached(b[1]).ok());
  // Both cached and still referenced: nothing can be handed out.
  EXPECT_TRUE(absl::IsResourceExhausted(pool->Allocate().status()));
  EXPECT_TRUE(listener.evicted.empty());
  EXPECT_EQ(pool->ref_count(b[0]), 1);
  EXPECT_TRUE(pool->cached(b[0]));
  for (int32_t x : b) ASSERT_TRUE(pool->Unref(x).ok());
  pool->SetEvictionListener(nullptr);
}

TEST(BlockPoolTest, ClearCachedFreesAnEvictableBlock) {
  auto pool = MakePool(2);
  const int32_t b = *pool->Allocate();
  ASSERT_TRUE(pool->SetCached(b).ok());
  ASSERT_TRUE(pool->Unref(b).ok());
  EXPECT_EQ(pool->state(b), BlockState::kEvictable);
  ASSERT_TRUE(pool->ClearCached(b).ok());
  EXPECT_EQ(pool->state(b), BlockState::kFree);
  EXPECT_EQ(pool->num_free(), 2);
  // Uncaching an uncached or referenced block keeps it where it is.
  ASSERT_TRUE(pool->ClearCached(b).ok());
  const int32_t c = *pool->Allocate();
  ASSERT_TRUE(pool->SetCached(c).ok());
  ASSERT_TRUE(pool->ClearCached(c).ok());
  EXPECT_EQ(pool->state(c), BlockState::kInUse);
  ASSERT_TRUE(pool->Unref(c).ok());
  EXPECT_EQ(pool->state(c), BlockState::kFree);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolDeathTest, DoubleReleaseIsDetected) {
  auto pool = MakePool(2);
  const int32_t b = *pool->Allocate();
  ASSERT_TRUE(pool->Unref(b).ok());
  EXPECT_MISUSE(pool->Unref(b), "double release");
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolDeathTest, UseAfterFreeIsDetected) {
  auto pool = MakePool(2);
  const int32_t b = *pool->Allocate();
  ASSERT_TRUE(pool->Unref(b).ok());
  EXPECT_MISUSE(pool->Ref(b), "use after free");
  EXPECT_MISUSE(pool->SetCached(b), "cannot cache unreferenced");
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST(BlockPoolDeathTest, IdsOutsideThePoolAreDetected) {
  auto pool = MakePool(2);
  EXPECT_MISUSE(pool->Ref(2), "outside pool");
  EXPECT_MISUSE(pool->Unref(-1), "outside pool");
  EXPECT_MISUSE(pool->ClearCached(7), "outside pool");
}

TEST(BlockPoolTest, ReusesTheMostRecentlyFreedBlock) {
  auto pool = MakePool(8);
  std::vector<int32_t> b;
  ASSERT_TRUE(pool->Allocate(3, &b).ok());
  EXPECT_EQ(b, (std::vector<int32_t>{0, 1, 2}));
  ASSERT_TRUE(pool->Unref(b[1]).ok());
  EXPECT_EQ(*pool->Allocate(), 1);
  for (int32_t x : b) ASSERT_TRUE(pool->Unref(x).ok());
}

}  // namespace
}  // namespace memshare::kvmanager
