#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/embedding.h"

namespace memshare::kernels {
namespace {

constexpr int kThreads = 256;

// Grid: (n). Block: kThreads threads copy one row in 16-byte vectors; with
// sumsq, the 16 lanes that hold a 128-column part's vectors sum its squares.
// table: bf16 [rows][hidden]; ids: [n]; out: bf16 [n][hidden];
// sumsq: fp32 [ceil(hidden / 128)][n] or null; feed: the tokens ids -2 - r
// stand for, or null
__global__ void __launch_bounds__(kThreads)
    EmbeddingKernel(const uint4* __restrict__ table, int64_t vocab_begin, int64_t rows,
                    int vecs_per_row, const int32_t* __restrict__ ids, uint4* __restrict__ out,
                    float* __restrict__ sumsq, const int32_t* __restrict__ feed) {
  const int64_t token = blockIdx.x;
  int32_t id = ids[token];
  if (id <= -2 && feed != nullptr) id = feed[-2 - id];
  const int64_t row = int64_t{id} - vocab_begin;
  const bool mine = id >= 0 && row >= 0 && row < rows;
  uint4* dst = out + token * vecs_per_row;
  const uint4* src = table + (mine ? row : 0) * vecs_per_row;
  for (int base = 0; base < vecs_per_row; base += kThreads) {  // uniform: the shuffles
    const int i = base + threadIdx.x;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (i < vecs_per_row) {
      if (mine) v = __ldg(src + i);
      dst[i] = v;
    }
    if (sumsq == nullptr) continue;
    float ss = 0.f;
    const uint32_t* w = &v.x;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[j]));
      ss += f.x * f.x + f.y * f.y;
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 15) == 0 && i < vecs_per_row)
      sumsq[int64_t{i / 16} * gridDim.x + token] = ss;
  }
}

}  // namespace

absl::Status LaunchEmbeddingGather(const void* table, int64_t vocab_begin, int64_t rows, int hidden,
                                   const int32_t* ids, int n, void* out, cudaStream_t stream,
                                   float* sumsq, const int32_t* feed) {
  if (hidden <= 0 || hidden % 8 != 0 || rows < 0 || n < 0 ||
      reinterpret_cast<uintptr_t>(table) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedding: hidden ", hidden, " must be a positive multiple of 8, buffers 16-byte aligned"));
  }
  if (n == 0) return absl::OkStatus();
  EmbeddingKernel<<<n, kThreads, 0, stream>>>(static_cast<const uint4*>(table), vocab_begin, rows,
                                              hidden / 8, ids, static_cast<uint4*>(out), sumsq,
                                              feed);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("embedding launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
