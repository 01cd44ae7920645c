// Checks and pointers shared by the decode and prefill attention launchers.
// Private to kernels/.
#ifndef MEMSHARE_KERNELS_ATTENTION_INTERNAL_CUH_
#define MEMSHARE_KERNELS_ATTENTION_INTERNAL_CUH_

#include <cuda_bf16.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention.h"

namespace memshare::kernels::internal {

// Tokens per K/V tile of the fast kernels: one block at block size 16, two
// at 8 (the block sizes they take).
constexpr int kAttnTile = 16;

// Where a layer's K tiles start: element offset of (layer, K, kv head 0) in
// a block; V tiles are `slab` elements further.
struct PoolView {
  const __nv_bfloat16* layer_base;  // pool + layer * 2 * slab
  int64_t block_elems;
  int64_t slab;
};

inline PoolView MakePoolView(const PagedAttentionArgs& a) {
  const int64_t slab = a.shape.SlabElements();
  return {static_cast<const __nv_bfloat16*>(a.kv_pool) + int64_t{a.layer} * 2 * slab,
          a.shape.BlockElements(), slab};
}

inline bool Aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

inline absl::Status ValidateAttentionArgs(const PagedAttentionArgs& a, int num_seqs,
                                          const char* what) {
  const KvBlockShape& s = a.shape;
  if (s.block_size != 16 && s.block_size != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": block_size ", s.block_size, " unsupported (16 or 8)"));
  }
  if (s.head_dim != 64 && s.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": head_dim ", s.head_dim, " unsupported (64, 128)"));
  }
  if (s.kv_heads <= 0 || a.num_q_heads <= 0 || a.num_q_heads % s.kv_heads != 0 ||
      a.num_q_heads / s.kv_heads > 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": num_q_heads ", a.num_q_heads, " must be 1..16 times kv_heads ", s.kv_heads));
  }
  if (a.layer < 0 || a.layer >= s.layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": layer ", a.layer, " outside the group's ", s.layers));
  }
  if (num_seqs < 0 || num_seqs > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": num_seqs ", num_seqs));
  }
  if (a.q_row_stride < int64_t{a.num_q_heads} * s.head_dim || a.q_row_stride % 2 != 0 ||
      !Aligned(a.q, 4)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": q rows must hold every head, with an even stride and 4-byte alignment"));
  }
  if (!Aligned(a.kv_pool, 16) || !Aligned(a.out, 4)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": kv_pool must be 16-byte and out 4-byte aligned"));
  }
  if ((a.block_tables_hi == nullptr) != (a.block_shifts == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": block_tables_hi and block_shifts must both be set or both be null"));
  }
  if (a.block_table_stride <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": block_table_stride must be > 0"));
  }
  if (!(a.softmax_scale > 0.f)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": softmax_scale must be > 0"));
  }
  return absl::OkStatus();
}

inline absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat(what, " launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels::internal

#endif  // MEMSHARE_KERNELS_ATTENTION_INTERNAL_CUH_
