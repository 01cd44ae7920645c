// A BlockDistance over a simulated KV store for tests: every slot of every
// block holds one int (the token whose K/V it "stores", -1 when empty).
// A candidate's distance to its reference (a whole block, or a shifted
// window over two blocks, block_distance.h) is the count of slots that
// differ:
//   k_diff_sq = v_diff_sq = #differing slots,  k_norm_sq = v_norm_sq = block_size
// so RelativeK = sqrt(differing / block_size), and any tau_kv below
// sqrt(1 / block_size) accepts exactly the pairs with identical content.
// A test may override the sums per pair or inject an error.
//
// Thread-compatible.
#ifndef MEMSHARE_KVMANAGER_TESTING_FAKE_BLOCK_DISTANCE_H_
#define MEMSHARE_KVMANAGER_TESTING_FAKE_BLOCK_DISTANCE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvmanager/block_distance.h"
#include "kvmanager/block_table.h"

namespace memshare::kvmanager::testing {

class FakeBlockDistance : public BlockDistance {
 public:
  FakeBlockDistance(int32_t num_groups, int32_t num_blocks, int32_t block_size)
      : num_groups_(num_groups),
        num_blocks_(num_blocks),
        block_size_(block_size),
        store_(size_t{1} * num_groups * num_blocks * block_size, -1) {}

  int32_t Read(int32_t group, int32_t block, int32_t slot) const {
    return store_[Index(group, block, slot)];
  }
  void Write(int32_t group, int32_t block, int32_t slot, int32_t value) {
    store_[Index(group, block, slot)] = value;
  }
  // Slot `slot` of the reference of `pair` (its window when shifted).
  int32_t ReadReference(int32_t group, const BlockPair& pair, int32_t slot) const {
    const int32_t s = slot + pair.shift;
    return s < block_size_ ? Read(group, pair.reference, s)
                           : Read(group, pair.reference_next, s - block_size_);
  }
  void CopyBlock(int32_t group, int32_t src, int32_t dst) {
    for (int32_t s = 0; s < block_size_; ++s) Write(group, dst, s, Read(group, src, s));
  }
  // Runs copies as the backend would: per group, in order.
  void RunCopies(const std::vector<std::vector<BlockCopy>>& copies) {
    for (size_t g = 0; g < copies.size(); ++g) {
      for (const BlockCopy& c : copies[g]) CopyBlock(static_cast<int32_t>(g), c.first, c.second);
    }
  }
  std::vector<int32_t>& store() { return store_; }

  // When set, decides every pair's sums instead of the content.
  std::function<DistanceSums(int32_t group, const BlockPair& pair)> override_sums;
  // When not OK, ComputeDistanceSums returns it (and counts the call).
  absl::Status fail_with;

  int64_t calls() const { return calls_; }
  // Pairs of each call, in call order, with their group.
  const std::vector<std::pair<int32_t, size_t>>& call_log() const { return call_log_; }

  absl::Status ComputeDistanceSums(int layer_group, absl::Span<const BlockPair> pairs,
                                   absl::Span<DistanceSums> out) override {
    ++calls_;
    call_log_.emplace_back(layer_group, pairs.size());
    if (!fail_with.ok()) return fail_with;
    if (layer_group < 0 || layer_group >= num_groups_) {
      return absl::InvalidArgumentError(absl::StrCat("no layer group ", layer_group));
    }
    if (out.size() != pairs.size()) return absl::InvalidArgumentError("out.size() != pairs");
    for (size_t i = 0; i < pairs.size(); ++i) {
      const BlockPair& p = pairs[i];
      if (p.candidate < 0 || p.candidate >= num_blocks_ || p.reference < 0 ||
          p.reference >= num_blocks_ ||
          (p.shift > 0 && (p.reference_next < 0 || p.reference_next >= num_blocks_))) {
        return absl::InvalidArgumentError(absl::StrCat("pair ", i, " (", p.candidate, ", ",
                                                       p.reference, ", ", p.reference_next,
                                                       ") outside the pool"));
      }
      if (p.shift < 0 || p.shift >= block_size_) {
        return absl::InvalidArgumentError(absl::StrCat("pair ", i, " shift ", p.shift));
      }
      if (override_sums) {
        out[i] = override_sums(layer_group, p);
        continue;
      }
      double differ = 0;
      for (int32_t s = 0; s < block_size_; ++s) {
        differ += Read(layer_group, p.candidate, s) != ReadReference(layer_group, p, s);
      }
      out[i] = DistanceSums{differ, static_cast<double>(block_size_), differ,
                            static_cast<double>(block_size_)};
    }
    return absl::OkStatus();
  }

 private:
  size_t Index(int32_t group, int32_t block, int32_t slot) const {
    return (size_t{1} * group * num_blocks_ + block) * block_size_ + slot;
  }

  int32_t num_groups_;
  int32_t num_blocks_;
  int32_t block_size_;
  std::vector<int32_t> store_;
  int64_t calls_ = 0;
  std::vector<std::pair<int32_t, size_t>> call_log_;
};

}  // namespace memshare::kvmanager::testing

#endif  // MEMSHARE_KVMANAGER_TESTING_FAKE_BLOCK_DISTANCE_H_
