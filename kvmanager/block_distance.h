// The distance between two physical KV blocks, as MemShare verification needs
// it (DESIGN.md §4, step 4). Implemented by the backends (a loop on the CPU, a
// kernel on the GPU) and, under tensor parallelism, by a decorator that
// all-reduces the sums across ranks before anyone decides. A fake lives in
// kvmanager's tests.
//
// Sums, not ratios: a rank holds only some KV heads, and
//   relative_k = sqrt(Σ_ranks k_diff_sq / Σ_ranks k_norm_sq)
// is only correct when the sums are reduced first.
#ifndef MEMSHARE_KVMANAGER_BLOCK_DISTANCE_H_
#define MEMSHARE_KVMANAGER_BLOCK_DISTANCE_H_

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace memshare::kvmanager {

// Physical block ids of one layer group's pool: a candidate block and the
// reference it is compared with, which is a whole block (shift 0) or a
// window over two blocks (shifted sharing, block_table.h).
//
// Reference window, slot j of block_size slots (what the candidate's slot j
// is compared with):
//   shift == 0:            slot j of `reference` (`reference_next` unused);
//   j + shift <  bs:       slot j + shift of `reference`;
//   j + shift >= bs:       slot j + shift - bs of `reference_next`.
// So the window holds the block_size consecutive token slots starting
// `shift` slots into `reference`. Every K/V element of a slot (each layer,
// KV head and dimension) comes from the same source slot. 4 x int32 with no
// padding: backends may copy an array of pairs to a device as is.
struct BlockPair {
  int32_t candidate = -1;  // the later block, which would be freed
  int32_t reference = -1;  // the earlier block (window start), which would be shared
  // The block after `reference` in the same sequence; read only when
  // shift > 0 (then it must be a valid id too).
  int32_t reference_next = -1;
  // Slots into `reference` where the window starts: 0 .. block_size - 1.
  int32_t shift = 0;
};

// Over every layer of the group, local KV head, token slot and dimension.
struct DistanceSums {
  double k_diff_sq = 0;  // Σ (K_candidate − K_reference)² (reference: the window)
  double k_norm_sq = 0;  // Σ K_reference²
  double v_diff_sq = 0;
  double v_norm_sq = 0;

  DistanceSums& operator+=(const DistanceSums& o) {
    k_diff_sq += o.k_diff_sq;
    k_norm_sq += o.k_norm_sq;
    v_diff_sq += o.v_diff_sq;
    v_norm_sq += o.v_norm_sq;
    return *this;
  }
  // ‖K_c − K_r‖ / ‖K_r‖; 0 when both are zero blocks, +inf when only the
  // reference is zero.
  double RelativeK() const { return Relative(k_diff_sq, k_norm_sq); }
  double RelativeV() const { return Relative(v_diff_sq, v_norm_sq); }

 private:
  static double Relative(double diff, double norm) {
    if (norm > 0) return std::sqrt(diff / norm);
    return diff > 0 ? INFINITY : 0.0;
  }
};

// Thread-compatible: the engine calls it from its scheduler thread only.
class BlockDistance {
 public:
  virtual ~BlockDistance() = default;

  // Fills out[i] with the sums for pairs[i] in pool `layer_group`.
  // out.size() == pairs.size(). INVALID_ARGUMENT for an id outside the pool
  // (reference_next included when shift > 0), a shift outside
  // [0, block_size) or a group that does not exist.
  virtual absl::Status ComputeDistanceSums(int layer_group, absl::Span<const BlockPair> pairs,
                                           absl::Span<DistanceSums> out) = 0;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_BLOCK_DISTANCE_H_
