#include "kvmanager/prefix_cache.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kvmanager/block_table.h"

namespace memshare::kvmanager {
namespace {

#ifdef NDEBUG
#define EXPECT_MISUSE(expr, regex) EXPECT_TRUE(absl::IsFailedPrecondition(expr))
#else
#define EXPECT_MISUSE(expr, regex) EXPECT_DEATH((void)(expr), regex)
#endif

constexpr int32_t kBlockSize = 4;

std::vector<int32_t> Tokens(int32_t first, int32_t n) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// Two layer groups of `blocks` blocks and a cache over them.
class PrefixCacheTest : public ::testing::Test {
 protected:
  void Init(int32_t blocks, int32_t groups = 2) {
    pools_.clear();
    std::vector<BlockPool*> raw;
    for (int32_t g = 0; g < groups; ++g) {
      pools_.push_back(*BlockPool::Create({.layer_group = g, .num_blocks = blocks}));
      raw.push_back(pools_.back().get());
    }
    cache_ = *PrefixCache::Create({.block_size = kBlockSize}, raw);
  }
  void TearDown() override {
    tables_.clear();
    cache_.reset();
  }

  // Fills a table per group with `tokens` (a whole number of blocks) and
  // offers every block to the cache, as KvManager does on commit.
  void Fill(const std::vector<int32_t>& tokens, absl::string_view salt = "") {
    const int32_t groups = static_cast<int32_t>(pools_.size());
    std::vector<BlockTable> tables;
    for (int32_t g = 0; g < groups; ++g) {
      tables.emplace_back(pools_[g].get(), kBlockSize);
      std::vector<BlockCopy> copies;
      ASSERT_TRUE(tables.back().Append(static_cast<int32_t>(tokens.size()), &copies).ok());
    }
    uint64_t parent = PrefixCache::RootHash(salt);
    for (size_t i = 0; i < tokens.size() / kBlockSize; ++i) {
      const absl::Span<const int32_t> block(&tokens[i * kBlockSize], kBlockSize);
      const uint64_t hash = PrefixCache::ChainHash(parent, block);
      std::vector<int32_t> blocks;
      for (int32_t g = 0; g < groups; ++g) blocks.push_back(tables[g].block(i));
      ASSERT_TRUE(cache_->Insert(parent, hash, block, blocks).ok());
      parent = hash;
    }
    for (auto& t : tables) tables_.push_back(std::move(t));
  }

  std::vector<std::unique_ptr<BlockPool>> pools_;
  std::unique_ptr<PrefixCache> cache_;
  std::vector<BlockTable> tables_;
};

TEST_F(PrefixCacheTest, FindsTheLongestCachedPrefix) {
  Init(16);
  Fill(Tokens(0, 12));  // 3 blocks
  EXPECT_EQ(cache_->num_entries(), 3);
  PrefixCache::Match m;
  std::vector<int32_t> query = Tokens(0, 8);
  for (int32_t t : {100, 101, 102, 103, 104}) query.push_back(t);
  cache_->Lookup(query, PrefixCache::RootHash(""), 10, &m);
  ASSERT_EQ(m.num_blocks, 2);
  ASSERT_EQ(m.blocks.size(), 4u);
  EXPECT_EQ(m.blocks[0], tables_[0].block(0));  // block 0, group 0
  EXPECT_EQ(m.blocks[1], tables_[1].block(0));  // block 0, group 1
  EXPECT_EQ(m.blocks[3], tables_[1].block(1));
  EXPECT_EQ(m.hashes.size(), 2u);
  // Lookups take no reference.
  EXPECT_EQ(pools_[0]->ref_count(m.blocks[0]), 1);
  // At most max_blocks.
  cache_->Lookup(Tokens(0, 12), PrefixCache::RootHash(""), 1, &m);
  EXPECT_EQ(m.num_blocks, 1);
  // Partial blocks are never matched.
  cache_->Lookup(Tokens(0, 3), PrefixCache::RootHash(""), 10, &m);
  EXPECT_EQ(m.num_blocks, 0);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(PrefixCacheTest, ChainAndSaltIsolate) {
  Init(16);
  Fill(Tokens(0, 8), "tenant-a");
  PrefixCache::Match m;
  cache_->Lookup(Tokens(0, 8), PrefixCache::RootHash("tenant-b"), 10, &m);
  EXPECT_EQ(m.num_blocks, 0);
  cache_->Lookup(Tokens(0, 8), PrefixCache::RootHash(""), 10, &m);
  EXPECT_EQ(m.num_blocks, 0);
  cache_->Lookup(Tokens(0, 8), PrefixCache::RootHash("tenant-a"), 10, &m);
  EXPECT_EQ(m.num_blocks, 2);
  // The second block's tokens after a different first block: no hit.
  std::vector<int32_t> other = Tokens(50, 4);
  for (int32_t t : Tokens(4, 4)) other.push_back(t);
  cache_->Lookup(other, PrefixCache::RootHash("tenant-a"), 10, &m);
  EXPECT_EQ(m.num_blocks, 0);
}

TEST_F(PrefixCacheTest, AHashCollisionNeverServesAWrongBlock) {
  Init(8, 1);
  BlockTable t(pools_[0].get(), kBlockSize);
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(t.Append(4, &copies).ok());
  const uint64_t root = PrefixCache::RootHash("");
  const std::vector<int32_t> real = Tokens(0, 4);
  const std::vector<int32_t> other = Tokens(10, 4);
  // Register block `t` under the hash `other` would have, with `real`'s
  // tokens: what a 64-bit collision would look like.
  const uint64_t colliding = PrefixCache::ChainHash(root, other);
  const int32_t blocks[] = {t.block(0)};
  ASSERT_TRUE(*cache_->Insert(root, colliding, real, blocks));
  PrefixCache::Match m;
  cache_->Lookup(other, root, 1, &m);
  EXPECT_EQ(m.num_blocks, 0);
}

TEST_F(PrefixCacheTest, InsertKeepsTheFirstEntryAndOneEntryPerBlock) {
  Init(8, 1);
  BlockTable a(pools_[0].get(), kBlockSize), b(pools_[0].get(), kBlockSize);
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(a.Append(4, &copies).ok());
  ASSERT_TRUE(b.Append(4, &copies).ok());
  const uint64_t root = PrefixCache::RootHash("");
  const std::vector<int32_t> tokens = Tokens(0, 4);
  const uint64_t h = PrefixCache::ChainHash(root, tokens);
  const int32_t ba[] = {a.block(0)}, bb[] = {b.block(0)};
  EXPECT_TRUE(*cache_->Insert(root, h, tokens, ba));
  EXPECT_FALSE(*cache_->Insert(root, h, tokens, bb));  // same content computed twice
  EXPECT_FALSE(pools_[0]->cached(b.block(0)));
  const std::vector<int32_t> other = Tokens(9, 4);
  EXPECT_FALSE(*cache_->Insert(root, PrefixCache::ChainHash(root, other), other, ba));
  EXPECT_EQ(cache_->num_entries(), 1);
  EXPECT_TRUE(absl::IsInvalidArgument(cache_->Insert(root, h, Tokens(0, 3), ba).status()));
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(PrefixCacheTest, EvictionDropsTheEntryInEveryGroup) {
  Init(4);
  Fill(Tokens(0, 8));  // 2 blocks in each group
  tables_.clear();     // released: cached and evictable
  EXPECT_EQ(pools_[0]->num_evictable(), 2);
  EXPECT_EQ(pools_[1]->num_evictable(), 2);
  // Group 0 needs 3 fresh blocks: 2 free, then the LRU head (last block of
  // the prefix, released first) is evicted.
  std::vector<int32_t> fresh;
  ASSERT_TRUE(pools_[0]->Allocate(3, &fresh).ok());
  EXPECT_EQ(cache_->num_entries(), 1);
  EXPECT_EQ(cache_->num_evicted_entries(), 1);
  // Its sibling in group 1 lost its content too: now free, not evictable.
  EXPECT_EQ(pools_[1]->num_evictable(), 1);
  EXPECT_EQ(pools_[1]->num_free(), 3);
  PrefixCache::Match m;
  cache_->Lookup(Tokens(0, 8), PrefixCache::RootHash(""), 10, &m);
  EXPECT_EQ(m.num_blocks, 1);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
  EXPECT_TRUE(pools_[1]->CheckInvariants().ok());
  for (int32_t b : fresh) ASSERT_TRUE(pools_[0]->Unref(b).ok());
}

TEST_F(PrefixCacheTest, AReferencedCachedBlockIsNeverEvicted) {
  Init(3, 1);
  Fill(Tokens(0, 12));  // all 3 blocks referenced by the table and cached
  EXPECT_TRUE(absl::IsResourceExhausted(pools_[0]->Allocate().status()));
  EXPECT_EQ(cache_->num_entries(), 3);
  EXPECT_EQ(cache_->num_evicted_entries(), 0);
  PrefixCache::Match m;
  cache_->Lookup(Tokens(0, 12), PrefixCache::RootHash(""), 10, &m);
  EXPECT_EQ(m.num_blocks, 3);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(PrefixCacheTest, ClearUncachesEverything) {
  Init(8);
  Fill(Tokens(0, 8));
  const int32_t still_referenced = tables_[0].block(0);
  tables_.pop_back();  // group 1 released: evictable
  EXPECT_EQ(cache_->Clear(), 2);
  EXPECT_EQ(cache_->num_entries(), 0);
  EXPECT_EQ(pools_[1]->num_evictable(), 0);
  EXPECT_EQ(pools_[1]->num_free(), 8);
  EXPECT_FALSE(pools_[0]->cached(still_referenced));
  EXPECT_EQ(pools_[0]->ref_count(still_referenced), 1);
  EXPECT_TRUE(cache_->CheckInvariants().ok());
}

TEST_F(PrefixCacheTest, RejectsBadOptionsAndUnequalPools) {
  auto a = *BlockPool::Create({.num_blocks = 4});
  auto b = *BlockPool::Create({.layer_group = 1, .num_blocks = 5});
  EXPECT_TRUE(
      absl::IsInvalidArgument(PrefixCache::Create({.block_size = 4}, {a.get(), b.get()}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PrefixCache::Create({.block_size = 0}, {a.get()}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(PrefixCache::Create({.block_size = 4}, {}).status()));
}

TEST_F(PrefixCacheTest, InsertOfAnUnreferencedBlockIsMisuse) {
  Init(4, 1);
  const std::vector<int32_t> tokens = Tokens(0, 4);
  const uint64_t root = PrefixCache::RootHash("");
  const int32_t blocks[] = {2};  // free
  EXPECT_MISUSE(cache_->Insert(root, PrefixCache::ChainHash(root, tokens), tokens, blocks).status(),
                "unreferenced");
}

}  // namespace
}  // namespace memshare::kvmanager
