#include <cooperative_groups.h>
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/device_util.cuh"
#include "kernels/greedy_candidate.h"
#include "kernels/skinny_gemm.h"

namespace memshare::kernels {
namespace {

namespace cg = cooperative_groups;
using device::MmaBf16;
using device::PackBf16x2;
using device::Silu;
using device::SmemAddr;
using device::UnpackBf16x2;

// Bytes and FLOPs, R1-Distill-Qwen-7B at m = 64: the down projection reads
// 135.8 MB of W and 2.4 MB of X and does 8.7 GFLOP, 64 FLOP per weight byte,
// far under the tensor cores' ~300 FLOP/B: the kernel is a weight stream. Its
// job is to keep enough bytes in flight (at ~3 us of loaded DRAM latency a
// multiprocessor needs ~70 KB for its share of 3 TB/s) with few instructions
// per byte.
//
// One producer thread streams the CTA's tile of W (128 rows) and X (the
// tokens) through a ring of shared-memory stages of 128 k with the tensor
// copy engine (two 64-k boxes of each per stage, 128-byte swizzle, zero fill
// past the matrix), completing on the stage's mbarrier; four consumer warps,
// 32 W rows each, read the swizzled tiles with ldmatrix, run the MMAs and
// release the stage. The CTAs of a cluster then sum their partial tiles
// through distributed shared memory: each reads its share of every peer's
// tile (all ranks' loads in flight at once) and adds them in rank order.
//
// Where it stands (H100, bench/NOTES-cuda-backend.md, run 6): 2.9 TB/s of
// weights for the down projection at up to 16 tokens and 2.4 TB/s for QKV
// and O, ahead of cuBLASLt there; at 64 tokens it wins only on the down
// projection (51.5 against 54.8 us) and loses on QKV and O by 2-3 us, which
// Tune() sees. What did not work: W through registers (1.1-2.2 TB/s), one
// bulk copy per row and stage (the copy engine's per-request cost, 0.7 TB/s),
// 16-byte cp.async (a multiprocessor's outstanding loads cap it at ~22 GB/s),
// eight consumer warps (no gain), pushing the partials as scalar stores into
// the owner's shared memory (QKV at 64 tokens 23.7 against 17.5 us), 256-row
// tiles of one 64-k box per stage past 32 tokens (more W in flight, less X
// per W byte, yet slower at every decode shape: QKV at 64 tokens 23.1
// against 15.9 us; session 5), 128-row tiles of one box per stage (9
// stages at 64 tokens: no faster), the closing cluster sum with a batch of
// units' loads issued at once (no faster; session 6). At 64 tokens gate/up
// streams at ~2.7 TB/s against 2.97 at one token, and neither X's L2
// traffic (X's boxes zero-filled instead of read: no faster) nor the W in
// flight explains it; cuBLASLt is at the same rate. Letting the next kernel
// launch at this one's start (its CTAs on the multiprocessors a cluster
// split leaves idle) made the decode step slower (session 7). What does
// explain it (session 8): without their epilogues the four products at 64
// tokens stream at the one-token rate (gate/up 89 us, 3.06 TB/s), and
// without the MMAs they are no faster; the end of each CTA's work (partial
// sums, the closing sum, the stores) and the kernel boundaries cost ~21 us
// a layer. What did not win it back: the stream-K partial's flag raised by
// another warp (its GPU-scope fence takes 2-11 us under the ring's queued
// loads), each CTA prefetching its next W into L2, two CTAs a
// multiprocessor (2-stage rings), the closing sum's bias and residual
// loads issued before the cluster barrier, the first layer's weights
// prefetched into L2 between decode steps (session 9). What did win some
// (session 9): the stream-K owner's partial waited for and copied into a
// free stage by its producer while the consumers finish the run (gate/up at
// 64 tokens with SwiGLU 101.6 -> 100.0 us, at one token 92.4 -> 91.7).
//
// In a decode step at 64 tokens (session 11, a per-CTA timeline of the
// step): stream-K's gate/up CTAs, with equal work, end 78-108 us after
// their start (the multiprocessors' shares of the memory system differ
// and move; run shapes do not explain it), and the kernel lasts as long as
// the slowest. What did not win that back: persistent CTAs drawing whole
// tiles and the last tiles' chunks from a counter, the last chunk's CTA
// adding the tile's partials in chunk order (correct and deterministic,
// but +20 to +70 us a step against stream-K; with many small chunks +0.5
// ms: each chunk's partial store and fence), and stream-K runs weighted
// toward the CTAs that start first (the first 20 do start 10 us early, but
// do not end early). The code is in bench/results/2026-11-27-h100-session11/.
// What did win it back (session 12): the column split (SkinnyGemmWideKernel
// below), whose CTAs each read every k of their own 288 W rows and store
// them without partial sums: gate/up at 64 tokens with SwiGLU 100.0 -> 96.3
// us alone, and the b64 decode step 6.915 -> 6.681 ms pipelined.
//
// SwiGLU (SkinnyGemmArgs::silu_mul): tile t's W box is two 64-row boxes,
// gate rows 64t.. and up rows n/2 + 64t.., which the swizzle lays out as
// one 128-row box, so the consumers are the same; the epilogue writes
// silu(gate) * up from the fp32 sums (64 columns a tile).
//
// The other epilogues (session 7): the RMSNorm's residual and scale modes
// and the LM head's greedy candidates (SkinnyGemmArgs). The cluster split
// runs residual mode and the candidates a warp per token (lane l: rows
// 4l .. 4l + 3 of the tile), so that a token's sum over the tile is a warp
// reduction; the stream-K store reduces over the lanes holding a token and
// then over the four warps through Layout::kSsBytes of shared memory. Both
// keep their own loops: one loop for both cost O and down ~1.5 us each.
constexpr int kBoxK = 64;       // k per box: 128 bytes, the swizzle span
constexpr int kStageBoxes = 2;  // 128 k per stage
constexpr int kConsumerWarps = 4;
constexpr int kRowsPerWarp = 32;  // two m16 tiles
constexpr int kRowsPerCta = kConsumerWarps * kRowsPerWarp;  // 128
constexpr int kThreads = (kConsumerWarps + 1) * 32;  // + the producer warp
constexpr int kWBoxBytes = kRowsPerCta * kBoxK * 2;  // 16 KB
// The partial tile [token][128 rows] in fp32, rows padded by 16 bytes so
// that the fragment stores (rows g, tokens 2c) spread over all banks.
constexpr int kRedRowFloats = kRowsPerCta + 4;
constexpr int kMaxSplits = 8;  // portable cluster size

template <int NT>
struct Layout {
  static constexpr int kTok = 8 * NT;
  static constexpr int kXBoxBytes = kTok * kBoxK * 2;  // a multiple of 1 KB
  static constexpr int kStageBytes = kStageBoxes * (kWBoxBytes + kXBoxBytes);
  // As many stages as fit in 200 KB, at most 6 (4 at 64 tokens).
  static constexpr int kStages = std::min(6, (200 * 1024) / kStageBytes);
  static constexpr int kRedBytes = kTok * kRedRowFloats * 4;
  static constexpr int kBarOffset = std::max(kStages * kStageBytes, kRedBytes);
  // The epilogues' own memory (the stages may still be in use): each
  // token's RMS scale, and the stream-K store's per-warp sums of squares or
  // (32 tokens at a time) greedy candidates.
  static constexpr int kScaleOffset = kBarOffset + 2 * kStages * 8;
  static constexpr int kSsOffset = kScaleOffset + 64 * 4;
  static constexpr int kSsBytes = kConsumerWarps * 64 * 4;
  // + 1 KB to align the stages to the swizzle's 1,024-byte pattern.
  static constexpr int kSmem = 1024 + kSsOffset + kSsBytes;
  // The epilogues' memory must not move a layout into the next
  // shared-memory carve-out (196 KB, with the 1 KB the system keeps per
  // CTA): at 64 tokens 2 KB there instead of 1 took the 228 KB one and the
  // decode step ran 0.1 ms slower (bench/NOTES-cuda-backend.md, session 7,
  // calls 5-7).
  static_assert((kSmem + 1024 <= 196 * 1024) == (1024 + kScaleOffset + 1024 <= 196 * 1024),
                "the epilogues' memory changes the carve-out");
};

struct Params {
  void* y;
  int64_t ldy;
  const uint16_t* bias;
  int m, n, k;
  bool fp32_out;
  // SkinnyGemmArgs::silu_mul: n / 2, the first up row (tile t is gate rows
  // 64t .. 64t + 63 and the up rows n / 2 later); 0 for a plain product.
  int silu_half;
  // SkinnyGemmArgs' residual mode (residual set) and scale mode (sumsq_in
  // set); inv_k = 1 / k.
  const uint16_t* residual;
  float* sumsq_out;
  const float* sumsq_in;
  int sumsq_parts;
  float inv_k;
  float rms_eps;
  // SkinnyGemmArgs::argmax_out (tiles: its candidates a token) and store_y.
  uint64_t* argmax_out;
  const int32_t* store_y;
  int tiles;
  bool dependents_at_start;  // SkinnyGemmArgs::dependents_at_start
};

// Whether this launch stores Y (SkinnyGemmArgs::store_y).
__device__ __forceinline__ bool StoresY(const Params& p) {
  return p.store_y == nullptr || *p.store_y != 0;
}

__device__ __forceinline__ uint64_t MaxU64(uint64_t a, uint64_t b) { return a > b ? a : b; }

// Scale mode: each token's rsqrt(mean square + eps) into scale[0 .. m),
// from the residual-mode product's partial sums (by threads 0 .. 127, which
// must have waited for the preceding kernel). Four chains of partials,
// added in a fixed order.
__device__ __forceinline__ void LoadRowScale(const Params& p, float* scale, int thread) {
  if (thread >= p.m) return;
  const float* in = p.sumsq_in + thread;
  float s[4] = {0.f, 0.f, 0.f, 0.f};
  int q = 0;
  for (; q + 4 <= p.sumsq_parts; q += 4) {
#pragma unroll
    for (int j = 0; j < 4; ++j) s[j] += __ldcg(in + (q + j) * p.m);
  }
  for (; q < p.sumsq_parts; ++q) s[0] += __ldcg(in + q * p.m);
  scale[thread] = rsqrtf(((s[0] + s[1]) + (s[2] + s[3])) * p.inv_k + p.rms_eps);
}

__device__ __forceinline__ int MinInt(int a, int b) { return a < b ? a : b; }

__device__ __forceinline__ void BarInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void BarArriveExpect(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void BarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void BarWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// A 2-D box of `map` at (k, row) into shared memory, completing on `bar`.
__device__ __forceinline__ void TmaLoad(uint32_t dst, const CUtensorMap* map, int k, int row,
                                        uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k), "r"(row), "r"(bar)
      : "memory");
}

// The W rows of tile `tile` for the box at k into `dst` (kWBoxBytes): rows
// 128 tile .. + 127, or with SwiGLU (p.silu_half) gate rows 64 tile .. + 63
// and the up rows n / 2 later, one 64-row box each, which the swizzle lays
// out as the 128-row box would be (8 KB, a multiple of its 1,024 bytes).
__device__ __forceinline__ void TmaLoadW(uint32_t dst, const CUtensorMap* map, int k, int tile,
                                         const Params& p, uint32_t bar) {
  constexpr int kHalf = kRowsPerCta / 2;
  if (p.silu_half == 0) {
    TmaLoad(dst, map, k, tile * kRowsPerCta, bar);
  } else {
    TmaLoad(dst, map, k, tile * kHalf, bar);
    TmaLoad(dst + kWBoxBytes / 2, map, k, p.silu_half + tile * kHalf, bar);
  }
}

// `bytes` (a multiple of 16) from global `src` into shared memory, completing
// on `bar`. The data was written by other CTAs' generic stores and
// published by a release they made and an acquire this thread made: the
// proxy fence orders that acquire before the copy engine's read.
__device__ __forceinline__ void BulkLoad(uint32_t dst, const void* src, uint32_t bytes,
                                         uint32_t bar) {
  asm volatile(
      "fence.proxy.async.global;\n"
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

// Two 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void Ldmatrix2(uint32_t addr, uint32_t (&r)[2]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr));
}

// Unit u (16 bytes) of row r of a box sits at unit u ^ (r % 8): the 128-byte
// swizzle, which makes ldmatrix's eight row reads hit distinct banks.
__device__ __forceinline__ uint32_t Swizzled(uint32_t box, int row, int unit) {
  return box + row * 128 + ((unit ^ (row & 7)) << 4);
}

// wgmma (sm_90a): one warpgroup multiplies a 64 x 16 tile of A by a 16 x N
// tile of B, both read from shared memory through matrix descriptors, into
// N / 2 fp32 accumulators a thread (the mma.sync m16n8 accumulator layout,
// warp w holding rows 16w .. 16w + 15, registers 4j .. 4j + 3 for columns
// 8j .. 8j + 7). Descriptor of a K-major tile in the 128-byte swizzle the
// tensor maps write (rows of 128 bytes, 8-row atoms of 1,024 bytes): start
// address >> 4 in bits 0-13, leading byte offset (unused by this layout)
// 16 >> 4 in bits 16-29, stride byte offset 1024 >> 4 in bits 32-45,
// swizzle mode 1 (128 B) in bits 62-63. A k step of 16 inside the atom
// moves the start address by 32 bytes.
__device__ __forceinline__ uint64_t SmemDesc(uint32_t addr) {
  return uint64_t{(addr & 0x3ffff) >> 4} | (uint64_t{16 >> 4} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}
__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaWaitAll() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Keeps the compiler from moving accumulator reads or writes across the
// asynchronous MMAs.
template <int R>
__device__ __forceinline__ void FenceAccumulators(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int N>
struct Wgmma;
template <>
struct Wgmma<8> {
  static __device__ __forceinline__ void Run(float (&d)[4], uint64_t a, uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3}, %4, %5, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(a), "l"(b));
  }
};
template <>
struct Wgmma<16> {
  static __device__ __forceinline__ void Run(float (&d)[8], uint64_t a, uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(a), "l"(b));
  }
};
template <>
struct Wgmma<32> {
  static __device__ __forceinline__ void Run(float (&d)[16], uint64_t a, uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(a), "l"(b));
  }
};
template <>
struct Wgmma<48> {
  static __device__ __forceinline__ void Run(float (&d)[24], uint64_t a, uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, %24, %25, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
        : "l"(a), "l"(b));
  }
};
template <>
struct Wgmma<64> {
  static __device__ __forceinline__ void Run(float (&d)[32], uint64_t a, uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b));
  }
};

template <>
struct Wgmma<72> {
  static __device__ __forceinline__ void Run(float (&d)[36], uint64_t a, uint64_t b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n72k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}, "
        "%36, %37, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
          "+f"(d[35])
        : "l"(a), "l"(b));
  }
};

// The ring of stages in a CTA's dynamic shared memory (aligned to the
// swizzle's 1,024 bytes): stage s at stage(s), its "full" barrier (the
// producer's copies landed) and its "empty" one (the consumer warps are done
// with it). Init() is for thread 0, before a __syncthreads().
template <int NT>
struct Ring {
  unsigned char* smem;  // the aligned base
  uint32_t base;
  __device__ explicit Ring(unsigned char* smem_raw)
      : smem(reinterpret_cast<unsigned char*>(
            (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023})),
        base(SmemAddr(smem)) {}
  __device__ uint32_t stage(int s) const { return base + s * Layout<NT>::kStageBytes; }
  __device__ uint32_t full(int s) const { return base + Layout<NT>::kBarOffset + 8 * s; }
  __device__ uint32_t empty(int s) const {
    return base + Layout<NT>::kBarOffset + 8 * (Layout<NT>::kStages + s);
  }
  __device__ float* scale() const {
    return reinterpret_cast<float*>(smem + Layout<NT>::kScaleOffset);
  }
  __device__ unsigned char* ss() const { return smem + Layout<NT>::kSsOffset; }
  __device__ void Init() const;
};

template <int NT>
__device__ void Ring<NT>::Init() const {
  for (int s = 0; s < Layout<NT>::kStages; ++s) {
    BarInit(full(s), 1);
    BarInit(empty(s), kConsumerWarps);
  }
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// The consumer warps' MMAs on one stage (its address `stage`, `nb` boxes
// loaded; with wgmma every box is, zeros past the run). Consumer warp w owns
// rows 32w .. + 31 of the CTA's tile and every token (wgmma: the four
// consumer warps are one warpgroup, whose two m64 wgmma per k step cover
// rows 0 .. 63 and 64 .. 127; warp w holds rows 16w .. + 15 of each).
template <int NT, bool kWgmma>
__device__ __forceinline__ void ConsumeStage(float (&acc)[2][NT][4], uint32_t stage, int nb,
                                             int warp, int lane) {
  using L = Layout<NT>;
  auto w_box = [&](int b) { return stage + b * kWBoxBytes; };
  auto x_box = [&](int b) { return stage + kStageBoxes * kWBoxBytes + b * L::kXBoxBytes; };
  if constexpr (kWgmma) {
    // Per box and k step of 16, two wgmma (W rows 0-63 and 64-127 of the
    // box against every token).
    WgmmaFence();
#pragma unroll
    for (int b = 0; b < kStageBoxes; ++b) {
      const uint32_t wb = w_box(b);
      const uint32_t xb = x_box(b);
#pragma unroll
      for (int j = 0; j < kBoxK / 16; ++j) {
        const uint64_t xd = SmemDesc(xb + 32 * j);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          Wgmma<8 * NT>::Run(reinterpret_cast<float(&)[4 * NT]>(acc[h]),
                             SmemDesc(wb + h * 64 * 128 + 32 * j), xd);
        }
      }
    }
    WgmmaCommit();
    WgmmaWaitAll();
#pragma unroll
    for (int h = 0; h < 2; ++h) FenceAccumulators(reinterpret_cast<float(&)[4 * NT]>(acc[h]));
  } else {
    // ldmatrix rows: W (A operand) lane l reads row l % 16 of a 16-row tile
    // at k unit 2j + l / 16; X (B operand, two 8-token tiles per x4) lane l
    // reads token l % 8 + 8 (l / 16) at k unit 2j + (l / 8) % 2.
    const int a_row = warp * kRowsPerWarp + (lane & 15);
    const int a_hi = lane >> 4;
    const int b_tok = (lane & 7) + ((lane >> 4) << 3);
    const int b_hi = (lane >> 3) & 1;
#pragma unroll
    for (int b = 0; b < kStageBoxes; ++b) {
      if (b < nb) {
        const uint32_t wb = w_box(b);
        const uint32_t xb = x_box(b);
#pragma unroll
        for (int j = 0; j < kBoxK / 16; ++j) {
          uint32_t a[2][4];
          device::Ldmatrix4(Swizzled(wb, a_row, 2 * j + a_hi), a[0]);
          device::Ldmatrix4(Swizzled(wb, a_row + 16, 2 * j + a_hi), a[1]);
#pragma unroll
          for (int t = 0; t + 1 < NT; t += 2) {
            uint32_t bf[4];
            device::Ldmatrix4(Swizzled(xb, t * 8 + b_tok, 2 * j + b_hi), bf);
            MmaBf16(acc[0][t], a[0], bf[0], bf[1]);
            MmaBf16(acc[1][t], a[1], bf[0], bf[1]);
            MmaBf16(acc[0][t + 1], a[0], bf[2], bf[3]);
            MmaBf16(acc[1][t + 1], a[1], bf[2], bf[3]);
          }
          if constexpr (NT % 2 == 1) {
            uint32_t bf[2];
            Ldmatrix2(Swizzled(xb, (NT - 1) * 8 + (lane & 7), 2 * j + b_hi), bf);
            MmaBf16(acc[0][NT - 1], a[0], bf[0], bf[1]);
            MmaBf16(acc[1][NT - 1], a[1], bf[0], bf[1]);
          }
        }
      }
    }
  }
}

// Row of the CTA's tile that accumulator acc[h][t][r] holds (r < 2: g,
// else g + 8, g = lane / 4); its token is 8t + 2 (lane % 4) + r % 2.
template <bool kWgmma>
__device__ __forceinline__ int AccRow(int warp, int lane, int h) {
  return (kWgmma ? h * 64 + warp * 16 : warp * kRowsPerWarp + h * 16) + (lane >> 2);
}

// The cluster's sum of the float4 at `mine` (this CTA's partial tile) over
// the `splits` CTAs' tiles: every rank's load issued first (one round trip
// through distributed shared memory), then added in rank order (the same
// bits every run).
__device__ __forceinline__ float4 ClusterSum(const cg::cluster_group& cluster, float* mine,
                                             int splits) {
  float4 v[kMaxSplits];
#pragma unroll
  for (int r = 0; r < kMaxSplits; ++r) {
    if (r < splits) v[r] = *reinterpret_cast<const float4*>(cluster.map_shared_rank(mine, r));
  }
  float4 sum = v[0];
#pragma unroll
  for (int r = 1; r < kMaxSplits; ++r) {
    if (r < splits) sum.x += v[r].x, sum.y += v[r].y, sum.z += v[r].z, sum.w += v[r].w;
  }
  return sum;
}

// Grid (ceil(n / 128), splits), clusters of (1, splits, 1): CTA (x, s) owns
// W rows [128x, 128x + 128) and the s-th of `splits` equal runs of 64-k
// boxes.
template <int NT, bool kWgmma>
__global__ void __launch_bounds__(kThreads, 1)
    SkinnyGemmKernel(const __grid_constant__ CUtensorMap w_map,
                     const __grid_constant__ CUtensorMap x_map, const Params p) {
  using L = Layout<NT>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Ring<NT> ring(smem_raw);
  unsigned char* const smem = ring.smem;
  auto full = [&](int s) { return ring.full(s); };
  auto empty = [&](int s) { return ring.empty(s); };
  auto w_box = [&](int s, int b) { return ring.stage(s) + b * kWBoxBytes; };
  auto x_box = [&](int s, int b) {
    return ring.stage(s) + kStageBoxes * kWBoxBytes + b * L::kXBoxBytes;
  };

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  cg::cluster_group cluster = cg::this_cluster();
  const int splits = static_cast<int>(cluster.num_blocks());
  const int split = static_cast<int>(cluster.block_rank());
  const int total_boxes = (p.k + kBoxK - 1) / kBoxK;
  const int b0 = static_cast<int>(int64_t{split} * total_boxes / splits);
  const int nboxes = static_cast<int>(int64_t{split + 1} * total_boxes / splits) - b0;
  const int nstages = (nboxes + kStageBoxes - 1) / kStageBoxes;
  const int cta_row0 = blockIdx.x * kRowsPerCta;

  if (threadIdx.x == 0) ring.Init();
  __syncthreads();
  if (p.dependents_at_start) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

  float acc[2][NT][4];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[h][t][0] = acc[h][t][1] = acc[h][t][2] = acc[h][t][3] = 0.f;

  if (warp == kConsumerWarps) {
    if (lane == 0) {
      // Producer. Stage i holds boxes [2i, 2i + 2) of this CTA's run. With
      // wgmma every stage is full: a box past the run is read at k past the
      // matrix, which the copy engine fills with zeros, so that the
      // consumers' MMAs need no branch (a wgmma under a branch the compiler
      // cannot prove uniform is serialized).
      auto boxes = [&](int i) {
        return kWgmma ? kStageBoxes : MinInt(kStageBoxes, nboxes - i * kStageBoxes);
      };
      auto box_k = [&](int i, int b) {
        const int idx = i * kStageBoxes + b;
        return (idx < nboxes ? b0 + idx : total_boxes) * kBoxK;
      };
      auto issue_w = [&](int i) {
        const int s = i % L::kStages;
        BarArriveExpect(full(s), boxes(i) * (kWBoxBytes + L::kXBoxBytes));
        for (int b = 0; b < boxes(i); ++b) {
          TmaLoadW(w_box(s, b), &w_map, box_k(i, b), blockIdx.x, p, full(s));
        }
      };
      auto issue_x = [&](int i) {
        const int s = i % L::kStages;
        for (int b = 0; b < boxes(i); ++b) TmaLoad(x_box(s, b), &x_map, box_k(i, b), 0, full(s));
      };
      // Programmatic dependent launch: W is never written, so its first
      // stages are requested before the preceding kernel has finished; X is
      // that kernel's output.
      const int first = MinInt(L::kStages, nstages);
      for (int i = 0; i < first; ++i) issue_w(i);
      asm volatile("griddepcontrol.wait;\n" ::: "memory");
      for (int i = 0; i < first; ++i) issue_x(i);
      for (int i = first; i < nstages; ++i) {
        BarWait(empty(i % L::kStages), ((i / L::kStages) - 1) & 1);
        issue_w(i);
        issue_x(i);
      }
    }
  } else {
    if (p.sumsq_in != nullptr) {
      // Scale mode: the sums of squares are the preceding kernel's output;
      // nothing to do here before its X arrives anyway.
      asm volatile("griddepcontrol.wait;\n" ::: "memory");
      LoadRowScale(p, ring.scale(), threadIdx.x);
    }
    for (int i = 0; i < nstages; ++i) {
      const int s = i % L::kStages;
      BarWait(full(s), (i / L::kStages) & 1);
      ConsumeStage<NT, kWgmma>(acc, ring.stage(s),
                               MinInt(kStageBoxes, nboxes - i * kStageBoxes), warp, lane);
      __syncwarp();
      if (lane == 0) BarArrive(empty(s));
    }
  }
  // The next kernel may start launching; it waits for this grid to finish
  // before it reads Y.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  __syncthreads();  // every stage consumed: the stages' memory is free

  // Partial tile into this CTA's shared memory.
  float* red = reinterpret_cast<float*>(smem);
  if (warp < kConsumerWarps) {
    const int c4 = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row_in = AccRow<kWgmma>(warp, lane, h);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int tok = t * 8 + 2 * c4;
        red[tok * kRedRowFloats + row_in] = acc[h][t][0];
        red[(tok + 1) * kRedRowFloats + row_in] = acc[h][t][1];
        red[tok * kRedRowFloats + row_in + 8] = acc[h][t][2];
        red[(tok + 1) * kRedRowFloats + row_in + 8] = acc[h][t][3];
      }
    }
  }
  cluster.sync();
  // Y belongs to the preceding kernel until it has finished.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  // CTA `split` sums its share of the tile over the cluster, in rank order.
  const float* const scale = p.sumsq_in != nullptr ? ring.scale() : nullptr;
  if (p.silu_half != 0) {
    // SwiGLU: the tile's 64 gate rows (0 .. 63) and their up rows (64 ..
    // 127) make 64 columns of Y.
    const int units = p.m * 16;  // 4 outputs each
    const int u_end = static_cast<int>(int64_t{split + 1} * units / splits);
    for (int u = static_cast<int>(int64_t{split} * units / splits) + threadIdx.x; u < u_end;
         u += kThreads) {
      const int tok = u / 16;
      const int q = u % 16;
      float* gate = red + tok * kRedRowFloats + q * 4;
      float4 g[kMaxSplits], v[kMaxSplits];
#pragma unroll
      for (int r = 0; r < kMaxSplits; ++r) {  // every round trip at once
        if (r < splits) {
          g[r] = *reinterpret_cast<const float4*>(cluster.map_shared_rank(gate, r));
          v[r] = *reinterpret_cast<const float4*>(cluster.map_shared_rank(gate + 64, r));
        }
      }
      float4 gs = g[0], us = v[0];
#pragma unroll
      for (int r = 1; r < kMaxSplits; ++r) {  // rank order: the same bits every run
        if (r < splits) {
          gs.x += g[r].x, gs.y += g[r].y, gs.z += g[r].z, gs.w += g[r].w;
          us.x += v[r].x, us.y += v[r].y, us.z += v[r].z, us.w += v[r].w;
        }
      }
      if (scale != nullptr) {
        const float sc = scale[tok];
        gs.x *= sc, gs.y *= sc, gs.z *= sc, gs.w *= sc;
        us.x *= sc, us.y *= sc, us.z *= sc, us.w *= sc;
      }
      const int64_t at = tok * p.ldy + blockIdx.x * 64 + q * 4;
      reinterpret_cast<uint2*>(p.y)[at / 4] =
          make_uint2(PackBf16x2(Silu(gs.x) * us.x, Silu(gs.y) * us.y),
                     PackBf16x2(Silu(gs.z) * us.z, Silu(gs.w) * us.w));
    }
    cluster.sync();  // peers read this CTA's tile until here
    return;
  }
  if (p.residual != nullptr) {
    // Residual mode: a warp per token (the tokens split over the cluster),
    // lane l the tile's rows 4l .. 4l + 3; the token's residual rows are
    // loaded for a few tokens at once (one round trip), then each sum is
    // stored and its squares reduced over the warp.
    constexpr int kWarps = kThreads / 32;
    constexpr int kBatch = 4;
    const int tok_end = static_cast<int>(int64_t{split + 1} * p.m / splits);
    const int row = cta_row0 + lane * 4;
    const bool valid = row < p.n;  // n % 8 == 0: rows row .. row + 3 are all valid
    for (int tok0 = static_cast<int>(int64_t{split} * p.m / splits) + warp; tok0 < tok_end;
         tok0 += kBatch * kWarps) {
      uint2 res[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int tok = tok0 + j * kWarps;
        if (valid && tok < tok_end) {
          res[j] = __ldcg(reinterpret_cast<const uint2*>(p.residual + tok * p.ldy + row));
        }
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int tok = tok0 + j * kWarps;
        if (tok >= tok_end) break;  // warp-uniform
        float ss = 0.f;
        if (valid) {
          const float4 sum = ClusterSum(cluster, red + tok * kRedRowFloats + lane * 4, splits);
          const float2 r01 = UnpackBf16x2(res[j].x);
          const float2 r23 = UnpackBf16x2(res[j].y);
          const uint2 out = make_uint2(PackBf16x2(sum.x + r01.x, sum.y + r01.y),
                                       PackBf16x2(sum.z + r23.x, sum.w + r23.y));
          reinterpret_cast<uint2*>(p.y)[(tok * p.ldy + row) / 4] = out;
          const float2 o01 = UnpackBf16x2(out.x);
          const float2 o23 = UnpackBf16x2(out.y);
          ss = o01.x * o01.x + o01.y * o01.y + o23.x * o23.x + o23.y * o23.y;
        }
        ss = device::WarpSum(ss);
        if (lane == 0) p.sumsq_out[blockIdx.x * p.m + tok] = ss;
      }
    }
    cluster.sync();  // peers read this CTA's tile until here
    return;
  }
  if (p.argmax_out != nullptr) {
    // Greedy candidates (fp32 Y): a warp per token as in residual mode, the
    // token's largest value of the tile reduced over the warp.
    const bool store = StoresY(p);
    constexpr int kWarps = kThreads / 32;
    const int tok_end = static_cast<int>(int64_t{split + 1} * p.m / splits);
    const int row = cta_row0 + lane * 4;
    const bool valid = row < p.n;
    for (int tok = static_cast<int>(int64_t{split} * p.m / splits) + warp; tok < tok_end;
         tok += kWarps) {
      uint64_t best = 0;
      if (valid) {
        float4 sum = ClusterSum(cluster, red + tok * kRedRowFloats + lane * 4, splits);
        if (scale != nullptr) {
          const float sc = scale[tok];
          sum.x *= sc, sum.y *= sc, sum.z *= sc, sum.w *= sc;
        }
        if (store) reinterpret_cast<float4*>(p.y)[(tok * p.ldy + row) / 4] = sum;
        best = MaxU64(
            MaxU64(PackGreedyCandidate(sum.x, row), PackGreedyCandidate(sum.y, row + 1)),
            MaxU64(PackGreedyCandidate(sum.z, row + 2), PackGreedyCandidate(sum.w, row + 3)));
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) best = MaxU64(best, __shfl_xor_sync(0xffffffffu, best, o));
      if (lane == 0) p.argmax_out[int64_t{tok} * p.tiles + blockIdx.x] = best;
    }
    cluster.sync();  // peers read this CTA's tile until here
    return;
  }
  const int units = p.m * (kRowsPerCta / 4);  // float4s of the valid tokens
  const int u_end = static_cast<int>(int64_t{split + 1} * units / splits);
  for (int u = static_cast<int>(int64_t{split} * units / splits) + threadIdx.x; u < u_end;
       u += kThreads) {
    const int tok = u / (kRowsPerCta / 4);
    const int q = u % (kRowsPerCta / 4);
    const int row = cta_row0 + q * 4;
    if (row >= p.n) continue;  // n % 8 == 0: rows row .. row + 3 are all valid
    float4 sum = ClusterSum(cluster, red + tok * kRedRowFloats + q * 4, splits);
    if (scale != nullptr) {
      const float sc = scale[tok];
      sum.x *= sc, sum.y *= sc, sum.z *= sc, sum.w *= sc;
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

// Stream-K workspace: the flags (one int per CTA) and, after them, one
// partial tile per CTA in the consumers' fragment order (float4 (h, t) of
// consumer thread c at (h * NT + t) * 128 + c), sized for 64 tokens.
constexpr int kPartialFloat4s = 2 * 8 * kConsumerWarps * 32;  // 32 KB
size_t FlagsBytes(int ctas) { return (size_t(ctas) * 4 + 255) / 256 * 256; }

__device__ __forceinline__ void ConsumerBarrier() {  // the four consumer warps only
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumerWarps * 32) : "memory");
}
__device__ __forceinline__ void StoreRelease(int* p, int v) {
  asm volatile("st.release.gpu.global.b32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ int LoadAcquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Waits for stream-K CTA c's flag (its partial is stored), then clears it
// for the next launch, which waits for this grid. The flag comes because
// every CTA of the grid is resident; the bound (seconds) turns a broken
// promise (fewer multiprocessors for this process than CTAs, e.g. an MPS
// share) into an error, not a hang.
__device__ __forceinline__ void TakeFlag(int* flags, int c) {
  for (uint32_t spins = 0; LoadAcquire(flags + c) == 0; ++spins) {
    if (spins == (1u << 24)) __trap();
  }
  flags[c] = 0;
}

// Adds a stream-K partial tile (consumer thread ct's float4s of it) to the
// accumulators: from global memory (kGlobal, through L2) or shared memory.
template <int NT, bool kGlobal>
__device__ __forceinline__ void AddPartial(float (&acc)[2][NT][4], const float4* theirs, int ct) {
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float4* at = theirs + (h * NT + t) * 128 + ct;
      const float4 v = kGlobal ? __ldcg(at) : *at;
      acc[h][t][0] += v.x, acc[h][t][1] += v.y, acc[h][t][2] += v.z, acc[h][t][3] += v.w;
    }
}

// Y (+ bias) of a finished tile from the consumers' accumulators. Lanes
// 4g + c and 4(g ^ 1) + c swap one value, so that each holds two adjacent
// rows of one token (the even lane token 2c, the odd one 2c + 1) and stores
// them as one 4-byte (bf16) or 8-byte (fp32) word. scale: each token's RMS
// scale (scale mode) or null; smem: Layout::kSsBytes of shared memory for
// residual mode's sums of squares or the greedy candidates.
template <int NT, bool kWgmma>
__device__ __forceinline__ void StoreTile(float (&acc)[2][NT][4], const Params& p, int tile,
                                          int warp, int lane, const float* scale,
                                          unsigned char* smem) {
  const bool odd = (lane >> 2) & 1;
  if (scale != nullptr) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const int tok = t * 8 + 2 * (lane & 3);  // and tok + 1: within the 64 scales
      const float s0 = scale[tok], s1 = scale[tok + 1];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        acc[h][t][0] *= s0, acc[h][t][2] *= s0;
        acc[h][t][1] *= s1, acc[h][t][3] *= s1;
      }
    }
  }
  if (p.residual != nullptr) {
    // Residual mode: every residual pair loaded first (one round trip; the
    // stores may alias them), then the sums stored and their squares summed
    // per token: over the lanes that hold the token, then over the warps.
    const int row0 = tile * kRowsPerCta;
    uint32_t res[2][NT][2];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = row0 + AccRow<kWgmma>(warp, lane, h) + 8 * half - (odd ? 1 : 0);
          const int tok = t * 8 + 2 * (lane & 3) + (odd ? 1 : 0);
          if (tok < p.m && row < p.n) {
            res[h][t][half] =
                __ldcg(reinterpret_cast<const unsigned int*>(p.residual + tok * p.ldy + row));
          }
        }
    float sq[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      sq[t] = 0.f;
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float a0 = acc[h][t][2 * half], a1 = acc[h][t][2 * half + 1];
          const float other = __shfl_xor_sync(0xffffffffu, odd ? a0 : a1, 4);
          const float lo = odd ? other : a0;
          const float hi = odd ? a1 : other;
          const int row = row0 + AccRow<kWgmma>(warp, lane, h) + 8 * half - (odd ? 1 : 0);
          const int tok = t * 8 + 2 * (lane & 3) + (odd ? 1 : 0);
          if (tok >= p.m || row >= p.n) continue;
          const float2 r = UnpackBf16x2(res[h][t][half]);
          const uint32_t out = PackBf16x2(lo + r.x, hi + r.y);
          *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(p.y) + tok * p.ldy + row) = out;
          const float2 o = UnpackBf16x2(out);
          sq[t] += o.x * o.x + o.y * o.y;
        }
      // Lanes with the same bits 0-2 hold the same token.
      sq[t] += __shfl_xor_sync(0xffffffffu, sq[t], 8);
      sq[t] += __shfl_xor_sync(0xffffffffu, sq[t], 16);
    }
    float* ss = reinterpret_cast<float*>(smem);
    ConsumerBarrier();  // the previous tile's sums have been read
    if (lane < 8) {
#pragma unroll
      for (int t = 0; t < NT; ++t) ss[warp * 64 + t * 8 + 2 * (lane & 3) + (odd ? 1 : 0)] = sq[t];
    }
    ConsumerBarrier();
    const int ct = warp * 32 + lane;
    if (ct < p.m) {
      p.sumsq_out[tile * p.m + ct] = ((ss[ct] + ss[64 + ct]) + ss[128 + ct]) + ss[192 + ct];
    }
    return;
  }
  if (p.silu_half != 0) {
    // SwiGLU (wgmma: acc[0] holds gate rows, acc[1] the same rows' up
    // projection): 64 columns of Y from tile * 64, stored as above.
    static_assert(kWgmma, "SwiGLU tiles are stored from wgmma accumulators");
#pragma unroll
    for (int t = 0; t < NT; ++t) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float a0 = Silu(acc[0][t][2 * half]) * acc[1][t][2 * half];
        const float a1 = Silu(acc[0][t][2 * half + 1]) * acc[1][t][2 * half + 1];
        const float other = __shfl_xor_sync(0xffffffffu, odd ? a0 : a1, 4);
        const float lo = odd ? other : a0;
        const float hi = odd ? a1 : other;
        const int col = tile * 64 + AccRow<kWgmma>(warp, lane, 0) + 8 * half - (odd ? 1 : 0);
        const int tok = t * 8 + 2 * (lane & 3) + (odd ? 1 : 0);
        if (tok >= p.m) continue;
        *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(p.y) + tok * p.ldy + col) =
            PackBf16x2(lo, hi);
      }
    }
    return;
  }
  const int row0 = tile * kRowsPerCta;
  const bool store = StoresY(p);
  uint64_t best[NT];  // greedy candidates: this thread's token of tile t
#pragma unroll
  for (int t = 0; t < NT; ++t) best[t] = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // rows g and g + 8
        const float a0 = acc[h][t][2 * half], a1 = acc[h][t][2 * half + 1];
        const float other = __shfl_xor_sync(0xffffffffu, odd ? a0 : a1, 4);
        float lo = odd ? other : a0;  // row (g & ~1)
        float hi = odd ? a1 : other;  // row (g & ~1) + 1
        const int row = row0 + AccRow<kWgmma>(warp, lane, h) + 8 * half - (odd ? 1 : 0);
        const int tok = t * 8 + 2 * (lane & 3) + (odd ? 1 : 0);
        if (tok >= p.m || row >= p.n) continue;  // n % 8 == 0: row + 1 < n too
        const int64_t at = tok * p.ldy + row;
        if (p.fp32_out) {
          if (store)
            *reinterpret_cast<float2*>(static_cast<float*>(p.y) + at) = make_float2(lo, hi);
          if (p.argmax_out != nullptr) {
            best[t] = MaxU64(
                best[t], MaxU64(PackGreedyCandidate(lo, row), PackGreedyCandidate(hi, row + 1)));
          }
        } else {
          if (p.bias != nullptr) {
            const float2 b = UnpackBf16x2(*reinterpret_cast<const uint32_t*>(p.bias + row));
            lo += b.x, hi += b.y;
          }
          *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(p.y) + at) = PackBf16x2(lo, hi);
        }
      }
    }
  }
  if (p.argmax_out != nullptr) {
    // The tile's best of each token: over the lanes that hold the token,
    // then over the warps.
    // kSsBytes hold 32 tokens' (t < 4, then t >= 4).
    uint64_t* bs = reinterpret_cast<uint64_t*>(smem);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      best[t] = MaxU64(best[t], __shfl_xor_sync(0xffffffffu, best[t], 8));
      best[t] = MaxU64(best[t], __shfl_xor_sync(0xffffffffu, best[t], 16));
    }
#pragma unroll
    for (int group = 0; group * 4 < NT; ++group) {
      ConsumerBarrier();  // the previous candidates have been read
      if (lane < 8) {
#pragma unroll
        for (int t = group * 4; t < NT && t < group * 4 + 4; ++t) {
          bs[warp * 32 + (t - group * 4) * 8 + 2 * (lane & 3) + (odd ? 1 : 0)] = best[t];
        }
      }
      ConsumerBarrier();
      const int tok = group * 32 + warp * 32 + lane;  // warp 0's lanes only
      if (warp == 0 && tok < p.m) {
        p.argmax_out[int64_t{tok} * p.tiles + tile] =
            MaxU64(MaxU64(bs[lane], bs[32 + lane]), MaxU64(bs[64 + lane], bs[96 + lane]));
      }
    }
  }
}

// Stream-K: a 1-D grid of `ctas` CTAs, one per multiprocessor, all resident
// at once. The work is the (128-row tile, 64-k box) units in tile-major
// order; CTA c takes units [c U / ctas, (c + 1) U / ctas), which it runs as
// segments, one per tile it touches, through one ring of stages (the
// producer streams the next segment while the consumers finish one). A tile
// whole in one CTA is stored at once. A tile cut between CTAs belongs to the
// CTA holding its first box, for which it is the last segment; each other
// CTA holds a later run of its boxes as its first segment, stores that
// partial in its workspace slot and raises its flag. The owner, at the end
// of its run, waits for those flags in CTA order, adds the partials in that
// order (the same bits every run), clears the flags and stores the tile.
// The first of them (the only one where a run is longer than a tile) is
// waited for by the owner's producer once it has issued the run's last
// stage, and copied into the next stage while the consumers finish the
// run. No CTA waits before it has raised its own flag or issued every load
// of its run, so there is no cycle.
// wgmma consumers only (mma.sync measured the same on the shapes where
// stream-K wins, and would double the kernels compiled).
//
// Where it stands (H100, bench/NOTES-cuda-backend.md, sessions 5 and 9):
// it wins where the tiles do not divide the multiprocessors (the gate/up
// projection at M = 1: 90.8 us, 2.99 TB/s, against 95.2 with the cluster
// split and 95.4 for cuBLASLt; at 64 tokens with SwiGLU 100.0 us against
// cuBLASLt's 98.5-102.2 without it), and where a tile is cut into many runs
// (down, QKV, O) the owner's round trips for the partials lose to the
// cluster's distributed shared memory.
template <int NT>
__global__ void __launch_bounds__(kThreads, 1)
    SkinnyGemmStreamKKernel(const __grid_constant__ CUtensorMap w_map,
                            const __grid_constant__ CUtensorMap x_map, const Params p,
                            int* flags, float4* partials) {
  using L = Layout<NT>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Ring<NT> ring(smem_raw);
  auto full = [&](int s) { return ring.full(s); };
  auto empty = [&](int s) { return ring.empty(s); };
  auto stage = [&](int s) { return ring.stage(s); };

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int total_boxes = (p.k + kBoxK - 1) / kBoxK;
  const int64_t units = int64_t{(p.n + kRowsPerCta - 1) / kRowsPerCta} * total_boxes;
  auto run_start = [&](int c) { return int64_t{c} * units / gridDim.x; };
  const int64_t u0 = run_start(blockIdx.x);
  const int64_t u1 = run_start(blockIdx.x + 1);
  // Whether the run ends inside a tile it owns (its last segment starts at
  // the tile's first box): the next CTA holds a partial of that tile.
  const bool owns_cut_tail =
      u1 > u0 && u1 % total_boxes != 0 && (u1 - 1) / total_boxes * total_boxes >= u0;
  // The partial tile of NT token tiles (fragment order, below).
  constexpr uint32_t kPartialBytes = 2 * NT * 128 * sizeof(float4);
  static_assert(kPartialBytes <= L::kStageBytes, "a partial tile fits in a stage");
  // Calls fn(tile, first box, end box) for each segment of the run, in order.
  auto for_each_segment = [&](auto&& fn) {
    for (int64_t u = u0; u < u1;) {
      const int tile = static_cast<int>(u / total_boxes);
      const int bb = static_cast<int>(u % total_boxes);
      const int be = static_cast<int>(std::min<int64_t>(total_boxes, bb + (u1 - u)));
      u += be - bb;
      fn(tile, bb, be, u >= u1);
    }
  };

  if (threadIdx.x == 0) ring.Init();
  __syncthreads();
  if (p.dependents_at_start) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

  if (warp == kConsumerWarps) {
    if (lane == 0) {
      // Producer. Stage i holds two boxes of one segment; a box past the
      // segment is read at k past the matrix (zeros), so every stage is full.
      auto w_k = [&](int b, int be) { return (b < be ? b : total_boxes) * kBoxK; };
      constexpr uint32_t kBytes = kStageBoxes * (kWBoxBytes + L::kXBoxBytes);
      // W is never written: the first stages' W is requested before the
      // preceding kernel has finished (programmatic dependent launch); X is
      // that kernel's output.
      int i = 0;
      for_each_segment([&](int tile, int bb, int be, bool) {
        for (int b = bb; b < be && i < L::kStages; b += kStageBoxes, ++i) {
          BarArriveExpect(full(i), kBytes);
          for (int j = 0; j < kStageBoxes; ++j) {
            TmaLoadW(stage(i) + j * kWBoxBytes, &w_map, w_k(b + j, be), tile, p, full(i));
          }
        }
      });
      const int first = i;
      asm volatile("griddepcontrol.wait;\n" ::: "memory");
      i = 0;
      for_each_segment([&](int tile, int bb, int be, bool) {
        for (int b = bb; b < be; b += kStageBoxes, ++i) {
          const int s = i % L::kStages;
          if (i >= first) {
            BarWait(empty(s), ((i / L::kStages) - 1) & 1);
            BarArriveExpect(full(s), kBytes);
            for (int j = 0; j < kStageBoxes; ++j) {
              TmaLoadW(stage(s) + j * kWBoxBytes, &w_map, w_k(b + j, be), tile, p, full(s));
            }
          }
          for (int j = 0; j < kStageBoxes; ++j) {
            TmaLoad(stage(s) + kStageBoxes * kWBoxBytes + j * L::kXBoxBytes, &x_map,
                    w_k(b + j, be), 0, full(s));
          }
        }
      });
      if (owns_cut_tail) {
        // The next CTA's partial of the tile this run ends in, into the
        // stage after the last one: waited for and copied here, while the
        // consumers finish the run, so that their last epilogue finds it
        // in shared memory.
        const int s = i % L::kStages;
        if (i >= L::kStages) BarWait(empty(s), ((i / L::kStages) - 1) & 1);
        const int c = blockIdx.x + 1;
        TakeFlag(flags, c);
        BarArriveExpect(full(s), kPartialBytes);
        BulkLoad(stage(s), partials + static_cast<size_t>(c) * kPartialFloat4s, kPartialBytes,
                 full(s));
      }
    }
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    return;
  }

  // Consumers.
  const int ct = threadIdx.x;  // 0 .. 127
  float4* const mine = partials + size_t{blockIdx.x} * kPartialFloat4s;
  if (p.sumsq_in != nullptr) {
    // Scale mode: the sums of squares are the preceding kernel's output;
    // nothing to do here before its X arrives anyway.
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    LoadRowScale(p, ring.scale(), ct);
    ConsumerBarrier();
  }
  int i = 0;
  for_each_segment([&](int tile, int bb, int be, bool last) {
    float acc[2][NT][4];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int t = 0; t < NT; ++t) acc[h][t][0] = acc[h][t][1] = acc[h][t][2] = acc[h][t][3] = 0.f;
    for (int b = bb; b < be; b += kStageBoxes, ++i) {
      const int s = i % L::kStages;
      BarWait(full(s), (i / L::kStages) & 1);
      ConsumeStage<NT, true>(acc, stage(s), kStageBoxes, warp, lane);
      __syncwarp();
      if (lane == 0) BarArrive(empty(s));
    }
    if (last) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    // Y, the flags and the partials belong to the preceding kernel until it
    // has finished.
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (bb != 0) {  // a later part of a tile another CTA owns
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          __stcg(mine + (h * NT + t) * 128 + ct,
                 make_float4(acc[h][t][0], acc[h][t][1], acc[h][t][2], acc[h][t][3]));
        }
      __threadfence();
      ConsumerBarrier();
      if (ct == 0) StoreRelease(flags + blockIdx.x, 1);
      return;
    }
    // The CTAs after this one whose runs start inside the tile hold the
    // rest of it (none when this run reaches the tile's last box); their
    // partials are added in CTA order. One flag and one partial at a time:
    // a round trip each, which costs where a tile is cut many times (the
    // down projection at 64 tokens, kernels_bench); reading them all at
    // once measured slower still (bench/NOTES-cuda-backend.md, session 5).
    const int64_t tile_end = int64_t{tile + 1} * total_boxes;
    int c = blockIdx.x + 1;
    if (last && owns_cut_tail) {  // the producer copied the first partial
      const int s = i % L::kStages;
      BarWait(full(s), (i / L::kStages) & 1);
      AddPartial<NT, false>(acc, reinterpret_cast<const float4*>(ring.smem + s * L::kStageBytes),
                            ct);
      ++c;
    }
    for (; be < total_boxes && c < static_cast<int>(gridDim.x) && run_start(c) < tile_end; ++c) {
      if (ct == 0) TakeFlag(flags, c);
      ConsumerBarrier();
      AddPartial<NT, true>(acc, partials + static_cast<size_t>(c) * kPartialFloat4s, ct);
    }
    StoreTile<NT, true>(acc, p, tile, warp, lane, p.sumsq_in != nullptr ? ring.scale() : nullptr,
                        ring.ss());
  });
}

// The column split (SkinnyGemmArgs::wide_ctas): a 1-D grid in which CTA c
// computes every k of a window of output features and stores the run of
// them it owns, [Own(c), Own(c + 1)), Own(c) = 8 floor(c U / ctas), U the
// features / 8 (with SwiGLU the n / 2 columns of Y, else the n rows of W).
// The window is two boxes of kBoxRows = 72 kChunks W rows: with SwiGLU the
// gate rows [r0, r0 + kBoxRows) and their up rows n / 2 later, else rows
// [r0, r0 + 2 kBoxRows); r0 = min(Own(c), 8 U - window), so that the window
// stays inside the gate half (or W) and holds the owned run (the launcher
// checks that the longest run fits). Where windows overlap, the overlap is
// computed twice and stored once.
//
// Here the tokens are wgmma's A operand (64 rows, zeros past m) and W its B
// operand (N = 72 an instruction), so a CTA's width is free in steps of 8
// and no CTA needs another's partial sums: no workspace, no flags, no
// fences, one epilogue a CTA. That is what the other schedules pay for at
// 64 tokens (session 8: the four products without their epilogues stream
// at the one-token rate). Bytes, R1-Distill-Qwen-7B's gate/up at 64 tokens:
// 132 CTAs each stream 2 x 144 rows x 3,584 k of W (2.06 MB; 0.34 % of W is
// read twice) and 0.46 MB of X from L2 (stream-K: 1.03 MB of X a CTA).
constexpr int kWideChunk = 72;  // W rows an instruction
constexpr int kWideMaxChunks = 2;

template <int kChunks>
struct WideLayout {
  static constexpr int kBoxRows = kWideChunk * kChunks;
  static constexpr int kWBoxBytes = kBoxRows * kBoxK * 2;
  static constexpr int kXBoxBytes = 64 * kBoxK * 2;  // 64 token rows
  // A stage: the X box, then the two W boxes (1,024-byte swizzle atoms).
  static constexpr int kStageBytes = kXBoxBytes + 2 * kWBoxBytes;
  static constexpr int kStages = std::min(8, (192 * 1024) / kStageBytes);
  static constexpr int kBarOffset = kStages * kStageBytes;
  static constexpr int kScaleOffset = kBarOffset + 2 * kStages * 8;
  static constexpr int kSmem = 1024 + kScaleOffset + 64 * 4;
  static_assert(kWBoxBytes % 1024 == 0 && kXBoxBytes % 1024 == 0, "swizzle atoms");
  static_assert(kSmem + 1024 <= 196 * 1024, "one CTA a multiprocessor in the 196 KB carve-out");
};

template <int kChunks>
__global__ void __launch_bounds__(kThreads, 1)
    SkinnyGemmWideKernel(const __grid_constant__ CUtensorMap w_map,
                         const __grid_constant__ CUtensorMap x_map, const Params p) {
  using L = WideLayout<kChunks>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* const smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t base = SmemAddr(smem);
  auto stage = [&](int s) { return base + s * L::kStageBytes; };
  auto full = [&](int s) { return base + L::kBarOffset + 8 * s; };
  auto empty = [&](int s) { return base + L::kBarOffset + 8 * (L::kStages + s); };
  float* const scale = reinterpret_cast<float*>(smem + L::kScaleOffset);

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int boxes = (p.k + kBoxK - 1) / kBoxK;
  const int units = (p.silu_half != 0 ? p.silu_half : p.n) / 8;
  const int own_lo = 8 * static_cast<int>(int64_t{blockIdx.x} * units / gridDim.x);
  const int own_hi = 8 * static_cast<int>(int64_t{blockIdx.x + 1} * units / gridDim.x);
  const int window = p.silu_half != 0 ? L::kBoxRows : 2 * L::kBoxRows;
  const int r0 = MinInt(own_lo, 8 * units - window);
  const int r1 = p.silu_half != 0 ? p.silu_half + r0 : r0 + L::kBoxRows;

  if (threadIdx.x == 0) {
    for (int s = 0; s < L::kStages; ++s) {
      BarInit(full(s), 1);
      BarInit(empty(s), kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (p.dependents_at_start) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

  if (warp == kConsumerWarps) {
    if (lane == 0) {
      // Producer: stage b % kStages holds box b's X and W. W is never
      // written, so the first stages' W is requested before the preceding
      // kernel has finished; X is that kernel's output.
      auto issue_w = [&](int b) {
        const int s = b % L::kStages;
        BarArriveExpect(full(s), L::kStageBytes);
        TmaLoad(stage(s) + L::kXBoxBytes, &w_map, b * kBoxK, r0, full(s));
        TmaLoad(stage(s) + L::kXBoxBytes + L::kWBoxBytes, &w_map, b * kBoxK, r1, full(s));
      };
      const int first = MinInt(L::kStages, boxes);
      for (int b = 0; b < first; ++b) issue_w(b);
      asm volatile("griddepcontrol.wait;\n" ::: "memory");
      for (int b = 0; b < boxes; ++b) {
        const int s = b % L::kStages;
        if (b >= first) {
          BarWait(empty(s), ((b / L::kStages) - 1) & 1);
          issue_w(b);
        }
        TmaLoad(stage(s), &x_map, b * kBoxK, 0, full(s));
      }
    }
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    return;
  }

  // Consumers: one warpgroup; acc[box][chunk] is wgmma's m64n72 fragment
  // (warp w: tokens 16w + lane / 4 and 8 later; registers 4j .. 4j + 3: the
  // chunk's W rows 8j + 2 (lane % 4) and the next, for each token).
  float acc[2][kChunks][kWideChunk / 2];
#pragma unroll
  for (int b = 0; b < 2; ++b)
#pragma unroll
    for (int h = 0; h < kChunks; ++h)
#pragma unroll
      for (int i = 0; i < kWideChunk / 2; ++i) acc[b][h][i] = 0.f;
  if (p.sumsq_in != nullptr) {
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    LoadRowScale(p, scale, threadIdx.x);
    ConsumerBarrier();
  }
  for (int b = 0; b < boxes; ++b) {
    const int s = b % L::kStages;
    BarWait(full(s), (b / L::kStages) & 1);
    WgmmaFence();
#pragma unroll
    for (int j = 0; j < kBoxK / 16; ++j) {
      const uint64_t xd = SmemDesc(stage(s) + 32 * j);
#pragma unroll
      for (int box = 0; box < 2; ++box)
#pragma unroll
        for (int h = 0; h < kChunks; ++h) {
          Wgmma<kWideChunk>::Run(acc[box][h], xd,
                                 SmemDesc(stage(s) + L::kXBoxBytes + box * L::kWBoxBytes +
                                          h * kWideChunk * 128 + 32 * j));
        }
    }
    WgmmaCommit();
    WgmmaWaitAll();
#pragma unroll
    for (int box = 0; box < 2; ++box)
#pragma unroll
      for (int h = 0; h < kChunks; ++h) FenceAccumulators(acc[box][h]);
    __syncwarp();
    if (lane == 0) BarArrive(empty(s));
  }
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  // Y belongs to the preceding kernel until it has finished.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  const int c2 = 2 * (lane & 3);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int tok = warp * 16 + (lane >> 2) + 8 * half;
    if (tok >= p.m) continue;
    const float s = p.sumsq_in != nullptr ? scale[tok] : 1.f;
    uint16_t* const y = static_cast<uint16_t*>(p.y) + int64_t{tok} * p.ldy;
#pragma unroll
    for (int h = 0; h < kChunks; ++h)
#pragma unroll
      for (int j = 0; j < kWideChunk / 8; ++j) {
        const int i = 4 * j + 2 * half;
        const int col = h * kWideChunk + 8 * j + c2;  // in the box; even, as the runs' ends
        if (p.silu_half != 0) {
          const int out = r0 + col;
          if (out >= own_lo && out < own_hi) {
            const float lo = Silu(s * acc[0][h][i]) * (s * acc[1][h][i]);
            const float hi = Silu(s * acc[0][h][i + 1]) * (s * acc[1][h][i + 1]);
            *reinterpret_cast<uint32_t*>(y + out) = PackBf16x2(lo, hi);
          }
        } else {
#pragma unroll
          for (int box = 0; box < 2; ++box) {
            const int out = r0 + box * L::kBoxRows + col;
            if (out >= own_lo && out < own_hi) {
              *reinterpret_cast<uint32_t*>(y + out) =
                  PackBf16x2(s * acc[box][h][i], s * acc[box][h][i + 1]);
            }
          }
        }
      }
  }
}

int TokenTiles(int m) {
  const int t = (m + 7) / 8;
  if (t <= 2) return t;
  if (t <= 4) return 4;
  if (t <= 6) return 6;
  return 8;
}

// cuTensorMapEncodeTiled from the driver, found through the runtime (no
// link against libcuda).
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
EncodeTiled GetEncodeTiled() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<EncodeTiled>(nullptr);
    }
    return reinterpret_cast<EncodeTiled>(f);
  }();
  return fn;
}

// A bf16 [rows][ld] matrix of which the first `cols` columns are used, read
// in boxes of 64 columns x box_rows rows, 128-byte swizzle, zeros past the
// edges.
bool EncodeMap(CUtensorMap* map, const void* ptr, int rows, int cols, int64_t ld,
               int box_rows) {
  const EncodeTiled encode = GetEncodeTiled();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld) * 2};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBoxK), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(ptr), dims, strides,
                box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

Params MakeParams(const SkinnyGemmArgs& a) {
  Params p;
  p.y = a.y;
  p.ldy = a.ldy;
  p.bias = static_cast<const uint16_t*>(a.bias);
  p.m = a.m, p.n = a.n, p.k = a.k;
  p.fp32_out = a.fp32_out;
  p.silu_half = a.silu_mul ? a.n / 2 : 0;
  p.residual = static_cast<const uint16_t*>(a.residual);
  p.sumsq_out = a.sumsq_out;
  p.sumsq_in = a.sumsq_in;
  p.sumsq_parts = a.sumsq_parts;
  p.inv_k = 1.f / static_cast<float>(a.k);
  p.rms_eps = a.rms_eps;
  p.argmax_out = a.argmax_out;
  p.store_y = a.store_y;
  p.tiles = SkinnyGemmTiles(a.n);
  p.dependents_at_start = a.dependents_at_start;
  return p;
}

template <int NT, bool kWgmma>
cudaError_t Launch(const SkinnyGemmArgs& a, int splits, bool pdl, cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(
      SkinnyGemmKernel<NT, kWgmma>, cudaFuncAttributeMaxDynamicSharedMemorySize, Layout<NT>::kSmem);
  if (attr != cudaSuccess) return attr;
  CUtensorMap w_map, x_map;
  if (!EncodeMap(&w_map, a.w, a.n, a.k, a.ldw, a.silu_mul ? kRowsPerCta / 2 : kRowsPerCta) ||
      !EncodeMap(&x_map, a.x, a.m, a.k, a.ldx, 8 * NT)) {
    return cudaErrorInvalidValue;
  }
  const Params p = MakeParams(a);
  const int tiles = (a.n + kRowsPerCta - 1) / kRowsPerCta;
  cudaLaunchConfig_t cfg = {};
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = Layout<NT>::kSmem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  int num_attrs = 0;
  if (pdl) {
    attrs[num_attrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[num_attrs++].val.programmaticStreamSerializationAllowed = 1;
  }
  cfg.attrs = attrs;
  if (a.stream_k_ctas > 0) {  // wgmma consumers only (LaunchSkinnyGemm checks)
    if constexpr (kWgmma) {
      static const cudaError_t sk_attr =
          cudaFuncSetAttribute(SkinnyGemmStreamKKernel<NT>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, Layout<NT>::kSmem);
      if (sk_attr != cudaSuccess) return sk_attr;
      const int64_t units = int64_t{tiles} * ((a.k + kBoxK - 1) / kBoxK);
      cfg.gridDim = dim3(static_cast<unsigned>(std::min<int64_t>(a.stream_k_ctas, units)));
      cfg.numAttrs = num_attrs;
      int* flags = static_cast<int*>(a.workspace);
      float4* partials = reinterpret_cast<float4*>(static_cast<unsigned char*>(a.workspace) +
                                                   FlagsBytes(a.stream_k_ctas));
      return cudaLaunchKernelEx(&cfg, SkinnyGemmStreamKKernel<NT>, w_map, x_map, p, flags,
                                partials);
    }
    return cudaErrorInvalidValue;
  }
  cfg.gridDim = dim3(tiles, splits);
  attrs[num_attrs].id = cudaLaunchAttributeClusterDimension;
  attrs[num_attrs].val.clusterDim.x = 1;
  attrs[num_attrs].val.clusterDim.y = splits;
  attrs[num_attrs++].val.clusterDim.z = 1;
  cfg.numAttrs = num_attrs;
  return cudaLaunchKernelEx(&cfg, SkinnyGemmKernel<NT, kWgmma>, w_map, x_map, p);
}

// The column split's W rows a box (72 or 144) for `ctas` CTAs, or 0 where
// it does not take the arguments: the box must hold the longest owned run
// (with SwiGLU; else half of it) and the window must fit in the features.
int WideBoxRows(const SkinnyGemmArgs& a, int ctas) {
  if (ctas < 1 || a.fp32_out || a.bias != nullptr || a.residual != nullptr ||
      a.argmax_out != nullptr || a.store_y != nullptr) {
    return 0;
  }
  const int total = a.silu_mul ? a.n / 2 : a.n;
  const int run = 8 * ((total / 8 + ctas - 1) / ctas);
  const int need = a.silu_mul ? run : 8 * ((run / 8 + 1) / 2);
  const int chunks = (need + kWideChunk - 1) / kWideChunk;
  if (chunks > kWideMaxChunks) return 0;
  const int rows = chunks * kWideChunk;
  return total >= (a.silu_mul ? rows : 2 * rows) ? rows : 0;
}

template <int kChunks>
cudaError_t LaunchWide(const SkinnyGemmArgs& a, const Params& p, bool pdl, cudaStream_t stream) {
  static const cudaError_t attr =
      cudaFuncSetAttribute(SkinnyGemmWideKernel<kChunks>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, WideLayout<kChunks>::kSmem);
  if (attr != cudaSuccess) return attr;
  CUtensorMap w_map, x_map;
  if (!EncodeMap(&w_map, a.w, a.n, a.k, a.ldw, WideLayout<kChunks>::kBoxRows) ||
      !EncodeMap(&x_map, a.x, a.m, a.k, a.ldx, 64)) {
    return cudaErrorInvalidValue;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(a.wide_ctas));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = WideLayout<kChunks>::kSmem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[1];
  if (pdl) {
    attrs[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attrs;
    cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, SkinnyGemmWideKernel<kChunks>, w_map, x_map, p);
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int NumSms() {
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  return sms;
}

}  // namespace

bool SkinnyGemmSupports(const SkinnyGemmArgs& a) {
  const bool argmax_ok =
      a.argmax_out == nullptr || (a.fp32_out && !a.silu_mul && a.residual == nullptr &&
                                  reinterpret_cast<uintptr_t>(a.argmax_out) % 8 == 0);
  const bool residual_ok =
      a.residual == nullptr || (a.sumsq_out != nullptr && !a.fp32_out && a.bias == nullptr &&
                                !a.silu_mul && a.sumsq_in == nullptr && Aligned16(a.residual) &&
                                reinterpret_cast<uintptr_t>(a.sumsq_out) % 4 == 0);
  const bool scale_ok =
      a.sumsq_in == nullptr || (a.sumsq_parts >= 1 && a.rms_eps > 0.f && std::isfinite(a.rms_eps) &&
                                reinterpret_cast<uintptr_t>(a.sumsq_in) % 4 == 0);
  return residual_ok && scale_ok && argmax_ok && a.m >= 1 && a.m <= kSkinnyGemmMaxM && a.n >= 8 &&
         a.n % 8 == 0 && a.k >= 8 && a.k % 8 == 0 && a.ldx >= a.k && a.ldx % 8 == 0 &&
         a.ldw >= a.k && a.ldw % 8 == 0 && a.ldy >= (a.silu_mul ? a.n / 2 : a.n) &&
         a.ldy % 8 == 0 && (!a.silu_mul || (a.n % 128 == 0 && !a.fp32_out && a.bias == nullptr)) &&
         Aligned16(a.x) && Aligned16(a.w) && Aligned16(a.y) && a.x != nullptr && a.w != nullptr &&
         a.y != nullptr &&
         (a.bias == nullptr || (!a.fp32_out && reinterpret_cast<uintptr_t>(a.bias) % 8 == 0));
}

int SkinnyGemmSplits(const SkinnyGemmArgs& a, int num_sms) {
  // One CTA per multiprocessor (its stages take most of shared memory).
  const int row_tiles = (a.n + kRowsPerCta - 1) / kRowsPerCta;
  const int s = std::max(1, num_sms) / std::max(1, row_tiles);
  return std::clamp(s, 1, std::min(kMaxSplits, (a.k + kBoxK - 1) / kBoxK));
}

int SkinnyGemmWideCtas(const SkinnyGemmArgs& a, int num_sms) {
  if (!SkinnyGemmSupports(a)) return 0;
  const int rows = WideBoxRows(a, num_sms);
  if (rows == 0) return 0;
  const int total = a.silu_mul ? a.n / 2 : a.n;
  const int window = a.silu_mul ? rows : 2 * rows;
  return std::min(num_sms, (total + window - 1) / window);
}

size_t SkinnyGemmWorkspaceBytes(int stream_k_ctas) {
  const int ctas = std::max(0, stream_k_ctas);
  return FlagsBytes(ctas) + size_t(ctas) * kPartialFloat4s * sizeof(float4);
}

absl::Status LaunchSkinnyGemm(const SkinnyGemmArgs& a, int splits, bool pdl,
                              cudaStream_t stream) {
  if (!SkinnyGemmSupports(a)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "skinny gemm: m ", a.m, " (1..", kSkinnyGemmMaxM, "), n ", a.n, " (multiple of 8), k ", a.k,
        " (multiple of 8), ld ", a.ldx, "/", a.ldw, "/", a.ldy,
        " (multiples of 8), 16-byte aligned buffers, bias only with bf16 output",
        a.silu_mul ? "; SwiGLU: n a multiple of 128, bf16 output, no bias" : "",
        a.residual != nullptr
            ? "; residual: sums of squares out, bf16 output, no bias or SwiGLU or scale"
            : "",
        a.sumsq_in != nullptr ? "; RMS scale: sumsq_parts >= 1, rms_eps > 0" : "",
        a.argmax_out != nullptr ? "; greedy candidates: fp32 output, no SwiGLU or residual" : ""));
  }
  if (a.stream_k_ctas != 0) {
    const int sms = NumSms();
    if (a.stream_k_ctas < 0 || a.stream_k_ctas > sms || splits != 0 || !a.wgmma ||
        a.workspace == nullptr || !Aligned16(a.workspace)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "skinny gemm: stream-K needs 1..", sms, " CTAs (got ", a.stream_k_ctas,
          "), splits 0 (got ", splits, "), wgmma consumers and a 16-byte aligned workspace"));
    }
  }
  if (a.wide_ctas != 0) {
    const int rows = WideBoxRows(a, a.wide_ctas);
    if (a.wide_ctas < 0 || rows == 0 || splits != 0 || a.stream_k_ctas != 0 || !a.wgmma) {
      return absl::InvalidArgumentError(absl::StrCat(
          "skinny gemm: the column split needs wgmma consumers, splits 0 (got ", splits,
          "), no stream-K, bf16 output without bias, residual or greedy candidates, and ",
          a.wide_ctas, " CTAs whose windows (72 or 144 W rows a box) hold ",
          a.silu_mul ? a.n / 2 : a.n, " output features"));
    }
    const Params p = MakeParams(a);
    const cudaError_t err =
        rows == kWideChunk ? LaunchWide<1>(a, p, pdl, stream) : LaunchWide<2>(a, p, pdl, stream);
    if (err != cudaSuccess) {
      return absl::InternalError(absl::StrCat("skinny gemm launch: ", cudaGetErrorString(err)));
    }
    return absl::OkStatus();
  }
  const int boxes = (a.k + kBoxK - 1) / kBoxK;
  if (splits < 0 || splits > kMaxSplits || splits > boxes) {
    return absl::InvalidArgumentError(
        absl::StrCat("skinny gemm: splits ", splits, " must be 0..", kMaxSplits,
                     " and at most ceil(k / 64) = ", boxes));
  }
  if (splits == 0 && a.stream_k_ctas == 0) splits = SkinnyGemmSplits(a, NumSms());
  cudaError_t err;
  const int tiles = TokenTiles(a.m);
  if (a.wgmma) {
    switch (tiles) {
      case 1: err = Launch<1, true>(a, splits, pdl, stream); break;
      case 2: err = Launch<2, true>(a, splits, pdl, stream); break;
      case 4: err = Launch<4, true>(a, splits, pdl, stream); break;
      case 6: err = Launch<6, true>(a, splits, pdl, stream); break;
      default: err = Launch<8, true>(a, splits, pdl, stream); break;
    }
  } else {
    switch (tiles) {
      case 1: err = Launch<1, false>(a, splits, pdl, stream); break;
      case 2: err = Launch<2, false>(a, splits, pdl, stream); break;
      case 4: err = Launch<4, false>(a, splits, pdl, stream); break;
      case 6: err = Launch<6, false>(a, splits, pdl, stream); break;
      default: err = Launch<8, false>(a, splits, pdl, stream); break;
    }
  }
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("skinny gemm launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
