// RMSNorm, alone and fused with the residual add that precedes it in every
// decoder layer. fp32 statistics; bf16 in and out. Matches Hugging Face
// LlamaRMSNorm / Qwen2RMSNorm up to one bf16 rounding (HF rounds the
// normalized value before the weight multiply; this rounds once).
#ifndef MEMSHARE_KERNELS_NORM_H_
#define MEMSHARE_KERNELS_NORM_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

// out = x * rsqrt(mean(x^2) + eps) * weight, per row.
// x, out: bf16 [n][hidden] (out may be x); weight: bf16 [hidden], or null
// for ones (the weight folded into the next product's W: LaunchFoldNormWeight).
// hidden: a multiple of 8, at most 16384; buffers 16-byte aligned.
absl::Status LaunchRmsNorm(const void* x, const void* weight, void* out, int n, int hidden,
                           float eps, cudaStream_t stream);

// residual = bf16(residual + x); out = RmsNorm(residual) * weight.
// x: bf16 [n][hidden] (the sublayer's output); residual: bf16 [n][hidden],
// updated in place; out may be x.
absl::Status LaunchAddRmsNorm(const void* x, void* residual, const void* weight, void* out, int n,
                              int hidden, float eps, cudaStream_t stream);

// Folds a norm's weight into the product that reads the norm's output:
// w[r][c] = bf16(w[r][c] * gamma[c]) for W bf16 [rows][ld] of which `cols`
// (the hidden size, a multiple of 8) are used; gamma bf16 [cols]. Then
// X W^T on the unit-weight norm's output (or, in the skinny GEMM's scale
// mode, on the residual stream scaled per token) is the same product up to
// one bf16 rounding of each weight.
absl::Status LaunchFoldNormWeight(void* w, int64_t rows, int cols, int64_t ld, const void* gamma,
                                  cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_NORM_H_
