#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/block_copy.h"

namespace memshare::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int64_t kChunkVecs = int64_t{kThreads} * kUnroll;  // 16 KB per CTA

// Grid: (num_pairs, ceil(block_vecs / kChunkVecs)). CTA (p, c) copies
// 16-byte vectors [c * kChunkVecs, (c + 1) * kChunkVecs) of pair p's block,
// kUnroll independent loads in flight per thread.
// pool: [blocks][block_vecs] uint4; pairs: int32 [num_pairs][2]
__global__ void __launch_bounds__(kThreads)
    CopyBlocksKernel(uint4* pool, int64_t block_vecs, const int32_t* __restrict__ pairs) {
  const int32_t src = pairs[2 * blockIdx.x];
  const int32_t dst = pairs[2 * blockIdx.x + 1];
  if (src < 0 || dst < 0) return;
  const uint4* s = pool + int64_t{src} * block_vecs;
  uint4* d = pool + int64_t{dst} * block_vecs;
  const int64_t begin = int64_t{blockIdx.y} * kChunkVecs + threadIdx.x;
  uint4 v[kUnroll];
#pragma unroll
  for (int i = 0; i < kUnroll; ++i) {
    const int64_t j = begin + i * kThreads;
    if (j < block_vecs) v[i] = __ldcs(s + j);
  }
#pragma unroll
  for (int i = 0; i < kUnroll; ++i) {
    const int64_t j = begin + i * kThreads;
    if (j < block_vecs) d[j] = v[i];
  }
}

}  // namespace

absl::Status LaunchCopyBlocks(void* pool, int64_t block_bytes, const int32_t* pairs,
                              int num_pairs, cudaStream_t stream) {
  if (block_bytes <= 0 || block_bytes % 16 != 0 || num_pairs < 0 ||
      reinterpret_cast<uintptr_t>(pool) % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "copy blocks: block_bytes ", block_bytes, " must be a positive multiple of 16"));
  }
  if (num_pairs == 0) return absl::OkStatus();
  const int64_t vecs = block_bytes / 16;
  const int64_t chunks = (vecs + kChunkVecs - 1) / kChunkVecs;
  if (chunks > 65535 || num_pairs > 0x7fffffff) {
    return absl::InvalidArgumentError("copy blocks: block too large");
  }
  CopyBlocksKernel<<<dim3(num_pairs, static_cast<unsigned>(chunks)), kThreads, 0, stream>>>(
      static_cast<uint4*>(pool), vecs, pairs);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("copy blocks launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

namespace {

__global__ void Copy16Kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  const size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i];
}

}  // namespace

absl::Status LaunchCopy16(const void* src, void* dst, size_t bytes, cudaStream_t stream) {
  if (bytes % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(dst) % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "copy16: ", bytes, " bytes must be a multiple of 16, buffers 16-byte aligned"));
  }
  const size_t n = bytes / 16;
  if (n == 0) return absl::OkStatus();
  constexpr int kThreads = 128;
  Copy16Kernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      static_cast<const uint4*>(src), static_cast<uint4*>(dst), n);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("copy16 launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
