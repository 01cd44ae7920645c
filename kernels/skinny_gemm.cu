#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/device_util.cuh"
#include "kernels/skinny_gemm.h"

namespace memshare::kernels {
namespace {

namespace cg = cooperative_groups;
using device::CpAsync16;
using device::CpAsyncCommit;
using device::CpAsyncWait;
using device::MmaBf16;
using device::PackBf16x2;
using device::SmemAddr;
using device::UnpackBf16x2;

// Bytes and FLOPs, R1-Distill-Qwen-7B at m = 64: the down projection reads
// 135.8 MB of W and 2.4 MB of X (from L2, once per CTA column) and does
// 8.7 GFLOP, i.e. 64 FLOP per weight byte, far under the tensor cores'
// ~300 FLOP/B: the kernel is a weight stream, and its job is to keep enough
// bytes in flight (32 KB per CTA, two CTAs per multiprocessor) with few
// instructions per byte.
//
// The warp's MMA (m16n8k16) takes 16 W rows as A and 8 tokens as B. A lane
// holds k positions {2c, 2c+1, 2c+8, 2c+9} (c = lane % 4) of each k16 step in
// both operands; since a dot product does not care about the order of k, a
// lane instead loads 8 consecutive k (16 bytes) of its W rows and of its
// token from a 32-k chunk at offset 8c, and uses elements 0-3 as its
// positions in one k16 step and 4-7 in the next. A and B agree on the
// permutation, so the sums are exact products over all 32 k.
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerCta = 16 * kWarps;  // 128 W rows, 16 per warp
constexpr int kChunkK = 32;               // k per chunk
constexpr int kStageChunks = 4;           // chunks per X stage (128 k)
// X stage rows are 256 bytes of data; padding them to 320 puts tokens g and
// g + 1 64 bytes apart modulo 128, so a quarter-warp's 16-byte reads
// (tokens g, g + 1 at offsets 16c) hit distinct banks.
constexpr int kXRowBytes = kStageChunks * kChunkK * 2 + 64;
// The partial tile [token][128 rows] in fp32, rows padded by 16 bytes so
// that the fragment stores (rows g, tokens 2c) spread over all banks.
constexpr int kRedRowFloats = kRowsPerCta + 4;
constexpr int kMaxSplits = 8;  // portable cluster size

template <int NT>
constexpr int SmemBytes() {
  return std::max(2 * 8 * NT * kXRowBytes, 8 * NT * kRedRowFloats * 4);
}

struct Params {
  const char* x;
  int64_t ldx;
  const char* w;
  int64_t ldw;
  void* y;
  int64_t ldy;
  const uint16_t* bias;
  int m, n, k;
  bool fp32_out;
};

__device__ __forceinline__ uint4 LdgStream(const char* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 Lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr));
  return v;
}

// Grid (ceil(n / 128), splits), clusters of (1, splits, 1): CTA (x, s) owns
// W rows [128x, 128x + 128) and the s-th of `splits` equal runs of 32-k
// chunks; warp w of it owns rows 128x + 16w .. + 15 and every token.
template <int NT>
__global__ void __launch_bounds__(kThreads, 2) SkinnyGemmKernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kTok = 8 * NT;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;
  const int c4 = lane & 3;
  cg::cluster_group cluster = cg::this_cluster();
  const int splits = static_cast<int>(cluster.num_blocks());
  const int split = static_cast<int>(cluster.block_rank());
  const int total_chunks = p.k / kChunkK;
  const int c0 = static_cast<int>(int64_t{split} * total_chunks / splits);
  const int nchunks = static_cast<int>(int64_t{split + 1} * total_chunks / splits) - c0;
  const int nstages = (nchunks + kStageChunks - 1) / kStageChunks;
  const int cta_row0 = blockIdx.x * kRowsPerCta;
  const int r_lo = cta_row0 + warp * 16 + g;
  // Rows past n read row n - 1 (valid memory); their sums are never stored.
  const int64_t k_at = int64_t{c0} * kChunkK + 8 * c4;
  const char* w_lo = p.w + (std::min(r_lo, p.n - 1) * p.ldw + k_at) * 2;
  const char* w_hi = p.w + (std::min(r_lo + 8, p.n - 1) * p.ldw + k_at) * 2;

  uint4 wc[kStageChunks][2] = {};
  uint4 wn[kStageChunks][2] = {};
#pragma unroll
  for (int c = 0; c < kStageChunks; ++c) {
    if (c < nchunks) {
      wc[c][0] = LdgStream(w_lo + c * kChunkK * 2);
      wc[c][1] = LdgStream(w_hi + c * kChunkK * 2);
    }
  }
  // Programmatic dependent launch: what came before reads only W; X and Y
  // belong to the preceding kernel until it has finished.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");

  const uint32_t xs = SmemAddr(smem);
  auto load_x = [&](int stage, int buf) {
    for (int u = threadIdx.x; u < kTok * 16; u += kThreads) {
      const int tok = u >> 4;
      const int col = u & 15;  // 16-byte unit of the stage's 128 k
      const int chunk = stage * kStageChunks + (col >> 2);
      const bool ok = tok < p.m && chunk < nchunks;
      const char* src =
          p.x + (int64_t{ok ? tok : 0} * p.ldx + int64_t{c0 + (ok ? chunk : 0)} * kChunkK +
                 (col & 3) * 8) *
                    2;
      CpAsync16(xs + (buf * kTok + tok) * kXRowBytes + col * 16, src, ok ? 16 : 0);
    }
    CpAsyncCommit();
  };

  float acc[NT][4];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
  load_x(0, 0);
  for (int s = 0; s < nstages; ++s) {
    const int next = (s + 1) * kStageChunks;
    if (s + 1 < nstages) {
#pragma unroll
      for (int c = 0; c < kStageChunks; ++c) {
        if (next + c < nchunks) {
          wn[c][0] = LdgStream(w_lo + (next + c) * kChunkK * 2);
          wn[c][1] = LdgStream(w_hi + (next + c) * kChunkK * 2);
        }
      }
      load_x(s + 1, (s + 1) & 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const uint32_t xb = xs + ((s & 1) * kTok + g) * kXRowBytes + c4 * 16;
#pragma unroll
    for (int c = 0; c < kStageChunks; ++c) {
      if (s * kStageChunks + c < nchunks) {
        const uint32_t a0[4] = {wc[c][0].x, wc[c][1].x, wc[c][0].y, wc[c][1].y};
        const uint32_t a1[4] = {wc[c][0].z, wc[c][1].z, wc[c][0].w, wc[c][1].w};
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          const uint4 xv = Lds128(xb + t * 8 * kXRowBytes + c * kChunkK * 2);
          MmaBf16(acc[t], a0, xv.x, xv.y);
          MmaBf16(acc[t], a1, xv.z, xv.w);
        }
      }
    }
    __syncthreads();  // this buffer is refilled at stage s + 2
#pragma unroll
    for (int c = 0; c < kStageChunks; ++c) wc[c][0] = wn[c][0], wc[c][1] = wn[c][1];
  }
  // The next kernel may start launching; it waits for this grid to finish
  // before it reads Y.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

  // Partial tile into this CTA's shared memory (the X buffers are free).
  float* red = reinterpret_cast<float*>(smem);
  const int row_in = warp * 16 + g;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int tok = t * 8 + 2 * c4;
    red[tok * kRedRowFloats + row_in] = acc[t][0];
    red[(tok + 1) * kRedRowFloats + row_in] = acc[t][1];
    red[tok * kRedRowFloats + row_in + 8] = acc[t][2];
    red[(tok + 1) * kRedRowFloats + row_in + 8] = acc[t][3];
  }
  cluster.sync();
  // CTA `split` sums its share of the tile over the cluster, in rank order.
  const int units = p.m * (kRowsPerCta / 4);  // float4s of the valid tokens
  const int u_end = static_cast<int>(int64_t{split + 1} * units / splits);
  for (int u = static_cast<int>(int64_t{split} * units / splits) + threadIdx.x; u < u_end;
       u += kThreads) {
    const int tok = u / (kRowsPerCta / 4);
    const int q = u % (kRowsPerCta / 4);
    float* mine = red + tok * kRedRowFloats + q * 4;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int r = 0; r < splits; ++r) {
      const float4 v = *reinterpret_cast<const float4*>(cluster.map_shared_rank(mine, r));
      sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
    }
    const int row = cta_row0 + q * 4;
    if (row >= p.n) continue;  // n % 8 == 0: rows row .. row + 3 are all valid
    if (p.bias != nullptr) {
      const uint2 b = *reinterpret_cast<const uint2*>(p.bias + row);
      const float2 b01 = UnpackBf16x2(b.x);
      const float2 b23 = UnpackBf16x2(b.y);
      sum.x += b01.x, sum.y += b01.y, sum.z += b23.x, sum.w += b23.y;
    }
    const int64_t at = tok * p.ldy + row;
    if (p.fp32_out) {
      reinterpret_cast<float4*>(p.y)[at / 4] = sum;
    } else {
      reinterpret_cast<uint2*>(p.y)[at / 4] =
          make_uint2(PackBf16x2(sum.x, sum.y), PackBf16x2(sum.z, sum.w));
    }
  }
  cluster.sync();  // peers read this CTA's tile until here
}

int TokenTiles(int m) {
  const int t = (m + 7) / 8;
  if (t <= 2) return t;
  if (t <= 4) return 4;
  if (t <= 6) return 6;
  return 8;
}

template <int NT>
int BlocksPerSm() {
  static const int blocks = [] {
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, SkinnyGemmKernel<NT>, kThreads,
                                                      SmemBytes<NT>()) != cudaSuccess) {
      cudaGetLastError();
      return 1;
    }
    return std::max(1, b);
  }();
  return blocks;
}

int BlocksPerSmFor(int nt) {
  switch (nt) {
    case 1: return BlocksPerSm<1>();
    case 2: return BlocksPerSm<2>();
    case 4: return BlocksPerSm<4>();
    case 6: return BlocksPerSm<6>();
    default: return BlocksPerSm<8>();
  }
}

template <int NT>
cudaError_t Launch(const Params& p, int splits, bool pdl, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((p.n + kRowsPerCta - 1) / kRowsPerCta, splits);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = SmemBytes<NT>();
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = 1;
  attrs[0].val.clusterDim.y = splits;
  attrs[0].val.clusterDim.z = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attrs;
  cfg.numAttrs = pdl ? 2 : 1;
  return cudaLaunchKernelEx(&cfg, SkinnyGemmKernel<NT>, p);
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool SkinnyGemmSupports(const SkinnyGemmArgs& a) {
  return a.m >= 1 && a.m <= kSkinnyGemmMaxM && a.n >= 8 && a.n % 8 == 0 && a.k >= kChunkK &&
         a.k % kChunkK == 0 && a.ldx >= a.k && a.ldx % 8 == 0 && a.ldw >= a.k &&
         a.ldw % 8 == 0 && a.ldy >= a.n && a.ldy % 8 == 0 && Aligned16(a.x) && Aligned16(a.w) &&
         Aligned16(a.y) && a.x != nullptr && a.w != nullptr && a.y != nullptr &&
         (a.bias == nullptr || (!a.fp32_out && reinterpret_cast<uintptr_t>(a.bias) % 8 == 0));
}

int SkinnyGemmSplits(const SkinnyGemmArgs& a, int num_sms) {
  const int row_tiles = (a.n + kRowsPerCta - 1) / kRowsPerCta;
  const int slots = BlocksPerSmFor(TokenTiles(std::max(1, a.m))) * std::max(1, num_sms);
  const int s = slots / std::max(1, row_tiles);
  return std::clamp(s, 1, std::min(kMaxSplits, std::max(1, a.k / kChunkK)));
}

absl::Status LaunchSkinnyGemm(const SkinnyGemmArgs& a, int splits, bool pdl,
                              cudaStream_t stream) {
  if (!SkinnyGemmSupports(a)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "skinny gemm: m ", a.m, " (1..", kSkinnyGemmMaxM, "), n ", a.n,
        " (multiple of 8), k ", a.k, " (multiple of 32), ld ", a.ldx, "/", a.ldw, "/", a.ldy,
        " (multiples of 8), 16-byte aligned buffers, bias only with bf16 output"));
  }
  if (splits < 0 || splits > kMaxSplits || splits > a.k / kChunkK) {
    return absl::InvalidArgumentError(
        absl::StrCat("skinny gemm: splits ", splits, " must be 0..", kMaxSplits,
                     " and at most k / 32 = ", a.k / kChunkK));
  }
  if (splits == 0) {
    int dev = 0, sms = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    splits = SkinnyGemmSplits(a, sms);
  }
  const Params p{static_cast<const char*>(a.x), a.ldx, static_cast<const char*>(a.w), a.ldw,
                 a.y, a.ldy, static_cast<const uint16_t*>(a.bias), a.m, a.n, a.k, a.fp32_out};
  cudaError_t err;
  switch (TokenTiles(a.m)) {
    case 1: err = Launch<1>(p, splits, pdl, stream); break;
    case 2: err = Launch<2>(p, splits, pdl, stream); break;
    case 4: err = Launch<4>(p, splits, pdl, stream); break;
    case 6: err = Launch<6>(p, splits, pdl, stream); break;
    default: err = Launch<8>(p, splits, pdl, stream); break;
  }
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("skinny gemm launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
