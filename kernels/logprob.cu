// Log-softmax pieces for sampled tokens (see logprob.h).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/logprob.h"

namespace memshare::kernels {
namespace {

constexpr int kThreads = 512;

template <bool kMax>
__device__ float BlockReduce(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, other) : v + other;
  }
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? scratch[lane] : (kMax ? -INFINITY : 0.f);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, other) : v + other;
  }
  return v;  // every thread holds the result
}

// Grid: (rows). Block: kThreads threads, two passes over the row (max, then
// the sum of exp(x - max)).
__global__ void __launch_bounds__(kThreads)
    RowLseKernel(const float* __restrict__ logits, int64_t stride, int vocab,
                 float* __restrict__ lse) {
  __shared__ float scratch[kThreads / 32];
  const float* row = logits + int64_t{blockIdx.x} * stride;
  float m = -INFINITY;
  for (int v = threadIdx.x; v < vocab; v += kThreads) m = fmaxf(m, row[v]);
  m = BlockReduce<true>(m, scratch);
  float s = 0.f;
  for (int v = threadIdx.x; v < vocab; v += kThreads) s += expf(row[v] - m);
  s = BlockReduce<false>(s, scratch);
  if (threadIdx.x == 0) lse[blockIdx.x] = m + logf(s);
}

// Grid: ceil(rows / 128). One thread per row.
__global__ void TokenLogprobKernel(const float* __restrict__ logits, int64_t stride, int rows,
                                   int vocab, const int32_t* __restrict__ tokens,
                                   const float* __restrict__ lse, float* __restrict__ out) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const int t = tokens[r];
  out[r] = (t >= 0 && t < vocab) ? logits[int64_t{r} * stride + t] - lse[r] : NAN;
}

absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat(what, " launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchRowLogSumExp(const float* logits, int64_t stride, int rows, int vocab,
                                float* lse, cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || stride < vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("row logsumexp: rows ", rows, " vocab ", vocab, " stride ", stride));
  }
  if (rows == 0) return absl::OkStatus();
  RowLseKernel<<<rows, kThreads, 0, stream>>>(logits, stride, vocab, lse);
  return LaunchStatus("row logsumexp");
}

absl::Status LaunchTokenLogprob(const float* logits, int64_t stride, int rows, int vocab,
                                const int32_t* tokens, const float* lse, float* out,
                                cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || stride < vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("token logprob: rows ", rows, " vocab ", vocab, " stride ", stride));
  }
  if (rows == 0) return absl::OkStatus();
  TokenLogprobKernel<<<(rows + 127) / 128, 128, 0, stream>>>(logits, stride, rows, vocab, tokens,
                                                             lse, out);
  return LaunchStatus("token logprob");
}

}  // namespace memshare::kernels
