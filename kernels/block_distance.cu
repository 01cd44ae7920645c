#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/block_distance.h"

namespace memshare::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;  // bf16 elements per 16-byte load

struct Partial {
  float diff_sq;
  float norm_sq;
};

__device__ __forceinline__ float2 WarpSum(float2 v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v.x += __shfl_xor_sync(0xffffffffu, v.x, offset);
    v.y += __shfl_xor_sync(0xffffffffu, v.y, offset);
  }
  return v;
}

// Accumulates (Σ (a − b)², Σ b²) over the 8 bf16 of one 16-byte load each.
__device__ __forceinline__ void Accumulate(const uint4& va, const uint4& vb, float2& acc) {
  const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&va);
  const __nv_bfloat162* pb = reinterpret_cast<const __nv_bfloat162*>(&vb);
#pragma unroll
  for (int j = 0; j < kVec / 2; ++j) {
    const float2 fa = __bfloat1622float2(pa[j]);
    const float2 fb = __bfloat1622float2(pb[j]);
    const float dx = fa.x - fb.x;
    const float dy = fa.y - fb.y;
    acc.x += dx * dx + dy * dy;
    acc.y += fb.x * fb.x + fb.y * fb.y;
  }
}

// Grid: (num_pairs, layers * 2). One CTA reduces one (layer, K|V) slab of one
// pair: slab_elems bf16 of each block, read with 16-byte loads.
// pool:    bf16 [num_blocks][layers][2][slab_elems]
// pairs:   int32 [num_pairs][kStride]: (candidate, reference) and, with
//          kStride 4, (reference_next, shift); negative id = padding
// partial: [num_pairs][layers * 2]
// With a shift s > 0 (kStride 4) the reference's row (head, slot) is row
// (head, slot + s) of `reference`, or (head, slot + s − block_size) of
// `reference_next`: each 16-byte load stays inside one row (head_dim % 8
// == 0), so the loop is the same with the reference's address per load.
template <int kStride>
__global__ void __launch_bounds__(kThreads)
    SlabDistanceKernel(const __nv_bfloat16* __restrict__ pool,
                       int64_t block_elems, int64_t slab_elems,
                       const int32_t* __restrict__ pairs, int block_size, int head_dim,
                       Partial* __restrict__ partial) {
  const int pair = blockIdx.x;
  const int slab = blockIdx.y;
  const int32_t cand = pairs[kStride * pair];
  const int32_t ref = pairs[kStride * pair + 1];
  int32_t next = ref;
  int32_t shift = 0;
  if constexpr (kStride == 4) {
    next = pairs[kStride * pair + 2];
    shift = pairs[kStride * pair + 3];
  }
  float2 acc = make_float2(0.f, 0.f);
  if (shift < 0 || shift >= block_size) {
    acc = make_float2(NAN, NAN);
  } else if (shift > 0 && cand >= 0 && ref >= 0 && next >= 0) {
    const int64_t base = int64_t{slab} * slab_elems;
    const uint4* a = reinterpret_cast<const uint4*>(pool + cand * block_elems + base);
    const __nv_bfloat16* b_lo = pool + ref * block_elems + base;
    const __nv_bfloat16* b_hi = pool + next * block_elems + base;
    // 32-bit index math: a slab is kv_heads * block_size * head_dim
    // elements, far below 2^31.
    const int n_vec = static_cast<int>(slab_elems / kVec);
    for (int i = threadIdx.x; i < n_vec; i += kThreads) {
      const int e = i * kVec;
      const int row = e / head_dim;  // head * block_size + slot
      const int slot = row % block_size;
      const int src_slot = slot + shift;
      const int src = (row - slot + src_slot % block_size) * head_dim + e % head_dim;
      const uint4 va = __ldg(a + i);
      const uint4 vb =
          __ldg(reinterpret_cast<const uint4*>((src_slot < block_size ? b_lo : b_hi) + src));
      Accumulate(va, vb, acc);
    }
  } else if (shift == 0 && cand >= 0 && ref >= 0) {
    const int64_t base = int64_t{slab} * slab_elems;
    const uint4* a = reinterpret_cast<const uint4*>(pool + cand * block_elems + base);
    const uint4* b = reinterpret_cast<const uint4*>(pool + ref * block_elems + base);
    const int64_t n_vec = slab_elems / kVec;
    for (int64_t i = threadIdx.x; i < n_vec; i += kThreads) {
      Accumulate(__ldg(a + i), __ldg(b + i), acc);
    }
  }
  __shared__ float2 warp_sums[kThreads / 32];
  acc = WarpSum(acc);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < kThreads / 32 ? warp_sums[lane] : make_float2(0.f, 0.f);
    acc = WarpSum(acc);
    if (lane == 0) {
      partial[int64_t{pair} * gridDim.y + slab] = Partial{acc.x, acc.y};
    }
  }
}

// Grid: ceil(num_pairs / kThreads). One thread sums one pair's slabs in
// layer order: even slabs are K, odd slabs are V.
// partial: [num_pairs][layers * 2]; out: [num_pairs]
__global__ void SumSlabsKernel(const Partial* __restrict__ partial, int num_pairs,
                               int slabs, BlockPairSums* __restrict__ out) {
  const int pair = blockIdx.x * blockDim.x + threadIdx.x;
  if (pair >= num_pairs) return;
  BlockPairSums s{0.f, 0.f, 0.f, 0.f};
  const Partial* p = partial + int64_t{pair} * slabs;
  for (int i = 0; i < slabs; i += 2) {
    s.k_diff_sq += p[i].diff_sq;
    s.k_norm_sq += p[i].norm_sq;
    s.v_diff_sq += p[i + 1].diff_sq;
    s.v_norm_sq += p[i + 1].norm_sq;
  }
  out[pair] = s;
}

template <int kStride>
absl::Status Launch(const void* pool, const KvBlockShape& shape, const int32_t* pairs,
                    int num_pairs, void* workspace, BlockPairSums* out, cudaStream_t stream) {
  if (shape.layers <= 0 || shape.kv_heads <= 0 || shape.block_size <= 0 ||
      shape.head_dim <= 0) {
    return absl::InvalidArgumentError("block distance: empty block shape");
  }
  if (shape.SlabElements() % kVec != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block distance: kv_heads * block_size * head_dim = ", shape.SlabElements(),
        " is not a multiple of ", kVec));
  }
  if (num_pairs == 0) return absl::OkStatus();
  if (num_pairs < 0 || num_pairs > 65535 * 64) {
    return absl::InvalidArgumentError(absl::StrCat("block distance: bad pair count ", num_pairs));
  }
  if (kStride == 4 && shape.head_dim % kVec != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block distance: shifted windows need head_dim % ", kVec, " == 0, got ", shape.head_dim));
  }
  auto* partial = static_cast<Partial*>(workspace);
  const dim3 grid(num_pairs, shape.layers * 2);
  SlabDistanceKernel<kStride><<<grid, kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(pool), shape.BlockElements(),
      shape.SlabElements(), pairs, shape.block_size, shape.head_dim, partial);
  SumSlabsKernel<<<(num_pairs + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
      partial, num_pairs, shape.layers * 2, out);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("block distance launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace

size_t BlockDistanceWorkspaceBytes(const KvBlockShape& shape, int num_pairs) {
  return sizeof(Partial) * size_t(num_pairs) * size_t(shape.layers) * 2;
}

absl::Status LaunchBlockDistance(const void* pool, const KvBlockShape& shape,
                                 int64_t num_blocks, const int32_t* pairs,
                                 int num_pairs, void* workspace,
                                 BlockPairSums* out, cudaStream_t stream) {
  (void)num_blocks;  // ids are validated by the caller (the block pool).
  return Launch<2>(pool, shape, pairs, num_pairs, workspace, out, stream);
}

absl::Status LaunchBlockDistanceWindows(const void* pool, const KvBlockShape& shape,
                                        int64_t num_blocks, const int32_t* pairs,
                                        int num_pairs, void* workspace,
                                        BlockPairSums* out, cudaStream_t stream) {
  (void)num_blocks;  // ids are validated by the caller (the block pool).
  return Launch<4>(pool, shape, pairs, num_pairs, workspace, out, stream);
}

}  // namespace memshare::kernels
