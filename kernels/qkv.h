// What happens to the fused QKV projection's output before attention:
// the bias (Qwen2), the per-head q/k RMSNorm (Qwen3), and the write of K
// (before RoPE, DESIGN.md §4) and V into their paged slots. Q is rotated by
// the attention kernels themselves.
#ifndef MEMSHARE_KERNELS_QKV_H_
#define MEMSHARE_KERNELS_QKV_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/kv_block_shape.h"

namespace memshare::kernels {

// In place on qkv: bf16 [n][row_stride], each row [q heads | k heads |
// v heads] x head_dim from element 0.
// bias: bf16 [(num_q_heads + 2 * num_kv_heads) * head_dim], or null.
// q_norm, k_norm: bf16 [head_dim], both or neither: RMSNorm (eps) of every
// q and every k head, after the bias. Nothing to do when all are null.
// head_dim even; qkv 4-byte aligned, row_stride even.
absl::Status LaunchQkvBiasNorm(void* qkv, int64_t row_stride, int n, int num_q_heads,
                               int num_kv_heads, int head_dim, const void* bias,
                               const void* q_norm, const void* k_norm, float eps,
                               cudaStream_t stream);

// Copies the K and V heads of n tokens into the pool of a layer group.
// k, v: bf16 [n][row_stride], head h at elements [h * head_dim, ...) (for
//   example pointers into the QKV buffer); 16-byte aligned, row_stride a
//   multiple of 8.
// slot_mapping: int32 [n], device: physical block * block_size + offset in
//   the block; negative = padding, skipped.
// pool: bf16 [num_blocks][layers][2][kv_heads][block_size][head_dim].
absl::Status LaunchWriteKvCache(const void* k, const void* v, int64_t row_stride, int n,
                                const int32_t* slot_mapping, void* pool,
                                const KvBlockShape& shape, int layer, cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_QKV_H_
