#include "kvmanager/kv_stats.h"

namespace memshare::kvmanager {

int64_t KvStatsSnapshot::PhysicalBlocks() const {
  int64_t n = 0;
  for (const Group& g : groups) n += g.physical_blocks;
  return n;
}

int64_t KvStatsSnapshot::LogicalBlocks() const {
  int64_t n = 0;
  for (const Group& g : groups) n += g.logical_blocks;
  return n;
}

int64_t KvStatsSnapshot::SharedBlocks() const {
  int64_t n = 0;
  for (const Group& g : groups) n += g.shared_blocks;
  return n;
}

int64_t KvStatsSnapshot::BytesSaved() const {
  int64_t n = 0;
  for (const Group& g : groups) n += (g.logical_blocks - g.physical_blocks) * g.block_bytes;
  return n;
}

KvStats::KvStats(std::vector<int64_t> block_bytes)
    : groups_(new GroupGauges[block_bytes.size()]),
      num_groups_(static_cast<int32_t>(block_bytes.size())) {
  for (int32_t g = 0; g < num_groups_; ++g) groups_[g].block_bytes = block_bytes[g];
}

void KvStats::SetGroup(int32_t group, const KvStatsSnapshot::Group& v) {
  GroupGauges& g = groups_[group];
  constexpr auto kRelaxed = std::memory_order_relaxed;
  g.total.store(v.total_blocks, kRelaxed);
  g.physical.store(v.physical_blocks, kRelaxed);
  g.logical.store(v.logical_blocks, kRelaxed);
  g.shared.store(v.shared_blocks, kRelaxed);
  g.cached.store(v.cached_blocks, kRelaxed);
  g.free.store(v.free_blocks, kRelaxed);
  g.evictions.store(v.evictions, kRelaxed);
}

KvStatsSnapshot KvStats::Snapshot() const {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  KvStatsSnapshot s;
  s.groups.resize(num_groups_);
  for (int32_t i = 0; i < num_groups_; ++i) {
    const GroupGauges& g = groups_[i];
    KvStatsSnapshot::Group& o = s.groups[i];
    o.total_blocks = g.total.load(kRelaxed);
    o.physical_blocks = g.physical.load(kRelaxed);
    o.logical_blocks = g.logical.load(kRelaxed);
    o.shared_blocks = g.shared.load(kRelaxed);
    o.cached_blocks = g.cached.load(kRelaxed);
    o.free_blocks = g.free.load(kRelaxed);
    o.evictions = g.evictions.load(kRelaxed);
    o.block_bytes = g.block_bytes;
  }
  s.sequences = sequences_.load(kRelaxed);
  s.prefix_cache_entries = prefix_entries_.load(kRelaxed);
  s.prefix_cache_evictions = prefix_evictions_.load(kRelaxed);
  s.prefix_cache_queries = Get(kPrefixCacheQueries);
  s.prefix_cache_hits = Get(kPrefixCacheHits);
  s.dedup_steps = Get(kDedupSteps);
  s.dedup_candidate_steps = Get(kDedupCandidateSteps);
  s.dedup_candidates = Get(kDedupCandidates);
  s.dedup_verified = Get(kDedupVerified);
  s.dedup_rejected = Get(kDedupRejected);
  s.dedup_remapped = Get(kDedupRemapped);
  s.dedup_remapped_shifted = Get(kDedupRemappedShifted);
  s.cow_copies = Get(kCowCopies);
  return s;
}

}  // namespace memshare::kvmanager
