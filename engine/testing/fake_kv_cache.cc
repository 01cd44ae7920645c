#include "engine/testing/fake_kv_cache.h"

#include "absl/strings/str_cat.h"

namespace memshare::engine {

FakeKvCache::FakeKvCache(int32_t num_layer_groups, int64_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size), free_(num_layer_groups) {
  for (int g = 0; g < num_layer_groups; ++g) {
    // Groups hand out different ids, so a scheduler mixing them up is seen.
    for (int64_t b = 0; b < num_blocks; ++b) {
      free_[g].push_back(static_cast<int32_t>(g % 2 == 0 ? num_blocks - 1 - b : b));
    }
  }
}

absl::StatusOr<int32_t> FakeKvCache::Open(uint64_t seq_id, absl::Span<const int32_t>,
                                          const SequenceKvOptions&) {
  if (tables_.contains(seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq_id, " is open"));
  }
  tables_[seq_id].resize(free_.size());
  return 0;
}

absl::Status FakeKvCache::Reserve(uint64_t seq_id, int32_t num_tokens) {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return absl::NotFoundError(absl::StrCat("sequence ", seq_id));
  const size_t want = (static_cast<size_t>(num_tokens) + block_size_ - 1) / block_size_;
  const size_t have = it->second[0].size();
  if (want <= have) return absl::OkStatus();
  if (free_[0].size() < want - have) {
    return absl::ResourceExhaustedError(absl::StrCat("KV pool: ", want - have, " blocks wanted, ",
                                                     free_[0].size(), " free"));
  }
  for (size_t g = 0; g < free_.size(); ++g) {
    for (size_t i = have; i < want; ++i) {
      it->second[g].push_back(free_[g].back());
      free_[g].pop_back();
    }
  }
  return absl::OkStatus();
}

absl::Status FakeKvCache::Commit(uint64_t seq_id, absl::Span<const int32_t> tokens) {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return absl::NotFoundError(absl::StrCat("sequence ", seq_id));
  if (tokens.size() > it->second[0].size() * static_cast<size_t>(block_size_)) {
    return absl::FailedPreconditionError("commit beyond reserved blocks");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<int32_t>>> FakeKvCache::BlockTables(
    uint64_t seq_id) const {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return absl::NotFoundError(absl::StrCat("sequence ", seq_id));
  return it->second;
}

void FakeKvCache::Close(uint64_t seq_id) {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return;
  for (size_t g = 0; g < free_.size(); ++g) {
    for (int32_t b : it->second[g]) free_[g].push_back(b);
  }
  tables_.erase(it);
}

KvCacheUsage FakeKvCache::usage() const {
  KvCacheUsage u;
  u.total_blocks = num_blocks_;
  u.used_blocks = num_blocks_ - static_cast<int64_t>(free_[0].size());
  u.logical_blocks = u.used_blocks;
  return u;
}

SequenceKvUsage FakeKvCache::sequence_usage(uint64_t seq_id) const {
  SequenceKvUsage u;
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return u;
  u.physical_blocks = u.logical_blocks = static_cast<int32_t>(it->second[0].size());
  return u;
}

}  // namespace memshare::engine
