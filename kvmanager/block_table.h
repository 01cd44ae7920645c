// The block table of one sequence in one layer group: logical block i holds
// token positions [i * block_size, (i + 1) * block_size) and names the
// physical block of the group's pool that stores their K and V.
//
// Invariants:
//  - blocks().size() == ceil(num_tokens() / block_size): a block is allocated
//    exactly when the first token of it is appended.
//  - Every entry holds one reference on its block (several entries may name
//    the same block: fork, prefix-cache hit, MemShare remap).
//  - The last block, when partial, is the only one ever written. Append()
//    copies it first (copy-on-write) when another table shares it, so a
//    shared block is never written. Replace() (MemShare remap) refuses it.
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
  // releases the block it named. FAILED_PRECONDITION for the partial last
  // block or an index past the full blocks; no-op when it already names it.
  absl::Status Replace(int32_t logical, int32_t block);

  // Releases every reference (last block first, so the pool's LRU evicts
  // the tail of a prefix before its head) and empties the table.
  // Idempotent.
  absl::Status Release();

 private:
  BlockPool* pool_;
  int32_t block_size_;
  int32_t num_tokens_ = 0;
  std::vector<int32_t> blocks_;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_BLOCK_TABLE_H_
