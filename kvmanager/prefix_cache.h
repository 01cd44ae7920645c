// The prefix cache (DESIGN.md §4): across requests, exact. A full block of
// tokens is known by the chained hash
//   h_0 = ChainHash(RootHash(salt), tokens[0, B))
//   h_i = ChainHash(h_{i-1},        tokens[i*B, (i+1)*B))
// (xxHash XXH3-64; the salt isolates tenants). One entry per hash names one
// physical block per layer group whose K/V are exactly those of the prefix
// ending with block i. An entry also stores its parent hash and its tokens,
// and Lookup() compares them, so a 64-bit hash collision can never serve a
// wrong block: a hit is exact by induction over the chain (the salt alone is
// known only through its 64-bit hash).
//
// The cache holds no references. It marks its blocks cached in their pools;
// an unreferenced cached block waits on the pool's LRU and is evicted only
// when the pool needs a fresh block (never while referenced: referenced
// blocks are on no list). An eviction in any group drops the whole entry
// (a hit needs every group), and the entry's blocks in the other groups are
// uncached (moved to the free list if unreferenced).
//
// Invariants (CheckInvariants):
//  - a block is cached in its pool iff exactly one entry names it;
//  - an entry's blocks are in use or evictable, never free;
//  - entries <= blocks per pool (a block is in at most one entry).
//
// Thread-compatible: the scheduler thread calls every method.
#ifndef MEMSHARE_KVMANAGER_PREFIX_CACHE_H_
#define MEMSHARE_KVMANAGER_PREFIX_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvmanager/block_pool.h"

namespace memshare::kvmanager {

class PrefixCache : public BlockEvictionListener {
 public:
  struct Options {
    // Tokens per block. > 0.
    int32_t block_size = 16;
  };

  // The longest cached run of full blocks from the start of a token list.
  struct Match {
    int32_t num_blocks = 0;
    // Chain hash of each matched block ([num_blocks]).
    std::vector<uint64_t> hashes;
    // Physical blocks, [num_blocks][num_layer_groups] flattened.
    std::vector<int32_t> blocks;
  };

  // One pool per layer group, in group order (not owned; they must outlive
  // the cache, all with the same number of blocks). Registers the cache as
  // their eviction listener.
  static absl::StatusOr<std::unique_ptr<PrefixCache>> Create(const Options& options,
                                                             std::vector<BlockPool*> pools);

  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;
  // Unregisters from the pools and uncaches every block.
  ~PrefixCache() override;

  // The parent hash of the first block of a sequence with this cache salt.
  static uint64_t RootHash(absl::string_view salt);
  static uint64_t ChainHash(uint64_t parent, absl::Span<const int32_t> block_tokens);

  // Fills *out with the longest cached prefix of the full blocks of
  // `tokens`, at most `max_blocks` blocks. No side effects: takes no
  // reference and does not touch the LRU order (the caller references what
  // it uses).
  void Lookup(absl::Span<const int32_t> tokens, uint64_t root, int32_t max_blocks,
              Match* out) const;

  // Registers `blocks` (one per group, each referenced by the caller) as
  // holding the full block `block_tokens` whose chain hash is `hash` and
  // whose parent is `parent` (hash == ChainHash(parent, block_tokens)).
  // Returns false and changes nothing when an entry for `hash` exists or one
  // of the blocks is already cached; true when inserted.
  absl::StatusOr<bool> Insert(uint64_t parent, uint64_t hash,
                              absl::Span<const int32_t> block_tokens,
                              absl::Span<const int32_t> blocks);

  // Drops every entry (unreferenced cached blocks become free). Returns how
  // many entries were dropped.
  int32_t Clear();

  int32_t num_entries() const { return static_cast<int32_t>(index_.size()); }
  int32_t num_layer_groups() const { return static_cast<int32_t>(pools_.size()); }
  int32_t block_size() const { return block_size_; }
  // Entries dropped because a pool evicted one of their blocks.
  int64_t num_evicted_entries() const { return num_evicted_entries_; }
  // Whether an entry names `block` of `layer_group` (valid ids only).
  bool Contains(int32_t layer_group, int32_t block) const {
    return entry_of_[layer_group][block] >= 0;
  }

  absl::Status CheckInvariants() const;

 private:
  PrefixCache(const Options& options, std::vector<BlockPool*> pools);

  void OnBlockEvicted(int32_t layer_group, int32_t block) override;
  // Forgets entry `e`; uncaches its blocks in every group but `skip_group`
  // (whose pool has uncached it already).
  void RemoveEntry(int32_t e, int32_t skip_group);

  struct Entry {
    uint64_t hash = 0;
    uint64_t parent = 0;
    bool live = false;
  };

  const int32_t block_size_;
  const std::vector<BlockPool*> pools_;
  // Slots of entries; a dead slot is on free_entries_.
  std::vector<Entry> entries_;
  // [slot][block_size] tokens of each entry.
  std::vector<int32_t> entry_tokens_;
  // [slot][group] physical blocks of each entry.
  std::vector<int32_t> entry_blocks_;
  std::vector<int32_t> free_entries_;
  // hash -> slot, exactly the live entries.
  absl::flat_hash_map<uint64_t, int32_t> index_;
  // [group][block] -> slot of the entry naming the block, or -1.
  std::vector<std::vector<int32_t>> entry_of_;
  int64_t num_evicted_entries_ = 0;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_PREFIX_CACHE_H_
