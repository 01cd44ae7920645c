#include "engine/parallel/group_consistency.h"

#include <xxhash.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memshare::engine {

void GroupConsistency::Mix(const void* data, size_t bytes) { hash_ = XXH64(data, bytes, hash_); }

void GroupConsistency::AddPlan(const StepPlan& plan) {
  const uint64_t n = plan.sequences.size();
  Mix(&n, sizeof(n));
  for (const SequenceChunk& s : plan.sequences) {
    const int64_t fields[] = {static_cast<int64_t>(s.seq_id), s.start_pos,
                              static_cast<int64_t>(s.token_ids.size()),
                              static_cast<int64_t>(s.block_tables.size())};
    Mix(fields, sizeof(fields));
    for (const std::vector<int32_t>& table : s.block_tables) {
      const uint64_t len = table.size();
      Mix(&len, sizeof(len));
      Mix(table.data(), table.size() * sizeof(int32_t));
    }
    // MemShare shifted views (empty in the common case: nothing mixed but
    // the two counts).
    for (const auto* views : {&s.block_tables_hi, &s.block_shifts}) {
      const uint64_t groups = views->size();
      Mix(&groups, sizeof(groups));
      for (const std::vector<int32_t>& v : *views) {
        const uint64_t len = v.size();
        Mix(&len, sizeof(len));
        Mix(v.data(), v.size() * sizeof(int32_t));
      }
    }
  }
}

void GroupConsistency::AddCopies(int layer_group,
                                 absl::Span<const std::pair<int32_t, int32_t>> src_dst) {
  const int64_t head[] = {-1, layer_group, static_cast<int64_t>(src_dst.size())};
  Mix(head, sizeof(head));
  for (const auto& [src, dst] : src_dst) {
    const int32_t p[] = {src, dst};
    Mix(p, sizeof(p));
  }
}

void GroupConsistency::AddDistances(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                                    absl::Span<const kvmanager::DistanceSums> sums) {
  const int64_t head[] = {-2, layer_group, static_cast<int64_t>(pairs.size())};
  Mix(head, sizeof(head));
  for (size_t i = 0; i < pairs.size(); ++i) {
    const int32_t p[] = {pairs[i].candidate, pairs[i].reference, pairs[i].reference_next,
                         pairs[i].shift};
    Mix(p, sizeof(p));
    if (i < sums.size()) {
      const double d[] = {sums[i].k_diff_sq, sums[i].k_norm_sq, sums[i].v_diff_sq,
                          sums[i].v_norm_sq};
      Mix(d, sizeof(d));
    }
  }
}

absl::Status CompareGroupHashes(absl::Span<const uint64_t> hashes, int64_t step) {
  std::vector<int> differ;
  for (size_t r = 1; r < hashes.size(); ++r) {
    if (hashes[r] != hashes[0]) differ.push_back(static_cast<int>(r));
  }
  if (differ.empty()) return absl::OkStatus();
  std::vector<std::string> all;
  for (uint64_t h : hashes) all.push_back(absl::StrCat(absl::Hex(h, absl::kZeroPad16)));
  return absl::InternalError(
      absl::StrCat("tensor-parallel consistency check failed after step ", step,
                   ": the block tables or "
                   "MemShare distances of rank",
                   differ.size() > 1 ? "s " : " ", absl::StrJoin(differ, ", "),
                   " differ from rank 0's (hashes by rank: ", absl::StrJoin(all, " "), ")"));
}

}  // namespace memshare::engine
