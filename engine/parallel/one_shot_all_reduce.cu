#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/parallel/all_reduce_path.h"
#include "engine/parallel/one_shot_all_reduce.h"
#include "kernels/device_util.cuh"

namespace memshare::engine {
namespace {

using one_shot::kChunkThreads;
using one_shot::kSignalBytes;
using one_shot::kSlotBytes;
using one_shot::kSlots;

constexpr int kNormThreads = 256;  // as kernels/norm.cu, for the same sums

// Two bf16 in one register, the first in the low half (as kernels/).
__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ float2 UnpackBf16x2(uint32_t v) {
  return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u));
}

// bf16(a + b), element-wise, for 8 bf16 in a uint4.
__device__ __forceinline__ uint4 AddBf16x8(const uint4& a, const uint4& b) {
  uint4 s;
  const uint32_t* pa = &a.x;
  const uint32_t* pb = &b.x;
  uint32_t* ps = &s.x;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 fa = UnpackBf16x2(pa[j]);
    const float2 fb = UnpackBf16x2(pb[j]);
    ps[j] = PackBf16x2(fa.x + fb.x, fa.y + fb.y);
  }
  return s;
}

__device__ __forceinline__ void StoreRelease(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t LoadAcquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

static_assert(OneShotBuffers::kMaxRanks == one_shot::kMaxRanks);

// Rank `src`'s piece of slot `slot` at parity `parity` in an exchange
// buffer of a group of `world` ranks.
template <typename T>
__device__ __forceinline__ T* Staging(void* base, uint32_t parity, int slot, int src, int world) {
  return reinterpret_cast<T*>(
      static_cast<char*>(base) + kSignalBytes +
      ((size_t{parity} * kSlots + slot) * static_cast<size_t>(world) + src) * kSlotBytes);
}

// The same in the Lamport staging (all_reduce_path.h).
__device__ __forceinline__ uint4* LamportStaging(void* base, uint32_t parity, int slot, int src,
                                                 int world) {
  return reinterpret_cast<uint4*>(
      static_cast<char*>(base) + kSignalBytes + one_shot::StagingBytes(world) +
      ((size_t{parity} * kSlots + slot) * static_cast<size_t>(world) + src) * kSlotBytes);
}

// Lamport: 0xffff (a NaN) marks an empty bf16. Senders send 0x7fff (also a
// NaN) instead.
__device__ __forceinline__ uint4 Sanitize(const uint4& v) {
  uint4 out;
  const uint32_t* in = &v.x;
  uint32_t* o = &out.x;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t lo = in[j] & 0xffffu, hi = in[j] >> 16;
    lo = lo == 0xffffu ? 0x7fffu : lo;
    hi = hi == 0xffffu ? 0x7fffu : hi;
    o[j] = lo | (hi << 16);
  }
  return out;
}
__device__ __forceinline__ bool Arrived(const uint4& v) {
  const uint32_t* w = &v.x;
  bool ok = true;
#pragma unroll
  for (int j = 0; j < 4; ++j) ok = ok && (w[j] & 0xffffu) != 0xffffu && (w[j] >> 16) != 0xffffu;
  return ok;
}

// Lamport: this rank's (sanitized) vector `idx` of the slot into every
// peer's staging.
__device__ __forceinline__ void LamportSend(const OneShotBuffers& b, uint32_t parity, int slot,
                                            int idx, const uint4& v) {
#pragma unroll
  for (int q = 0; q < OneShotBuffers::kMaxRanks; ++q) {
    if (q < b.world && q != b.rank) LamportStaging(b.buffers[q], parity, slot, b.rank, b.world)[idx] = v;
  }
}

// The world's pieces (8 bf16 each) summed in fp32 in rank order and rounded
// to bf16 once: the same bits on every rank.
__device__ __forceinline__ uint4 SumInRankOrder(const uint4 (&piece)[OneShotBuffers::kMaxRanks],
                                                int world) {
  float f[8];
  {
    const uint32_t* p = &piece[0].x;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 t = UnpackBf16x2(p[j]);
      f[2 * j] = t.x;
      f[2 * j + 1] = t.y;
    }
  }
#pragma unroll
  for (int s = 1; s < OneShotBuffers::kMaxRanks; ++s) {
    if (s >= world) break;
    const uint32_t* p = &piece[s].x;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 t = UnpackBf16x2(p[j]);
      f[2 * j] += t.x;
      f[2 * j + 1] += t.y;
    }
  }
  uint4 out;
  uint32_t* o = &out.x;
#pragma unroll
  for (int j = 0; j < 4; ++j) o[j] = PackBf16x2(f[2 * j], f[2 * j + 1]);
  return out;
}

// Lamport: waits for every peer's vector `idx` of the slot in this rank's
// staging (or the abort word), empties it again, and returns the sum in
// rank order (`mine`: this rank's, sanitized), as SumPieces.
__device__ __forceinline__ uint4 LamportSum(const OneShotBuffers& b, uint32_t parity, int slot,
                                            int idx, const uint4& mine) {
  uint4 piece[OneShotBuffers::kMaxRanks];
#pragma unroll
  for (int s = 0; s < OneShotBuffers::kMaxRanks; ++s) {
    if (s >= b.world) break;
    if (s == b.rank) {
      piece[s] = mine;
      continue;
    }
    uint4* in = LamportStaging(b.buffers[b.rank], parity, slot, s, b.world) + idx;
    uint4 p = __ldcv(in);
    for (uint32_t spins = 1; !Arrived(p); ++spins) {
      if (spins % 1024 == 0 && *reinterpret_cast<const volatile int*>(b.abort) != 0) break;
      p = __ldcv(in);
    }
    piece[s] = p;
    *in = make_uint4(~0u, ~0u, ~0u, ~0u);  // empty for the use after next
  }
  return SumInRankOrder(piece, b.world);
}

// Flag [src][slot] of an exchange buffer (written by rank src only).
__device__ __forceinline__ uint32_t* Flag(void* base, int src, int slot) {
  return static_cast<uint32_t*>(base) + src * kSlots + slot;
}

// Where this rank writes its piece for peer q (push: into q's buffer; pull:
// into its own, once, for q == rank).
template <typename T>
__device__ __forceinline__ T* Outbox(const OneShotBuffers& b, int q, uint32_t parity, int slot) {
  return Staging<T>(b.buffers[q], parity, slot, b.rank, b.world);
}

// Where this rank reads rank s's piece (push: its own buffer; pull: s's).
template <typename T>
__device__ __forceinline__ const T* Inbox(const OneShotBuffers& b, int s, uint32_t parity,
                                          int slot) {
  return Staging<T>(b.push ? b.buffers[b.rank] : b.buffers[s], parity, slot, s, b.world);
}

// Every thread of the block, after writing its share of this block's
// piece (into every peer's staging, or its own when pulling): thread q <
// world (q != rank) raises flag [rank][slot] of peer q to `count` and
// waits for flag [q][slot] of its own buffer to reach it (or for the abort
// word). The release is cumulative: the block's stores, ordered before it
// by the barrier, are visible to the peer once it sees the flag.
// Afterwards every peer's piece of this use is in place.
__device__ __forceinline__ void Exchange(const OneShotBuffers& b, int slot, uint32_t count) {
  __syncthreads();  // the block's staging writes, before the releases
  const int q = threadIdx.x;
  if (q < b.world && q != b.rank) {
    StoreRelease(Flag(b.buffers[q], b.rank, slot), count);
    const uint32_t* mine = Flag(b.buffers[b.rank], q, slot);
    for (uint32_t spins = 1; static_cast<int32_t>(LoadAcquire(mine) - count) < 0; ++spins) {
      if (spins % 1024 == 0 && *reinterpret_cast<const volatile int*>(b.abort) != 0) break;
    }
  }
  __syncthreads();  // the acquires, before the block reads the peers' pieces
  if (threadIdx.x == 0) b.counts[slot] = count;
}

// This rank's piece `v` (vector `idx` of the slot) sent to every peer.
__device__ __forceinline__ void Send(const OneShotBuffers& b, uint32_t parity, int slot, int idx,
                                     const uint4& v) {
  if (!b.push) {
    Outbox<uint4>(b, b.rank, parity, slot)[idx] = v;
    return;
  }
#pragma unroll
  for (int q = 0; q < OneShotBuffers::kMaxRanks; ++q) {
    if (q < b.world && q != b.rank) Outbox<uint4>(b, q, parity, slot)[idx] = v;
  }
}

// The sum of every rank's vector `idx` of the slot (`mine` is this
// rank's), in fp32 in rank order, rounded to bf16 once: the same bits on
// every rank (with two ranks: bf16(a + b), as before).
__device__ __forceinline__ uint4 SumPieces(const OneShotBuffers& b, uint32_t parity, int slot,
                                           int idx, const uint4& mine) {
  uint4 piece[OneShotBuffers::kMaxRanks];
#pragma unroll
  for (int s = 0; s < OneShotBuffers::kMaxRanks; ++s) {  // every load in flight first
    if (s < b.world) piece[s] = s == b.rank ? mine : __ldcv(Inbox<uint4>(b, s, parity, slot) + idx);
  }
  return SumInRankOrder(piece, b.world);
}

// Grid: (ceil(vecs / kChunkThreads)) <= kSlots. Block: kChunkThreads
// threads, one 16-byte vector each: block b sums vectors
// [b * kChunkThreads, (b + 1) * kChunkThreads) through slot b.
// data: bf16 [vecs * 8], in place.
__global__ void __launch_bounds__(kChunkThreads)
    AllReduceKernel(OneShotBuffers b, uint4* data, int64_t vecs) {
  const int slot = blockIdx.x;
  if (b.lamport) {
    const uint32_t use = b.lamport_counts[slot] + 1;
    const int64_t i = int64_t{blockIdx.x} * kChunkThreads + threadIdx.x;
    if (i < vecs) {
      const uint4 v = Sanitize(data[i]);
      LamportSend(b, use & 1, slot, threadIdx.x, v);
      data[i] = LamportSum(b, use & 1, slot, threadIdx.x, v);
    }
    __syncthreads();  // every thread read the count
    if (threadIdx.x == 0) b.lamport_counts[slot] = use;
    return;
  }
  const uint32_t count = b.counts[slot] + 1;
  const uint32_t parity = count & 1;
  const int64_t i = int64_t{blockIdx.x} * kChunkThreads + threadIdx.x;
  uint4 v = make_uint4(0, 0, 0, 0);
  if (i < vecs) {
    v = data[i];
    Send(b, parity, slot, threadIdx.x, v);
  }
  Exchange(b, slot, count);
  if (i < vecs) data[i] = SumPieces(b, parity, slot, threadIdx.x, v);
}

// Grid: (ceil(count / (2 * kChunkThreads))) <= kSlots. Block: kChunkThreads
// threads, two uint64 each (kChunkBytes per block, through slot b).
// data: uint64 [count], in place: the maximum over the ranks.
__global__ void __launch_bounds__(kChunkThreads)
    AllReduceMaxU64Kernel(OneShotBuffers b, uint64_t* data, int64_t count) {
  const int slot = blockIdx.x;
  const uint32_t seq = b.counts[slot] + 1;
  const uint32_t parity = seq & 1;
  const int64_t base = int64_t{blockIdx.x} * 2 * kChunkThreads;
  uint64_t v[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int idx = threadIdx.x + k * kChunkThreads;
    v[k] = base + idx < count ? data[base + idx] : 0;
    if (base + idx >= count) continue;
    if (!b.push) {
      Outbox<uint64_t>(b, b.rank, parity, slot)[idx] = v[k];
      continue;
    }
#pragma unroll
    for (int q = 0; q < OneShotBuffers::kMaxRanks; ++q) {
      if (q < b.world && q != b.rank) Outbox<uint64_t>(b, q, parity, slot)[idx] = v[k];
    }
  }
  Exchange(b, slot, seq);
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int idx = threadIdx.x + k * kChunkThreads;
    if (base + idx >= count) continue;
    uint64_t m = v[k];
#pragma unroll
    for (int s = 0; s < OneShotBuffers::kMaxRanks; ++s) {
      if (s < b.world && s != b.rank) {
        const uint64_t t = __ldcv(
            reinterpret_cast<const unsigned long long*>(Inbox<uint64_t>(b, s, parity, slot)) + idx);
        m = t > m ? t : m;
      }
    }
    data[base + idx] = m;
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  v = WarpSum(v);
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kNormThreads / 32 ? scratch[lane] : 0.f;
  return WarpSum(v);
}

// Grid: (rows) <= kSlots; block r sums row r through slot r. Block:
// kNormThreads threads; thread t holds vectors t, t + kNormThreads, ...
// (at most kVec) of the row, as kernels/norm.cu's RmsNormKernel, whose
// arithmetic this repeats after the sum.
// x: bf16 [rows][hidden] (this rank's part); residual: bf16 [rows][hidden],
// in place; weight: bf16 [hidden]; out: bf16 [rows][hidden].
template <int kVec>
__global__ void __launch_bounds__(kNormThreads)
    AllReduceAddRmsNormKernel(OneShotBuffers b, const uint4* x, uint4* residual,
                              const uint4* __restrict__ weight, uint4* out, int vecs_per_row,
                              float eps, float inv_hidden) {
  // Programmatic dependent launch, as kernels/norm.cu: the next kernel (the
  // QKV or gate/up projection) may start streaming its weights now, and
  // this one starts while the projection before it ends, waiting for it
  // before it reads anything but the norm's weights.
  kernels::device::AllowDependentLaunch();
  __shared__ float scratch[kNormThreads / 32];
  uint4 wgt[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int idx = threadIdx.x + i * kNormThreads;
    if (idx < vecs_per_row) wgt[i] = __ldg(weight + idx);
  }
  kernels::device::WaitForPrerequisites();
  const int slot = blockIdx.x;
  const uint32_t count = (b.lamport ? b.lamport_counts : b.counts)[slot] + 1;
  const uint32_t parity = count & 1;
  const int64_t base = int64_t{blockIdx.x} * vecs_per_row;
  // The residual does not depend on the peers: loaded before the wait for
  // them, so that its latency hides behind it.
  uint4 v[kVec], res[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int idx = threadIdx.x + i * kNormThreads;
    if (idx >= vecs_per_row) break;
    v[i] = x[base + idx];
    res[i] = residual[base + idx];
    if (b.lamport) {
      v[i] = Sanitize(v[i]);
      LamportSend(b, parity, slot, idx, v[i]);
    } else {
      Send(b, parity, slot, idx, v[i]);
    }
  }
  if (!b.lamport) Exchange(b, slot, count);
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int idx = threadIdx.x + i * kNormThreads;
    if (idx >= vecs_per_row) break;
    const uint4 sum = b.lamport ? LamportSum(b, parity, slot, idx, v[i])
                                : SumPieces(b, parity, slot, idx, v[i]);  // the all-reduce
    v[i] = AddBf16x8(sum, res[i]);                            // + residual
    residual[base + idx] = v[i];
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
    const int idx = threadIdx.x + i * kNormThreads;
    if (idx >= vecs_per_row) break;
    const uint32_t* a = &v[i].x;
    const uint32_t* c = &wgt[i].x;
    uint4 r;
    uint32_t* o = &r.x;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 fa = UnpackBf16x2(a[j]);
      const float2 fc = UnpackBf16x2(c[j]);
      o[j] = PackBf16x2(fa.x * inv_rms * fc.x, fa.y * inv_rms * fc.y);
    }
    out[base + idx] = r;
  }
  // BlockSum's barriers: every thread read the count.
  if (b.lamport && threadIdx.x == 0) b.lamport_counts[slot] = count;
}

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

absl::Status LaunchError(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat(what, " launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

bool Ready(const OneShotBuffers& b) {
  if (!one_shot::WorldSupported(b.world) || b.rank < 0 || b.rank >= b.world ||
      b.counts == nullptr || b.abort == nullptr || (b.lamport && b.lamport_counts == nullptr)) {
    return false;
  }
  for (int r = 0; r < b.world; ++r) {
    if (b.buffers[r] == nullptr) return false;
  }
  return true;
}

}  // namespace

absl::Status LaunchOneShotAllReduceBf16(const OneShotBuffers& b, void* data, int64_t count,
                                        cudaStream_t stream) {
  if (!Ready(b) || count <= 0 || count % 8 != 0 ||
      static_cast<uint64_t>(count) * 2 > one_shot::kMaxBytes || !Aligned(data)) {
    return absl::InvalidArgumentError(absl::StrCat("one-shot all-reduce of ", count,
                                                   " bf16: not set up, too large or unaligned"));
  }
  const int64_t vecs = count / 8;
  const int blocks = static_cast<int>((vecs + kChunkThreads - 1) / kChunkThreads);
  AllReduceKernel<<<blocks, kChunkThreads, 0, stream>>>(b, static_cast<uint4*>(data), vecs);
  return LaunchError("one-shot all-reduce");
}

absl::Status LaunchOneShotAllReduceAddRmsNorm(const OneShotBuffers& b, const void* x,
                                              void* residual, const void* weight, void* out,
                                              int rows, int hidden, float eps,
                                              cudaStream_t stream) {
  if (!Ready(b) || rows <= 0 || rows > kSlots || hidden <= 0 || hidden % 8 != 0 ||
      static_cast<size_t>(hidden) * 2 > kSlotBytes || !(eps > 0.f) || !Aligned(x) ||
      !Aligned(residual) || !Aligned(weight) || !Aligned(out)) {
    return absl::InvalidArgumentError(absl::StrCat("one-shot all-reduce + RMSNorm of ", rows, " x ",
                                                   hidden, ": not set up or unsupported"));
  }
  const int vecs = hidden / 8;
  const auto* xv = static_cast<const uint4*>(x);
  auto* rv = static_cast<uint4*>(residual);
  const auto* wv = static_cast<const uint4*>(weight);
  auto* ov = static_cast<uint4*>(out);
  const float inv_hidden = 1.f / hidden;
  auto launch = [&](auto kernel) {
    return kernels::device::LaunchDependent(kernel, dim3(rows), dim3(kNormThreads), 0, stream, b,
                                            xv, rv, wv, ov, vecs, eps, inv_hidden);
  };
  const cudaError_t err = vecs <= kNormThreads       ? launch(AllReduceAddRmsNormKernel<1>)
                          : vecs <= 2 * kNormThreads ? launch(AllReduceAddRmsNormKernel<2>)
                                                     : launch(AllReduceAddRmsNormKernel<4>);
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("one-shot all-reduce + RMSNorm launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

absl::Status LaunchOneShotAllReduceMaxU64(const OneShotBuffers& b, uint64_t* data, int64_t count,
                                          cudaStream_t stream) {
  if (!Ready(b) || count <= 0 || static_cast<uint64_t>(count) > one_shot::kMaxU64Count ||
      reinterpret_cast<uintptr_t>(data) % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("one-shot maximum of ", count,
                                                   " uint64: not set up, too many or unaligned"));
  }
  const int blocks = static_cast<int>((count + 2 * kChunkThreads - 1) / (2 * kChunkThreads));
  AllReduceMaxU64Kernel<<<blocks, kChunkThreads, 0, stream>>>(b, data, count);
  return LaunchError("one-shot maximum");
}

}  // namespace memshare::engine
