// A KvCache for scheduler tests until kvmanager's store is wired in: a free
// list per layer group and one block table per sequence and group; no prefix
// cache (Open reuses nothing), no MemShare (Deduplicate does nothing).
// Freed blocks are handed out again last-in first-out, so a scheduler that
// keeps using a freed block sees it overwritten soon.
//
// Thread-compatible.
#ifndef MEMSHARE_ENGINE_TESTING_FAKE_KV_CACHE_H_
#define MEMSHARE_ENGINE_TESTING_FAKE_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/kv_cache.h"

namespace memshare::engine {

class FakeKvCache : public KvCache {
 public:
  FakeKvCache(int32_t num_layer_groups, int64_t num_blocks, int32_t block_size);

  int32_t block_size() const override { return block_size_; }
  int32_t num_layer_groups() const override { return static_cast<int32_t>(free_.size()); }
  int64_t num_blocks() const override { return num_blocks_; }
  int64_t num_free_blocks() const override { return static_cast<int64_t>(free_[0].size()); }
  absl::StatusOr<int32_t> Open(uint64_t seq_id, absl::Span<const int32_t> tokens,
                               const SequenceKvOptions& options) override;
  absl::Status Reserve(uint64_t seq_id, int32_t num_tokens) override;
  absl::Status Commit(uint64_t seq_id, absl::Span<const int32_t> tokens) override;
  absl::StatusOr<std::vector<std::vector<int32_t>>> BlockTables(uint64_t seq_id) const override;
  void Close(uint64_t seq_id) override;
  std::vector<std::vector<std::pair<int32_t, int32_t>>> TakePendingCopies() override {
    return std::vector<std::vector<std::pair<int32_t, int32_t>>>(free_.size());
  }
  absl::Status Deduplicate(kvmanager::BlockDistance&) override { return absl::OkStatus(); }
  KvCacheUsage usage() const override;
  SequenceKvUsage sequence_usage(uint64_t seq_id) const override;

  int64_t open_sequences() const { return static_cast<int64_t>(tables_.size()); }

 private:
  const int64_t num_blocks_;
  const int32_t block_size_;
  std::vector<std::vector<int32_t>> free_;  // [group] free block ids, next at the back
  absl::flat_hash_map<uint64_t, std::vector<std::vector<int32_t>>> tables_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_TESTING_FAKE_KV_CACHE_H_
