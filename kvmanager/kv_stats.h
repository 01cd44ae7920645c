// Counters and gauges of the KV store (DESIGN.md §6): what the Prometheus
// metrics memshare_kv_* export.
//
// Definitions (per layer group g, then summed where noted):
//  - physical_blocks: blocks in use (ref >= 1).
//  - logical_blocks:  block-table entries, i.e. the blocks that would be in
//    use if nothing were shared. logical − physical = blocks saved by
//    sharing (fork, prefix cache, MemShare), and
//    bytes_saved = Σ_g (logical_g − physical_g) × block_bytes_g.
//  - shared_blocks:   physical blocks with ref >= 2.
//  - cached_blocks:   unreferenced blocks still holding prefix-cache content
//    (evictable); free_blocks: the rest of the unused ones.
//  - prefix_cache_queries / _hits: full prompt blocks looked up at admission
//    / found (counted only for admitted sequences).
//  - dedup_steps: finished steps indexed; dedup_candidate_steps: earlier
//    steps passing tau_lex. Then the funnel, in block pairs (one per layer
//    group allowed to share): dedup_candidates: pairs the alignment proposed;
//    dedup_verified: pairs whose K/V distance was computed (candidates whose
//    blocks are already shared are not); dedup_rejected: verified pairs
//    failing tau_kv; dedup_remapped: blocks actually remapped (a block
//    accepted against several candidates is remapped once), of which
//    dedup_remapped_shifted became shifted views (a window over two
//    blocks, block_table.h).
//  - logical_blocks counts block-table entries, not references: a shifted
//    view holds two references but is one logical block.
//  - prefix_cache_evictions: prefix-cache entries dropped because a pool
//    needed one of their blocks (an entry holds one block per group; the
//    group that needed it counts a block eviction in Group::evictions, the
//    others' blocks just become free). cow_copies: copy-on-write block
//    copies requested.
//
// Thread-safety: one writer (the scheduler thread, through KvManager) and
// any number of readers. Every field is a relaxed atomic: Snapshot() may be
// called from any thread (the metrics endpoint) and sees each value whole,
// but not all values at the same instant.
#ifndef MEMSHARE_KVMANAGER_KV_STATS_H_
#define MEMSHARE_KVMANAGER_KV_STATS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace memshare::kvmanager {

struct KvStatsSnapshot {
  struct Group {
    int64_t total_blocks = 0;
    int64_t physical_blocks = 0;
    int64_t logical_blocks = 0;
    int64_t shared_blocks = 0;
    int64_t cached_blocks = 0;
    int64_t free_blocks = 0;
    int64_t evictions = 0;
    int64_t block_bytes = 0;
  };
  std::vector<Group> groups;

  int64_t sequences = 0;
  int64_t prefix_cache_entries = 0;
  int64_t prefix_cache_evictions = 0;
  int64_t prefix_cache_queries = 0;
  int64_t prefix_cache_hits = 0;
  int64_t dedup_steps = 0;
  int64_t dedup_candidate_steps = 0;
  int64_t dedup_candidates = 0;
  int64_t dedup_verified = 0;
  int64_t dedup_rejected = 0;
  int64_t dedup_remapped = 0;
  int64_t dedup_remapped_shifted = 0;
  int64_t cow_copies = 0;

  int64_t PhysicalBlocks() const;
  int64_t LogicalBlocks() const;
  int64_t SharedBlocks() const;
  int64_t BytesSaved() const;
};

class KvStats {
 public:
  enum Counter {
    kPrefixCacheQueries,
    kPrefixCacheHits,
    kDedupSteps,
    kDedupCandidateSteps,
    kDedupCandidates,
    kDedupVerified,
    kDedupRejected,
    kDedupRemapped,
    kCowCopies,
    kDedupRemappedShifted,
    kNumCounters,
  };

  // block_bytes: bytes of one block of each layer group (its size is the
  // number of groups).
  explicit KvStats(std::vector<int64_t> block_bytes);
  KvStats(const KvStats&) = delete;
  KvStats& operator=(const KvStats&) = delete;

  // Writer only.
  void Add(Counter counter, int64_t n) {
    auto& c = counters_[counter];
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void SetGroup(int32_t group, const KvStatsSnapshot::Group& values);
  void SetSequences(int64_t n) { sequences_.store(n, std::memory_order_relaxed); }
  void SetPrefixCache(int64_t entries, int64_t evicted_entries) {
    prefix_entries_.store(entries, std::memory_order_relaxed);
    prefix_evictions_.store(evicted_entries, std::memory_order_relaxed);
  }

  // Any thread.
  KvStatsSnapshot Snapshot() const;
  int64_t Get(Counter counter) const { return counters_[counter].load(std::memory_order_relaxed); }

 private:
  struct GroupGauges {
    std::atomic<int64_t> total{0}, physical{0}, logical{0}, shared{0}, cached{0}, free{0},
        evictions{0};
    int64_t block_bytes = 0;
  };

  std::unique_ptr<GroupGauges[]> groups_;
  int32_t num_groups_;
  std::atomic<int64_t> counters_[kNumCounters] = {};
  std::atomic<int64_t> sequences_{0};
  std::atomic<int64_t> prefix_entries_{0};
  std::atomic<int64_t> prefix_evictions_{0};
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_KV_STATS_H_
