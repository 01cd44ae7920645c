// The scheduler's view of the paged KV store: per-sequence block tables over
// the pool of each layer group, the prefix cache, and MemShare dedup
// (DESIGN.md §4). kvmanager/ implements the store; this header is the seam
// the scheduler is written against, so it stays free of kvmanager's
// internals and can be driven by a fake in its tests.
//
// Contract every implementation keeps:
//   - A sequence is Open()ed once per residency and Close()d when it
//     finishes or is preempted; Close() releases every block reference at
//     once (blocks go back to the pool, or to the prefix cache's LRU).
//   - Reserve() either makes room for the positions asked for in every layer
//     group or returns RESOURCE_EXHAUSTED and changes nothing.
//   - Block tables are only read between calls that change them.
//
// Thread-compatible: the scheduler thread calls it.
#ifndef MEMSHARE_ENGINE_KV_CACHE_H_
#define MEMSHARE_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvmanager/block_distance.h"

namespace memshare::engine {

// Per-sequence options of the KV store.
struct SequenceKvOptions {
  // Prefix-cache isolation between tenants.
  std::string cache_salt;
  // Whether MemShare dedup runs on this sequence's generated blocks.
  bool memshare = false;
  // Thresholds for MemShare; negative = the store's defaults.
  float tau_lex = -1.0f;
  float tau_kv = -1.0f;
  // Number of prompt tokens (dedup looks at generated tokens only).
  int32_t prompt_len = 0;
};

// Whole-pool figures (layer group 0; every group has as many blocks).
struct KvCacheUsage {
  int64_t total_blocks = 0;
  int64_t used_blocks = 0;     // physical blocks referenced by a sequence
  int64_t logical_blocks = 0;  // block-table entries of live sequences
  int64_t shared_blocks = 0;   // physical blocks referenced more than once
  int64_t bytes_saved = 0;     // (logical - used) × block bytes, over every group
  int64_t prefix_cache_queries = 0;  // blocks looked up
  int64_t prefix_cache_hits = 0;     // blocks reused
  int64_t dedup_candidates = 0;
  int64_t dedup_verified = 0;
  int64_t dedup_rejected = 0;
  int64_t dedup_remapped = 0;  // logical blocks remapped by MemShare
};

// One sequence's figures (layer group 0).
struct SequenceKvUsage {
  int32_t physical_blocks = 0;  // distinct physical blocks in its table
  int32_t logical_blocks = 0;   // entries in its table
  int32_t remapped_blocks = 0;  // its entries remapped by MemShare so far
};

class KvCache {
 public:
  virtual ~KvCache() = default;

  virtual int32_t block_size() const = 0;
  virtual int32_t num_layer_groups() const = 0;
  // Blocks per layer group.
  virtual int64_t num_blocks() const = 0;
  // Blocks a Reserve() could take without failing (free plus evictable).
  virtual int64_t num_free_blocks() const = 0;

  // Starts a residency of `seq_id`. Reuses the longest run of whole blocks
  // of `tokens` held in the prefix cache under options.cache_salt and
  // returns its length in tokens (a multiple of block_size, <= tokens.size()).
  // ALREADY_EXISTS if the sequence is open.
  virtual absl::StatusOr<int32_t> Open(uint64_t seq_id, absl::Span<const int32_t> tokens,
                                       const SequenceKvOptions& options) = 0;

  // Makes positions [0, num_tokens) writable in every layer group.
  // RESOURCE_EXHAUSTED (nothing changed) when the pool lacks blocks.
  virtual absl::Status Reserve(uint64_t seq_id, int32_t num_tokens) = 0;

  // The backend has written the KV of tokens[0, tokens.size()): whole blocks
  // become reusable through the prefix cache, and generated tokens feed the
  // MemShare segmenter.
  virtual absl::Status Commit(uint64_t seq_id, absl::Span<const int32_t> tokens) = 0;

  // [layer group][logical block] -> physical block.
  virtual absl::StatusOr<std::vector<std::vector<int32_t>>> BlockTables(uint64_t seq_id) const = 0;

  // Ends the residency; every block reference of the sequence is released.
  // No-op for a sequence that is not open.
  virtual void Close(uint64_t seq_id) = 0;

  // Block copies (per layer group, src -> dst) the backend must run before
  // the next Forward: copy-on-write of shared blocks about to be written.
  virtual std::vector<std::vector<std::pair<int32_t, int32_t>>> TakePendingCopies() = 0;

  // Runs MemShare dedup on the reasoning steps finished since the last call,
  // verifying candidates through `distance`.
  virtual absl::Status Deduplicate(kvmanager::BlockDistance& distance) = 0;

  virtual KvCacheUsage usage() const = 0;
  virtual SequenceKvUsage sequence_usage(uint64_t seq_id) const = 0;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_KV_CACHE_H_
