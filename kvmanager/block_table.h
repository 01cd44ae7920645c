// The block table of one sequence in one layer group: logical block i holds
// token positions [i * block_size, (i + 1) * block_size) and names the
// physical block(s) of the group's pool that store their K and V.
//
// Entries are of three kinds:
//  - primary: names the block written with the K/V of this entry's own
//    positions (allocated by Append, attached from the prefix cache by
//    AppendFullBlock, or inherited as such by Fork);
//  - remapped: Replace() (a MemShare remap) pointed it at another block of
//    nearly equal content;
//  - view (shifted sharing): MakeView() made it a window over the two
//    consecutive primary entries k, k + 1 at a shift s in [1, block_size):
//    its slot j reads block(k) slot j + s when j + s < block_size, else
//    block(k + 1) slot j + s - block_size. block(i) is then block(k) (the
//    "lo" block), block_hi(i) is block(k + 1) and shift(i) is s.
//
// Invariants:
//  - blocks().size() == ceil(num_tokens() / block_size): a block is allocated
//    exactly when the first token of it is appended.
//  - Every entry holds one reference on block(i) and a view holds a second
//    one on block_hi(i): Σ references held == num_blocks() + num_views()
//    (several entries may name the same block: fork, prefix-cache hit,
//    MemShare remap or view).
//  - A view's k and k + 1 are full primary entries with k + 1 < i, and stay
//    so while the view exists: an entry backing a view ("pinned") is never
//    replaced or made a view itself, so views never chain (every view reads
//    two blocks that hold K/V of their own positions of this sequence).
//  - blocks_hi() and shifts() are empty while the table has held no view
//    (since creation or the last Release()); afterwards they are dense
//    (num_blocks() entries), with block_hi(i) == block(i) and shift(i) == 0
//    for every entry that is not a view, so a reader may fetch hi
//    unconditionally.
//  - The last block, when partial, is the only one ever written. Append()
//    copies it first (copy-on-write) when another table shares it, so a
//    shared block is never written. Replace() and MakeView() refuse it; a
//    view only ever reads full blocks, which are never written again, so
//    copy-on-write never concerns a view.
//
// The destructor releases every reference still held (the table must not
// outlive its pool).
//
// Thread-compatible; movable, not copyable (a copy would hold references it
// never took — use Fork()).
#ifndef MEMSHARE_KVMANAGER_BLOCK_TABLE_H_
#define MEMSHARE_KVMANAGER_BLOCK_TABLE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvmanager/block_pool.h"

namespace memshare::kvmanager {

// A whole-block copy the backend must run before the next forward step, in
// the order given: (src, dst) physical blocks of one layer group.
using BlockCopy = std::pair<int32_t, int32_t>;

enum class BlockEntryKind : uint8_t { kPrimary, kRemapped, kView };

class BlockTable {
 public:
  // An empty table over `pool` (not owned; must outlive the table).
  // block_size > 0.
  BlockTable(BlockPool* pool, int32_t block_size) : pool_(pool), block_size_(block_size) {}
  BlockTable(BlockTable&& other) noexcept;
  BlockTable& operator=(BlockTable&& other) noexcept;
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;
  ~BlockTable() { (void)Release(); }

  int32_t num_tokens() const { return num_tokens_; }
  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  // Blocks every slot of which holds a token.
  int32_t num_full_blocks() const { return num_tokens_ / block_size_; }
  int32_t block_size() const { return block_size_; }
  absl::Span<const int32_t> blocks() const { return blocks_; }
  int32_t block(int32_t logical) const { return blocks_[logical]; }
  const BlockPool& pool() const { return *pool_; }

  // Shifted sharing (see the class comment). Both spans are empty while the
  // table has held no view, else dense.
  absl::Span<const int32_t> blocks_hi() const { return hi_; }
  absl::Span<const int32_t> shifts() const { return shifts_; }
  int32_t block_hi(int32_t logical) const { return hi_.empty() ? blocks_[logical] : hi_[logical]; }
  int32_t shift(int32_t logical) const { return shifts_.empty() ? 0 : shifts_[logical]; }
  BlockEntryKind kind(int32_t logical) const {
    return meta_.empty() ? BlockEntryKind::kPrimary : meta_[logical].kind;
  }
  bool IsPrimary(int32_t logical) const { return kind(logical) == BlockEntryKind::kPrimary; }
  // Views reading this entry (as their k or k + 1).
  int32_t pins(int32_t logical) const { return meta_.empty() ? 0 : meta_[logical].pins; }
  // The first of the two entries a view reads; -1 for other entries.
  int32_t view_reference(int32_t logical) const {
    return meta_.empty() ? -1 : meta_[logical].view_of;
  }
  int32_t num_views() const { return num_views_; }

  // Fresh blocks Append(n) would take from the pool: the blocks past the end
  // plus one when the partial last block is shared (copy-on-write).
  int32_t BlocksNeeded(int32_t n) const;

  // Appends `n` token slots (n >= 0), allocating on block boundaries. When
  // the partial last block is shared, replaces it by a fresh block and
  // appends (old, new) to *copies. RESOURCE_EXHAUSTED, with nothing changed,
  // when the pool cannot supply BlocksNeeded(n).
  absl::Status Append(int32_t n, std::vector<BlockCopy>* copies);

  // Appends a full block (a prefix-cache hit), taking a reference on it.
  // FAILED_PRECONDITION unless the table ends on a block boundary.
  absl::Status AppendFullBlock(int32_t block);

  // A table holding the same blocks, one more reference on each. The last
  // partial block stays shared until one of the two appends to it.
  absl::StatusOr<BlockTable> Fork() const;

  // Points full logical block `logical` at `block` (taking a reference) and
  // releases what it held (both blocks of a view); the entry becomes
  // remapped. FAILED_PRECONDITION for the partial last block, an index past
  // the full blocks or a pinned entry; no-op when a non-view entry already
  // names `block`.
  absl::Status Replace(int32_t logical, int32_t block);

  // Makes full logical block `logical` a view over entries `reference_logical`
  // (k) and k + 1 at `shift`, taking a reference on block(k) and on
  // block(k + 1) and releasing what the entry held. FAILED_PRECONDITION
  // unless 1 <= shift < block_size, 0 <= k, k + 1 < logical < the full
  // blocks, k and k + 1 are primary, and `logical` is not pinned.
  absl::Status MakeView(int32_t logical, int32_t reference_logical, int32_t shift);

  // Checks the invariants above that concern entries, O(num_blocks()):
  // kinds, views and pins, the dense arrays. INTERNAL naming the first
  // violation. For tests and KvManager::CheckInvariants.
  absl::Status CheckEntries() const;

  // Releases every reference (last block first, so the pool's LRU evicts
  // the tail of a prefix before its head) and empties the table.
  // Idempotent.
  absl::Status Release();

 private:
  struct EntryMeta {
    int32_t view_of = -1;  // a view's k
    int32_t pins = 0;      // views reading this entry
    BlockEntryKind kind = BlockEntryKind::kPrimary;
  };

  // Extends the optional per-entry arrays (when present) to blocks_.size().
  void ExtendExtras();
  // Allocates the optional arrays on first use.
  void EnsureMeta();
  void EnsureViewArrays();
  // Releases the references of entry `logical` and its pins on others
  // (the entry itself is then overwritten by the caller).
  absl::Status ReleaseEntry(int32_t logical);

  BlockPool* pool_;
  int32_t block_size_;
  int32_t num_tokens_ = 0;
  // Physical block of each entry (a view's lo block).
  std::vector<int32_t> blocks_;
  // Empty, or dense: a view's hi block (block(i) for other entries).
  std::vector<int32_t> hi_;
  // Empty, or dense: a view's shift (0 for other entries).
  std::vector<int32_t> shifts_;
  // Empty while every entry is primary and unpinned, else dense.
  std::vector<EntryMeta> meta_;
  int32_t num_views_ = 0;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_BLOCK_TABLE_H_
