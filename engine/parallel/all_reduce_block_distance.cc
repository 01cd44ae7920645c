#include "engine/parallel/all_reduce_block_distance.h"

#include <vector>

namespace memshare::engine {

absl::Status AllReduceBlockDistance::ComputeDistanceSums(
    int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
    absl::Span<kvmanager::DistanceSums> out) {
  absl::Status local = local_->ComputeDistanceSums(layer_group, pairs, out);
  if (!local.ok() || pairs.empty()) return local;
  std::vector<double> sums(pairs.size() * 4);
  for (size_t i = 0; i < pairs.size(); ++i) {
    sums[4 * i + 0] = out[i].k_diff_sq;
    sums[4 * i + 1] = out[i].k_norm_sq;
    sums[4 * i + 2] = out[i].v_diff_sq;
    sums[4 * i + 3] = out[i].v_norm_sq;
  }
  if (absl::Status s = comm_->AllReduceSum(absl::MakeSpan(sums)); !s.ok()) return s;
  for (size_t i = 0; i < pairs.size(); ++i) {
    out[i].k_diff_sq = sums[4 * i + 0];
    out[i].k_norm_sq = sums[4 * i + 1];
    out[i].v_diff_sq = sums[4 * i + 2];
    out[i].v_norm_sq = sums[4 * i + 3];
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine
