// Block distance for MemShare verification (DESIGN.md §4, step 4).
//
// For each pair (candidate block, reference block) of one layer group's KV
// pool, computes over every layer of the group, every local KV head, every
// token slot and every dimension:
//   k_diff_sq = Σ (K_cand − K_ref)²    k_norm_sq = Σ K_ref²
//   v_diff_sq = Σ (V_cand − V_ref)²    v_norm_sq = Σ V_ref²
// Sums, not ratios: under tensor parallelism each rank holds some KV heads,
// and the sums are all-reduced before the relative distances
// sqrt(diff_sq / norm_sq) are compared with the threshold.
//
// Deterministic: the same inputs give bit-identical sums on every run and
// rank (fixed reduction order, no atomics).
#ifndef MEMSHARE_KERNELS_BLOCK_DISTANCE_H_
#define MEMSHARE_KERNELS_BLOCK_DISTANCE_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/kv_block_shape.h"

namespace memshare::kernels {

// One result per pair; the same layout as kvmanager's distance sums.
struct BlockPairSums {
  float k_diff_sq;
  float k_norm_sq;
  float v_diff_sq;
  float v_norm_sq;
};

// Bytes of device workspace LaunchBlockDistance needs for `num_pairs` pairs.
size_t BlockDistanceWorkspaceBytes(const KvBlockShape& shape, int num_pairs);

// pool:      bf16 [num_blocks][layers][2][kv_heads][block_size][head_dim]
// pairs:     int32 [num_pairs][2], device: (candidate, reference) block ids,
//            each in [0, num_blocks); a negative id marks a padding pair,
//            whose result is all zeros.
// workspace: BlockDistanceWorkspaceBytes(shape, num_pairs) bytes, device.
// out:       [num_pairs], device.
// Enqueues on `stream`; does not synchronize. INVALID_ARGUMENT for a shape
// the kernel does not support (head_dim * block_size not a multiple of 8).
absl::Status LaunchBlockDistance(const void* pool, const KvBlockShape& shape,
                                 int64_t num_blocks, const int32_t* pairs,
                                 int num_pairs, void* workspace,
                                 BlockPairSums* out, cudaStream_t stream);

// The same with references that may be shifted windows (MemShare shifted
// sharing, kvmanager/block_distance.h BlockPair):
// pairs: int32 [num_pairs][4], device: (candidate, reference,
//        reference_next, shift), the layout of kvmanager::BlockPair, so an
//        array of them can be copied as is. Slot j of the reference is slot
//        j + shift of `reference` when j + shift < block_size, else slot
//        j + shift - block_size of `reference_next` (read only when
//        shift > 0). Shift 0 pairs compute exactly what LaunchBlockDistance
//        computes. A pair with a negative candidate or reference, or with
//        shift > 0 and a negative reference_next, is padding (all zeros); a
//        shift outside [0, block_size) gives NaN sums (which never pass the
//        threshold). Ids are validated by the caller.
// INVALID_ARGUMENT also for a head_dim that is not a multiple of 8.
absl::Status LaunchBlockDistanceWindows(const void* pool, const KvBlockShape& shape,
                                        int64_t num_blocks, const int32_t* pairs,
                                        int num_pairs, void* workspace,
                                        BlockPairSums* out, cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_BLOCK_DISTANCE_H_
