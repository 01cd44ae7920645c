#include "kvmanager/kv_stats.h"

#include <thread>

#include "gtest/gtest.h"

namespace memshare::kvmanager {
namespace {

TEST(KvStatsTest, CountersAndGaugesAppearInSnapshots) {
  KvStats stats({100, 200});
  stats.Add(KvStats::kPrefixCacheQueries, 5);
  stats.Add(KvStats::kPrefixCacheQueries, 2);
  stats.Add(KvStats::kDedupRemapped, 3);
  stats.Add(KvStats::kDedupRemappedShifted, 2);
  stats.SetGroup(0, {.total_blocks = 10,
                     .physical_blocks = 4,
                     .logical_blocks = 7,
                     .shared_blocks = 2,
                     .cached_blocks = 1,
                     .free_blocks = 5,
                     .evictions = 9});
  stats.SetGroup(1, {.total_blocks = 10, .physical_blocks = 3, .logical_blocks = 4});
  stats.SetSequences(6);
  stats.SetPrefixCache(8, 4);
  const KvStatsSnapshot s = stats.Snapshot();
  EXPECT_EQ(s.prefix_cache_queries, 7);
  EXPECT_EQ(s.dedup_remapped, 3);
  EXPECT_EQ(s.dedup_remapped_shifted, 2);
  EXPECT_EQ(s.dedup_verified, 0);
  EXPECT_EQ(s.sequences, 6);
  EXPECT_EQ(s.prefix_cache_entries, 8);
  EXPECT_EQ(s.prefix_cache_evictions, 4);
  ASSERT_EQ(s.groups.size(), 2u);
  EXPECT_EQ(s.groups[0].block_bytes, 100);
  EXPECT_EQ(s.PhysicalBlocks(), 7);
  EXPECT_EQ(s.LogicalBlocks(), 11);
  EXPECT_EQ(s.SharedBlocks(), 2);
  EXPECT_EQ(s.groups[0].evictions, 9);
  // (7 - 4) * 100 + (4 - 3) * 200
  EXPECT_EQ(s.BytesSaved(), 500);
}

TEST(KvStatsTest, ReadersOnOtherThreadsSeeMonotonicCounters) {
  KvStats stats({1});
  std::atomic<bool> done{false};
  int64_t last = 0;
  bool monotonic = true;
  std::thread reader([&] {
    while (!done.load()) {
      const int64_t v = stats.Snapshot().dedup_candidates;
      monotonic = monotonic && v >= last;
      last = v;
    }
  });
  for (int i = 0; i < 100000; ++i) stats.Add(KvStats::kDedupCandidates, 1);
  done = true;
  reader.join();
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(stats.Get(KvStats::kDedupCandidates), 100000);
}

}  // namespace
}  // namespace memshare::kvmanager
