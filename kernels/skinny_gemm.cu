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
// 135.8 MB of W and 2.4 MB of X and does 8.7 GFLOP, 64 FLOP per weight byte,
// far under the tensor cores' ~300 FLOP/B: the kernel is a weight stream. Its
// job is to keep enough bytes in flight (a multiprocessor needs ~50 KB to
// cover DRAM latency at its share of 3 TB/s) with few instructions per byte.
//
// Each CTA streams its tile of W (128 rows) and X (the tokens) through a
// ring of shared-memory stages of 128 k with 16-byte cp.async, kStages - 1
// stages ahead of the MMAs (96 KB of W in flight at 64 tokens). Two earlier
// versions were slower than cuBLASLt (bench/NOTES-cuda-backend.md, run 6):
// W through registers (two stages in flight per warp, 1.1–2.2 TB/s) and one
// bulk copy per row and stage (the copy engine's per-request cost: 0.7 TB/s).
//
// The warp's MMA (m16n8k16) takes 16 W rows as A and 8 tokens as B. A lane
// holds k positions {2c, 2c+1, 2c+8, 2c+9} (c = lane % 4) of each k16 step in
// both operands; since a dot product does not care about the order of k, a
// lane instead reads 8 consecutive k (16 bytes) of its W rows and of its
// token from a 32-k chunk at offset 16c bytes, and uses elements 0-3 as its
// positions in one k16 step and 4-7 in the next. A and B agree on the
// permutation, so the sums are exact products over all 32 k.
//
// Stage rows are 256 bytes (4 chunks of 64); an odd row keeps its chunks in
// the order 1, 0, 3, 2, so that a quarter-warp's reads (rows g and g + 1,
// 16 bytes at offset 16c of one chunk) fall in distinct banks. A lane's rows
// all have the parity of g, so it finds chunk c of W and of X at the same
// place.
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 32;                     // two m16 tiles
constexpr int kRowsPerCta = kWarps * kRowsPerWarp;   // 128
constexpr int kChunkK = 32;                          // k per chunk
constexpr int kStageChunks = 4;                      // chunks per stage (128 k)
constexpr int kRowBytes = kStageChunks * kChunkK * 2;  // 256
// The partial tile [token][128 rows] in fp32, rows padded by 16 bytes so
// that the fragment stores (rows g, tokens 2c) spread over all banks.
constexpr int kRedRowFloats = kRowsPerCta + 4;
constexpr int kMaxSplits = 8;  // portable cluster size

template <int NT>
struct Layout {
  static constexpr int kTok = 8 * NT;
  static constexpr int kWBytes = kRowsPerCta * kRowBytes;  // 32 KB
  static constexpr int kStageBytes = kWBytes + kTok * kRowBytes;
  // As many stages as fit in 200 KB, at most 6 (4 at 64 tokens).
  static constexpr int kStages = std::min(6, (200 * 1024) / kStageBytes);
  static constexpr int kRedBytes = kTok * kRedRowFloats * 4;
  static constexpr int kSmem = std::max(kStages * kStageBytes, kRedBytes);
};

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

__device__ __forceinline__ int MinInt(int a, int b) { return a < b ? a : b; }

__device__ __forceinline__ uint4 Lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr));
  return v;
}

// Grid (ceil(n / 128), splits), clusters of (1, splits, 1): CTA (x, s) owns
// W rows [128x, 128x + 128) and the s-th of `splits` equal runs of 32-k
// chunks; warp w owns rows 128x + 32w .. + 31 and every token.
template <int NT>
__global__ void __launch_bounds__(kThreads, 1) SkinnyGemmKernel(const Params p) {
  using L = Layout<NT>;
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t base = SmemAddr(smem);
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  cg::cluster_group cluster = cg::this_cluster();
  const int splits = static_cast<int>(cluster.num_blocks());
  const int split = static_cast<int>(cluster.block_rank());
  const int total_chunks = p.k / kChunkK;
  const int c0 = static_cast<int>(int64_t{split} * total_chunks / splits);
  const int nchunks = static_cast<int>(int64_t{split + 1} * total_chunks / splits) - c0;
  const int nstages = (nchunks + kStageChunks - 1) / kStageChunks;
  const int cta_row0 = blockIdx.x * kRowsPerCta;
  const int rows = MinInt(kRowsPerCta, p.n - cta_row0);

  // Stage i holds chunks [4i, 4i + 4) of this CTA's run; unit u (16 bytes)
  // of row r goes to unit u ^ 4 (r & 1) of the row.
  auto issue_w = [&](int i) {
    const uint32_t dst = base + (i % L::kStages) * L::kStageBytes;
    const int units = MinInt(kStageChunks, nchunks - i * kStageChunks) * 4;
    const int64_t k_at = int64_t{c0 + i * kStageChunks} * kChunkK;
    for (int e = threadIdx.x; e < rows * 16; e += kThreads) {
      const int r = e >> 4;
      const int u = e & 15;
      if (u < units) {
        CpAsync16(dst + r * kRowBytes + ((u ^ ((r & 1) << 2)) << 4),
                  p.w + ((cta_row0 + r) * p.ldw + k_at + u * 8) * 2);
      }
    }
  };
  auto issue_x = [&](int i) {
    const uint32_t dst = base + (i % L::kStages) * L::kStageBytes + L::kWBytes;
    const int units = MinInt(kStageChunks, nchunks - i * kStageChunks) * 4;
    const int64_t k_at = int64_t{c0 + i * kStageChunks} * kChunkK;
    for (int e = threadIdx.x; e < p.m * 16; e += kThreads) {
      const int t = e >> 4;
      const int u = e & 15;
      if (u < units) {
        CpAsync16(dst + t * kRowBytes + ((u ^ ((t & 1) << 2)) << 4),
                  p.x + (t * p.ldx + k_at + u * 8) * 2);
      }
    }
  };

  // Programmatic dependent launch: W is never written, so the first stages
  // of it are requested before the preceding kernel has finished; X is its
  // output. Commit groups: one per stage (the first also holds the early W).
  const int ahead = L::kStages - 1;
  for (int i = 0; i < MinInt(ahead, nstages); ++i) issue_w(i);
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  for (int i = 0; i < ahead; ++i) {
    if (i < nstages) issue_x(i);
    CpAsyncCommit();
  }

  float acc[2][NT][4];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[h][t][0] = acc[h][t][1] = acc[h][t][2] = acc[h][t][3] = 0.f;
  const int g = lane >> 2;
  const int c4 = lane & 3;
  const int flip = g & 1;  // chunk c of this lane's rows is stored at c ^ flip
  const uint32_t w_off = (warp * kRowsPerWarp + g) * kRowBytes + c4 * 16;
  const uint32_t x_off = L::kWBytes + g * kRowBytes + c4 * 16;
  for (int i = 0; i < nstages; ++i) {
    if (i + ahead < nstages) {
      issue_w(i + ahead);
      issue_x(i + ahead);
    }
    CpAsyncCommit();
    CpAsyncWait<L::kStages - 1>();
    __syncthreads();
    const int chunks = MinInt(kStageChunks, nchunks - i * kStageChunks);
    const uint32_t sb = base + (i % L::kStages) * L::kStageBytes;
#pragma unroll
    for (int c = 0; c < kStageChunks; ++c) {
      if (c < chunks) {
        const uint32_t at = ((c ^ flip) << 6);
        const uint32_t wb = sb + w_off + at;
        const uint4 a0 = Lds128(wb);
        const uint4 a1 = Lds128(wb + 8 * kRowBytes);
        const uint4 a2 = Lds128(wb + 16 * kRowBytes);
        const uint4 a3 = Lds128(wb + 24 * kRowBytes);
        const uint32_t lo0[4] = {a0.x, a1.x, a0.y, a1.y};
        const uint32_t lo1[4] = {a0.z, a1.z, a0.w, a1.w};
        const uint32_t hi0[4] = {a2.x, a3.x, a2.y, a3.y};
        const uint32_t hi1[4] = {a2.z, a3.z, a2.w, a3.w};
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          const uint4 xv = Lds128(sb + x_off + t * 8 * kRowBytes + at);
          MmaBf16(acc[0][t], lo0, xv.x, xv.y);
          MmaBf16(acc[0][t], lo1, xv.z, xv.w);
          MmaBf16(acc[1][t], hi0, xv.x, xv.y);
          MmaBf16(acc[1][t], hi1, xv.z, xv.w);
        }
      }
    }
    __syncthreads();  // this stage's buffer is refilled next
  }
  CpAsyncWait<0>();  // only empty groups remain; nothing may land in the tile
  // The next kernel may start launching; it waits for this grid to finish
  // before it reads Y.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

  // Partial tile into this CTA's shared memory (the stages are free).
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row_in = warp * kRowsPerWarp + h * 16 + g;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const int tok = t * 8 + 2 * c4;
      red[tok * kRedRowFloats + row_in] = acc[h][t][0];
      red[(tok + 1) * kRedRowFloats + row_in] = acc[h][t][1];
      red[tok * kRedRowFloats + row_in + 8] = acc[h][t][2];
      red[(tok + 1) * kRedRowFloats + row_in + 8] = acc[h][t][3];
    }
  }
  cluster.sync();
  // CTA `split` sums its share of the tile over the cluster, in rank order.
  const int units = p.m * (kRowsPerCta / 4);  // float4s of the valid tokens
  const int u_end = static_cast<int>(int64_t{split + 1} * units / splits);
  for (int u = static_cast<int>(int64_t{split} * units / splits) + threadIdx.x; u < u_end;
       u += kThreads) {
    const int tok = u / (kRowsPerCta / 4);
    const int q = u % (kRowsPerCta / 4);
    const int row = cta_row0 + q * 4;
    if (row >= p.n) continue;  // n % 8 == 0: rows row .. row + 3 are all valid
    float* mine = red + tok * kRedRowFloats + q * 4;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int r = 0; r < splits; ++r) {
      const float4 v = *reinterpret_cast<const float4*>(cluster.map_shared_rank(mine, r));
      sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
    }
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
cudaError_t Launch(const Params& p, int splits, bool pdl, cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(
      SkinnyGemmKernel<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, Layout<NT>::kSmem);
  if (attr != cudaSuccess) return attr;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((p.n + kRowsPerCta - 1) / kRowsPerCta, splits);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = Layout<NT>::kSmem;
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
  // One CTA per multiprocessor (its stages take most of shared memory).
  const int row_tiles = (a.n + kRowsPerCta - 1) / kRowsPerCta;
  const int s = std::max(1, num_sms) / std::max(1, row_tiles);
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
