#include "engine/cuda/shard_sampling.h"

#include <cstddef>

namespace memshare::engine::cuda {

bool GreedyOnShards(const StepPlan& plan, absl::Span<const int32_t> rows) {
  if (rows.empty()) return false;
  for (int32_t r : rows) {
    if (r < 0 || static_cast<size_t>(r) >= plan.sequences.size()) return false;
    const SequenceChunk& s = plan.sequences[r];
    if (!s.sampling.has_value()) return false;
    const DeviceSampling& d = *s.sampling;
    if (!(d.temperature <= 0.f) || d.return_logprob || d.return_logits) return false;
  }
  return true;
}

int64_t CountShardPenalties(const DeviceSampling& d, int64_t begin, int64_t end) {
  int64_t n = 0;
  for (int32_t t : d.penalty_token_ids) n += t >= begin && t < end;
  return n;
}

int64_t CopyShardPenalties(const DeviceSampling& d, int64_t begin, int64_t end, int32_t* ids,
                           int32_t* counts) {
  int64_t n = 0;
  for (size_t i = 0; i < d.penalty_token_ids.size(); ++i) {
    const int32_t t = d.penalty_token_ids[i];
    if (t < begin || t >= end) continue;
    ids[n] = static_cast<int32_t>(t - begin);
    counts[n] = i < d.penalty_counts.size() ? d.penalty_counts[i] : 0;
    ++n;
  }
  return n;
}

}  // namespace memshare::engine::cuda
