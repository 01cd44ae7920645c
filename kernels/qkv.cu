#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/device_util.cuh"
#include "kernels/qkv.h"

namespace memshare::kernels {
namespace {

using device::PackBf16x2;
using device::UnpackBf16x2;

constexpr int kWarpsPerCta = 8;

// Grid: (ceil(n * heads / kWarpsPerCta)). One warp per (token, head) of the
// first `heads` heads of the row; lane i handles pairs i, i + 32, ...
// qkv: bf16 [n][row_stride]; bias: [(q + 2kv) * D] or null;
// q_norm, k_norm: [D] or null
__global__ void __launch_bounds__(kWarpsPerCta * 32)
    QkvBiasNormKernel(uint32_t* qkv, int64_t row_stride_pairs, int n, int heads, int num_q_heads,
                      int num_kv_heads, int head_dim, const uint32_t* __restrict__ bias,
                      const uint32_t* __restrict__ q_norm, const uint32_t* __restrict__ k_norm,
                      float eps) {
  device::AllowDependentLaunch();
  device::WaitForPrerequisites();
  const int64_t item = int64_t{blockIdx.x} * kWarpsPerCta + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (item >= int64_t{n} * heads) return;
  const int64_t token = item / heads;
  const int head = static_cast<int>(item % heads);
  const int pairs = head_dim / 2;
  uint32_t* h = qkv + token * row_stride_pairs + int64_t{head} * pairs;
  const uint32_t* norm =
      head < num_q_heads ? q_norm : (head < num_q_heads + num_kv_heads ? k_norm : nullptr);
  float ss = 0.f;
  for (int i = lane; i < pairs; i += 32) {
    float2 f = UnpackBf16x2(h[i]);
    if (bias != nullptr) {
      const float2 b = UnpackBf16x2(__ldg(bias + int64_t{head} * pairs + i));
      h[i] = PackBf16x2(f.x + b.x, f.y + b.y);  // HF's Linear output is bf16 too
      f = UnpackBf16x2(h[i]);
    }
    ss += f.x * f.x + f.y * f.y;
  }
  if (norm == nullptr) return;
  const float inv_rms = rsqrtf(device::WarpSum(ss) / head_dim + eps);
  for (int i = lane; i < pairs; i += 32) {
    const float2 f = UnpackBf16x2(h[i]);
    const float2 w = UnpackBf16x2(__ldg(norm + i));
    h[i] = PackBf16x2(f.x * inv_rms * w.x, f.y * inv_rms * w.y);
  }
}

// Grid: (n). Block: one thread per 16-byte chunk of the token's K and V
// heads (looping when there are more than 1024). Token t's chunk j of
// head h goes to its slot's row of (layer, K or V, h).
// k, v: bf16 [n][row_stride]; slot_mapping: [n];
// pool: bf16 [blocks][layers][2][kv_heads][block_size][D]
__global__ void WriteKvKernel(const uint4* __restrict__ k, const uint4* __restrict__ v,
                              int64_t row_stride_vecs, const int32_t* __restrict__ slot_mapping,
                              uint4* __restrict__ pool, int64_t block_vecs, int64_t slab_vecs,
                              int64_t layer_vecs, int kv_heads, int block_size, int head_vecs) {
  device::AllowDependentLaunch();
  device::WaitForPrerequisites();
  const int64_t token = blockIdx.x;
  const int32_t slot = slot_mapping[token];
  if (slot < 0) return;
  const int64_t block = slot / block_size;
  const int offset = slot % block_size;
  const int per_kind = kv_heads * head_vecs;
  for (int i = threadIdx.x; i < 2 * per_kind; i += blockDim.x) {
    const int kind = i / per_kind;  // 0 = K, 1 = V
    const int head = (i % per_kind) / head_vecs;
    const int j = i % head_vecs;
    const uint4* src = (kind == 0 ? k : v) + token * row_stride_vecs + head * head_vecs + j;
    uint4* dst = pool + block * block_vecs + layer_vecs + kind * slab_vecs +
                 (int64_t{head} * block_size + offset) * head_vecs + j;
    *dst = __ldg(src);
  }
}

absl::Status LaunchStatus(const char* what, cudaError_t err) {
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat(what, " launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchQkvBiasNorm(void* qkv, int64_t row_stride, int n, int num_q_heads,
                               int num_kv_heads, int head_dim, const void* bias,
                               const void* q_norm, const void* k_norm, float eps,
                               cudaStream_t stream) {
  if ((q_norm == nullptr) != (k_norm == nullptr)) {
    return absl::InvalidArgumentError("qkv: q_norm and k_norm come together");
  }
  if (num_q_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 || n < 0 ||
      row_stride < int64_t{num_q_heads + 2 * num_kv_heads} * head_dim || row_stride % 2 != 0 ||
      reinterpret_cast<uintptr_t>(qkv) % 4 != 0 || (q_norm != nullptr && !(eps > 0.f))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "qkv: bad shape (heads ", num_q_heads, "/", num_kv_heads, ", head_dim ", head_dim,
        ", row_stride ", row_stride, ")"));
  }
  // Heads to visit: all of them for the bias, q and k for the norm alone.
  const int heads = bias != nullptr ? num_q_heads + 2 * num_kv_heads
                                    : (q_norm != nullptr ? num_q_heads + num_kv_heads : 0);
  if (n == 0 || heads == 0) return absl::OkStatus();
  const int64_t items = int64_t{n} * heads;
  return LaunchStatus(
      "qkv bias/norm",
      device::LaunchDependent(
          QkvBiasNormKernel, dim3(static_cast<unsigned>((items + kWarpsPerCta - 1) / kWarpsPerCta)),
          dim3(kWarpsPerCta * 32), 0, stream, static_cast<uint32_t*>(qkv), row_stride / 2, n,
          heads, num_q_heads, num_kv_heads, head_dim, static_cast<const uint32_t*>(bias),
          static_cast<const uint32_t*>(q_norm), static_cast<const uint32_t*>(k_norm), eps));
}

absl::Status LaunchWriteKvCache(const void* k, const void* v, int64_t row_stride, int n,
                                const int32_t* slot_mapping, void* pool,
                                const KvBlockShape& shape, int layer, cudaStream_t stream) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (shape.kv_heads <= 0 || shape.block_size <= 0 || shape.head_dim <= 0 ||
      shape.head_dim % 8 != 0 || layer < 0 || layer >= shape.layers || n < 0 ||
      row_stride % 8 != 0 || row_stride < int64_t{shape.kv_heads} * shape.head_dim ||
      !aligned(k) || !aligned(v) || !aligned(pool)) {
    return absl::InvalidArgumentError(
        "write kv: head_dim and row_stride must be multiples of 8, buffers 16-byte aligned, "
        "layer inside the group");
  }
  if (n == 0) return absl::OkStatus();
  const int head_vecs = shape.head_dim / 8;
  const int threads = std::min(1024, 2 * shape.kv_heads * head_vecs);
  const int64_t slab_vecs = shape.SlabElements() / 8;
  return LaunchStatus(
      "write kv",
      device::LaunchDependent(WriteKvKernel, dim3(n), dim3(threads), 0, stream,
                              static_cast<const uint4*>(k), static_cast<const uint4*>(v),
                              row_stride / 8, slot_mapping, static_cast<uint4*>(pool),
                              shape.BlockElements() / 8, slab_vecs, int64_t{layer} * 2 * slab_vecs,
                              shape.kv_heads, shape.block_size, head_vecs));
}

}  // namespace memshare::kernels
