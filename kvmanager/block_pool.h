// The physical KV blocks of one layer group on one rank (DESIGN.md §4), and
// their reference counts.
//
// Handle discipline (LevelDB include/leveldb/cache.h): whoever takes a
// reference releases it, exactly once. Allocate() hands out a block with one
// reference; Ref() adds one; Unref() drops one. The pool owns the counts; a
// block table entry holds one reference, and nothing else does (the prefix
// cache marks blocks "cached" but holds no reference). Releasing a block that
// holds no reference (double release) or referencing a free block
// (use-after-free) is detected: an assertion in debug builds, a
// FAILED_PRECONDITION status in release builds (see internal/status_macros.h).
//
// Every block is in exactly one state:
//   kFree       ref == 0, not cached: on the free list, content meaningless.
//   kEvictable  ref == 0, cached: still holds the prefix content the prefix
//               cache knows it by; on the LRU list, oldest release first.
//               Ref() revives it; Allocate() takes it (evicting its content)
//               only when the free list is empty.
//   kInUse      ref >= 1 (cached or not): on no list.
// So a block that is referenced is never on a list, and eviction can only
// ever take an unreferenced block.
//
// Thread-compatible: one thread (the scheduler's) calls every method; the
// counters may be read by that thread only (KvStats publishes them).
#ifndef MEMSHARE_KVMANAGER_BLOCK_POOL_H_
#define MEMSHARE_KVMANAGER_BLOCK_POOL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace memshare::kvmanager {

enum class BlockState : uint8_t { kFree, kEvictable, kInUse };

// Told when the pool evicts a cached block to hand it out fresh. Implemented
// by the prefix cache, which forgets the content it knew the block by.
class BlockEvictionListener {
 public:
  virtual ~BlockEvictionListener() = default;
  // `block` of pool `layer_group` was kEvictable and is now allocated, no
  // longer cached. Must not allocate from the same pool.
  virtual void OnBlockEvicted(int32_t layer_group, int32_t block) = 0;
};

class BlockPool {
 public:
  struct Options {
    // The layer group this pool serves (reported to the eviction listener and
    // in messages).
    int32_t layer_group = 0;
    // Physical blocks in the pool; ids are 0 .. num_blocks - 1. > 0.
    int32_t num_blocks = 0;
  };

  static absl::StatusOr<std::unique_ptr<BlockPool>> Create(const Options& options);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;
  // Asserts (debug) that no block is still referenced.
  ~BlockPool();

  // A fresh block with one reference, uncached: from the free list, else the
  // least recently released evictable block (its content is evicted and the
  // listener told). RESOURCE_EXHAUSTED when every block is in use.
  absl::StatusOr<int32_t> Allocate();
  // `n` fresh blocks appended to *out, or RESOURCE_EXHAUSTED with nothing
  // taken (and *out unchanged) when fewer than n are available.
  absl::Status Allocate(int32_t n, std::vector<int32_t>* out);

  // Adds a reference to a block that is in use or evictable (reviving it).
  // Misuse: a free block or an id outside the pool.
  absl::Status Ref(int32_t block);
  // Drops a reference. At zero the block goes to the LRU if cached, else to
  // the free list. Misuse: a block with no reference.
  absl::Status Unref(int32_t block);

  // Marks a block in use as holding cached prefix content (it goes to the
  // LRU instead of the free list when released). Misuse unless kInUse.
  absl::Status SetCached(int32_t block);
  // Forgets that a block is cached; an evictable block moves to the free
  // list. No-op on an uncached block. Misuse for an id outside the pool.
  absl::Status ClearCached(int32_t block);

  // At most one listener; nullptr removes it.
  void SetEvictionListener(BlockEvictionListener* listener) { listener_ = listener; }

  int32_t layer_group() const { return layer_group_; }
  int32_t num_blocks() const { return static_cast<int32_t>(meta_.size()); }
  // Blocks Allocate() can hand out: free plus evictable.
  int32_t num_available() const { return num_free() + num_evictable_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_evictable() const { return num_evictable_; }
  // Physical blocks in use (ref >= 1).
  int32_t num_in_use() const { return num_blocks() - num_available(); }
  // Σ ref over all blocks: the logical blocks the pool backs.
  int64_t total_refs() const { return total_refs_; }
  // Blocks with ref >= 2.
  int32_t num_shared() const { return num_shared_; }
  // Evictable blocks handed out fresh since creation.
  int64_t num_evictions() const { return num_evictions_; }

  // For a valid id; 0 for a free or evictable block.
  int32_t ref_count(int32_t block) const { return meta_[block].ref; }
  BlockState state(int32_t block) const { return meta_[block].state; }
  bool cached(int32_t block) const { return meta_[block].cached; }
  bool IsValid(int32_t block) const { return block >= 0 && block < num_blocks(); }

  // Checks every list and counter against the per-block state, O(num_blocks).
  // INTERNAL with a description of the first violation.
  absl::Status CheckInvariants() const;

 private:
  explicit BlockPool(const Options& options);

  struct Meta {
    int32_t ref = 0;
    // LRU links, meaningful only while state == kEvictable (-1 = none).
    int32_t lru_prev = -1;
    int32_t lru_next = -1;
    BlockState state = BlockState::kFree;
    bool cached = false;
  };

  absl::Status OutOfRange(int32_t block) const;
  void LruPushBack(int32_t block);
  void LruRemove(int32_t block);
  // Pops a fresh block; requires num_available() > 0.
  int32_t TakeFresh();

  const int32_t layer_group_;
  std::vector<Meta> meta_;
  // Ids of the kFree blocks, a stack (the most recently freed is reused
  // first). Holds exactly the blocks whose state is kFree.
  std::vector<int32_t> free_;
  // Doubly linked through Meta::lru_prev/next: exactly the kEvictable blocks,
  // head = released longest ago (evicted first).
  int32_t lru_head_ = -1;
  int32_t lru_tail_ = -1;
  int32_t num_evictable_ = 0;
  int64_t total_refs_ = 0;
  int32_t num_shared_ = 0;
  int64_t num_evictions_ = 0;
  BlockEvictionListener* listener_ = nullptr;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_BLOCK_POOL_H_
