// A bf16 GEMM for decode-shaped products (few token rows, large weights):
//   Y[m][n] = X[m][k] * W[n][k]^T (+ bias[n]),  m <= kSkinnyGemmMaxM,
// W in Hugging Face layout ([out_features][in_features]), fp32 accumulation,
// bf16 or fp32 Y. At these shapes the product is bound by reading W once;
// the kernel streams tiles of W and X into shared memory with the tensor copy
// engine (a ring of stages on mbarriers, one producer thread, four MMA
// warps) and splits k over the CTAs of a thread-block cluster, which sum
// their partial tiles through distributed shared memory in a fixed order
// (deterministic, no workspace). Launched with programmatic dependent launch
// it requests its first weights before the preceding kernel has finished.
//
// Plain C++ header; the kernels are in skinny_gemm.cu.
#ifndef MEMSHARE_KERNELS_SKINNY_GEMM_H_
#define MEMSHARE_KERNELS_SKINNY_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

inline constexpr int kSkinnyGemmMaxM = 64;

struct SkinnyGemmArgs {
  int m = 0;                // token rows, 1 .. kSkinnyGemmMaxM
  int n = 0;                // output features, a multiple of 8
  int k = 0;                // input features, a multiple of 8
  const void* x = nullptr;  // bf16 [m][ldx]
  int64_t ldx = 0;
  const void* w = nullptr;  // bf16 [n][ldw]
  int64_t ldw = 0;
  void* y = nullptr;  // bf16 or fp32 [m][ldy]
  int64_t ldy = 0;
  bool fp32_out = false;
  const void* bias = nullptr;  // bf16 [n] or null
  // How, not what: the consumer warps issue wgmma (one warpgroup reading
  // both tiles straight from shared memory) instead of ldmatrix + mma.sync.
  // The same products up to the order of fp32 additions inside a k step.
  bool wgmma = false;
};

// Whether the kernel takes these arguments: shape limits above, 16-byte
// aligned pointers and leading dimensions (multiples of 8 elements).
bool SkinnyGemmSupports(const SkinnyGemmArgs& args);

// The k split (cluster size, 1..8) that keeps every CTA of the grid resident
// at once on `num_sms` multiprocessors; what LaunchSkinnyGemm uses when
// given 0.
int SkinnyGemmSplits(const SkinnyGemmArgs& args, int num_sms);

// Enqueues the product on `stream`. `splits` 0 picks SkinnyGemmSplits(); at
// most ceil(k / 64);
// `pdl` launches with programmatic stream serialization (the kernel waits
// for its predecessor before it reads X or writes Y; it reads W before).
// INVALID_ARGUMENT when !SkinnyGemmSupports(args) or splits is outside 0..8.
absl::Status LaunchSkinnyGemm(const SkinnyGemmArgs& args, int splits, bool pdl,
                              cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_SKINNY_GEMM_H_
