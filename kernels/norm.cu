#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/device_util.cuh"
#include "kernels/norm.h"

namespace memshare::kernels {
namespace {

using device::PackBf16x2;
using device::UnpackBf16x2;

constexpr int kThreads = 256;

__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  v = device::WarpSum(v);
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? scratch[lane] : 0.f;
  return device::WarpSum(v);
}

// Grid: (n). Block: kThreads threads; thread t holds 16-byte vectors
// t, t + kThreads, ... (at most kVec) of the row in registers, so out may
// alias x and residual is read and written by the same thread.
// x, out, residual: bf16 [n][hidden]; weight: bf16 [hidden]
template <int kVec, bool kAdd>
__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(const uint4* x, uint4* residual, const uint4* __restrict__ weight, uint4* out,
                  int vecs_per_row, float eps, float inv_hidden) {
  device::AllowDependentLaunch();
  __shared__ float scratch[kThreads / 32];
  const int64_t base = int64_t{blockIdx.x} * vecs_per_row;
  // The weights are constant: fetched while the kernel before still runs.
  // No weight: ones (bf16 1.0 is 0x3f80).
  constexpr uint32_t kOnes = 0x3f803f80u;
  uint4 wv[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int idx = threadIdx.x + i * kThreads;
    if (idx < vecs_per_row) {
      wv[i] = weight != nullptr ? __ldg(weight + idx) : make_uint4(kOnes, kOnes, kOnes, kOnes);
    }
  }
  device::WaitForPrerequisites();
  uint4 v[kVec];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int idx = threadIdx.x + i * kThreads;
    if (idx >= vecs_per_row) break;
    v[i] = x[base + idx];
    if (kAdd) {
      const uint4 r = residual[base + idx];
      const uint32_t* a = &v[i].x;
      const uint32_t* b = &r.x;
      uint32_t* s = &v[i].x;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 fa = UnpackBf16x2(a[j]);
        const float2 fb = UnpackBf16x2(b[j]);
        s[j] = PackBf16x2(fa.x + fb.x, fa.y + fb.y);
      }
      residual[base + idx] = v[i];
    }
    const uint32_t* w = &v[i].x;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = UnpackBf16x2(w[j]);
      ss += f.x * f.x + f.y * f.y;
    }
  }
  const float inv_rms = rsqrtf(BlockSum(ss, scratch) * inv_hidden + eps);
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int idx = threadIdx.x + i * kThreads;
    if (idx >= vecs_per_row) break;
    const uint32_t* a = &v[i].x;
    const uint32_t* b = &wv[i].x;
    uint4 r;
    uint32_t* o = &r.x;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 fa = UnpackBf16x2(a[j]);
      const float2 fb = UnpackBf16x2(b[j]);
      o[j] = PackBf16x2(fa.x * inv_rms * fb.x, fa.y * inv_rms * fb.y);
    }
    out[base + idx] = r;
  }
}

template <bool kAdd>
absl::Status Launch(const void* x, void* residual, const void* weight, void* out, int n,
                    int hidden, float eps, cudaStream_t stream) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (hidden <= 0 || hidden % 8 != 0 || hidden > 8 * 8 * kThreads || n < 0 || !(eps > 0.f) ||
      !aligned(x) || !aligned(weight) || !aligned(out) || (kAdd && !aligned(residual))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rms norm: hidden ", hidden, " must be a multiple of 8 up to 16384, eps > 0, buffers "
        "16-byte aligned"));
  }
  if (n == 0) return absl::OkStatus();
  const int vecs = hidden / 8;
  const auto* xv = static_cast<const uint4*>(x);
  auto* rv = static_cast<uint4*>(residual);
  const auto* wv = static_cast<const uint4*>(weight);
  auto* ov = static_cast<uint4*>(out);
  const float inv_hidden = 1.f / hidden;
  cudaError_t err;
  if (vecs <= kThreads) {
    err = device::LaunchDependent(RmsNormKernel<1, kAdd>, dim3(n), dim3(kThreads), 0, stream, xv, rv, wv,
                                    ov, vecs, eps, inv_hidden);
  } else if (vecs <= 2 * kThreads) {
    err = device::LaunchDependent(RmsNormKernel<2, kAdd>, dim3(n), dim3(kThreads), 0, stream, xv, rv, wv,
                                    ov, vecs, eps, inv_hidden);
  } else if (vecs <= 4 * kThreads) {
    err = device::LaunchDependent(RmsNormKernel<4, kAdd>, dim3(n), dim3(kThreads), 0, stream, xv, rv, wv,
                                    ov, vecs, eps, inv_hidden);
  } else {
    err = device::LaunchDependent(RmsNormKernel<8, kAdd>, dim3(n), dim3(kThreads), 0, stream, xv, rv, wv,
                                    ov, vecs, eps, inv_hidden);
  }
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("rms norm launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

// w[r][c] = bf16(w[r][c] * gamma[c]); a thread per 8 columns of a row.
__global__ void FoldNormWeightKernel(uint4* w, int64_t rows, int vecs_per_row, int64_t ld_vecs,
                                     const uint4* __restrict__ gamma) {
  const int64_t total = rows * vecs_per_row;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / vecs_per_row;
    const int c = static_cast<int>(i % vecs_per_row);
    uint4 v = w[r * ld_vecs + c];
    const uint4 g = __ldg(gamma + c);
    uint32_t* a = &v.x;
    const uint32_t* b = &g.x;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 fa = UnpackBf16x2(a[j]);
      const float2 fb = UnpackBf16x2(b[j]);
      a[j] = PackBf16x2(fa.x * fb.x, fa.y * fb.y);
    }
    w[r * ld_vecs + c] = v;
  }
}

}  // namespace

absl::Status LaunchFoldNormWeight(void* w, int64_t rows, int cols, int64_t ld, const void* gamma,
                                  cudaStream_t stream) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (rows < 0 || cols <= 0 || cols % 8 != 0 || ld < cols || ld % 8 != 0 || !aligned(w) ||
      !aligned(gamma) || w == nullptr || gamma == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("fold norm weight: ", rows, " x ", cols, " (ld ", ld,
                     "): columns and ld multiples of 8, 16-byte aligned buffers"));
  }
  if (rows == 0) return absl::OkStatus();
  const int64_t total = rows * (cols / 8);
  const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 4096));
  FoldNormWeightKernel<<<blocks, 256, 0, stream>>>(static_cast<uint4*>(w), rows, cols / 8, ld / 8,
                                                   static_cast<const uint4*>(gamma));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("fold norm weight launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

absl::Status LaunchRmsNorm(const void* x, const void* weight, void* out, int n, int hidden,
                           float eps, cudaStream_t stream) {
  return Launch<false>(x, nullptr, weight, out, n, hidden, eps, stream);
}

absl::Status LaunchAddRmsNorm(const void* x, void* residual, const void* weight, void* out, int n,
                              int hidden, float eps, cudaStream_t stream) {
  return Launch<true>(x, residual, weight, out, n, hidden, eps, stream);
}

}  // namespace memshare::kernels
