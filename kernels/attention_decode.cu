// Paged decode attention (see attention.h): flash-decoding over the KV
// blocks of each sequence with bf16 tensor-core MMAs, GQA heads as the MMA
// rows, RoPE applied to K between shared memory and the MMA.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention.h"
#include "kernels/attention_internal.cuh"
#include "kernels/device_util.cuh"

namespace memshare::kernels {
namespace {

using device::CpAsync16;
using device::CpAsyncCommit;
using device::CpAsyncWait;
using device::FastExp2;
using device::Ldmatrix4;
using device::Ldmatrix4Trans;
using device::MmaBf16;
using device::PackBf16x2;
using device::RopeSinCos;
using device::RotatePairs;
using internal::kAttnTile;

constexpr int kWarps = 4;
constexpr float kLog2e = 1.4426950408889634f;

struct DecodeParams {
  const __nv_bfloat16* q;  // [num_seqs][q_row_stride]
  int64_t q_row_stride;
  const __nv_bfloat16* layer_base;  // pool + layer * 2 * slab
  int64_t block_elems;
  int64_t slab;
  const int32_t* block_tables;  // [num_seqs][bt_stride]
  int64_t bt_stride;
  const int32_t* context_lens;  // [num_seqs]
  const float* inv_freq;        // [D / 2]
  float scale_log2;             // softmax_scale * log2(e)
  int num_q_heads;
  int group;  // query heads per KV head
  int blocks_per_split;
  int num_splits;
  __nv_bfloat16* out;  // [num_seqs][num_q_heads][D]
  float* part_o;       // [num_seqs][num_q_heads][num_splits][D]
  float* part_lse;     // [num_seqs][num_q_heads][num_splits], log2 units
  // The fused K/V write (PagedAttentionArgs::new_slots), or all null.
  const int32_t* new_slots;   // [num_seqs]
  const __nv_bfloat16* new_k;  // row s at s * q_row_stride
  const __nv_bfloat16* new_v;
  __nv_bfloat16* write_base;  // layer_base, writable
};

// With shifted views. A separate type, so that the kernels without views
// take exactly the parameters (and compile to exactly the code) they did
// before views existed.
struct DecodeViewParams : DecodeParams {
  const int32_t* block_tables_hi;  // [num_seqs][bt_stride]
  const int32_t* block_shifts;     // [num_seqs][bt_stride]
};

template <bool kViews>
using DecodeParamsFor = std::conditional_t<kViews, DecodeViewParams, DecodeParams>;

// Chunk i of a lane in a stage's K or V tile: its index in the tile, its
// row and 16-byte column, and its byte offset with the row's XOR swizzle
// (ldmatrix then reads without bank conflicts).
struct StageChunkAt {
  int idx;
  int r;
  int q;
  uint32_t off;
};
template <int kChunksPerRow, int kRowBytes>
__device__ __forceinline__ StageChunkAt StageChunk(int lane, int i) {
  const int idx = lane + 32 * i;
  const int r = idx / kChunksPerRow;
  const int q = idx % kChunksPerRow;
  return {idx, r, q, static_cast<uint32_t>(r * kRowBytes + ((q ^ (r & 7)) << 4))};
}

template <int D, int kStages>
constexpr int DecodeSmemBytes() {
  return kWarps * kStages * 2 * kAttnTile * D * 2;
}

// Grid: (kv_heads, num_seqs, num_splits). Block: kWarps warps.
// CTA (kvh, seq, split) owns KV blocks [split * bps, (split + 1) * bps) of
// the sequence; warp w takes every kWarps-th of them, starting at w, each
// through its own kStages-deep cp.async pipeline in shared memory (one stage
// = the K and V tiles of one block, 16 x D each, 16-byte chunks XOR-swizzled
// by row so ldmatrix is conflict-free). Per block and warp:
//   S[16 heads x 16 tokens] = Q K^T    (2 n-tiles of 8 tokens, D/16 k-steps;
//                                       K rotated in registers after ldmatrix)
//   online softmax over the tokens, per head row
//   O[16 heads x D] += P V              (D/8 n-tiles, one k-step of 16 tokens)
// Rows are the query heads of the KV head (rows >= group are zero and never
// written). The warps' states merge in shared memory at the end; with
// num_splits > 1 the CTA writes its normalized O and log-sum-exp instead of
// the output, for MergeSplitsKernel.
// kViews: the launch has shifted views; each 16-byte chunk of a stage then
// comes from the row (slot + shift) of the lo block or, past its end, of
// the hi block. Rows stay in logical order in shared memory, so everything
// after the load is the same code.
// kBlock: the pool's block size. At 16 a tile of 16 tokens is one block, its
// table entry shuffled from a window the warp's lanes load together; at 8 a
// tile is two blocks, whose two entries come the same way, and each row
// reads the one of its half. "Blocks" below are these tiles of 16 tokens.
template <int D, int kStages, bool kWide, bool kViews, int kBlock>
__global__ void __launch_bounds__(kWarps * 32, 2)
    PagedDecodeKernel(const DecodeParamsFor<kViews> p) {
  static_assert(kBlock == kAttnTile || kBlock == 8, "block sizes of the fast kernels");
  device::AllowDependentLaunch();
  // Without the fused write nothing is read before the kernel before has
  // finished; with it, the metadata and every block but the last are (see
  // the prologue).
  const bool fused = p.new_slots != nullptr;
  if (!fused) device::WaitForPrerequisites();
  constexpr int kSteps = D / 16;  // MMA k-steps over the head dimension
  constexpr int kHalf = kSteps / 2;  // k-step s holds the RoPE partners of s + kHalf
  constexpr int kRowBytes = D * 2;
  constexpr int kTileBytes = kAttnTile * kRowBytes;
  constexpr int kStageBytes = 2 * kTileBytes;
  constexpr int kChunksPerRow = D / 8;
  constexpr int kChunksPerLane = kAttnTile * kChunksPerRow / 32;
  extern __shared__ __align__(128) uint8_t smem[];

  const int kvh = blockIdx.x;
  const int seq = blockIdx.y;
  const int split = blockIdx.z;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;
  const int c = lane & 3;
  const int ctx = p.context_lens[seq];
  const int group = p.group;

  if (ctx <= 0) {  // padding sequence
    device::WaitForPrerequisites();
    if (split == 0 && p.num_splits == 1) {
      __nv_bfloat16* o = p.out + (int64_t{seq} * p.num_q_heads + kvh * group) * D;
      for (int i = threadIdx.x; i < group * D; i += kWarps * 32) o[i] = __float2bfloat16(0.f);
    }
    return;
  }
  const int num_blocks = (ctx + kAttnTile - 1) / kAttnTile;
  const int blk_begin = split * p.blocks_per_split;
  if (blk_begin >= num_blocks) return;  // nothing of this sequence here
  // The last split takes whatever remains, so a split that is too small for
  // the longest sequence is slower, never wrong.
  const int blk_end = split == p.num_splits - 1 ? num_blocks
                                                : min(num_blocks, blk_begin + p.blocks_per_split);
  // With the fused K/V write, row (ctx - 1) % 16 of the last block comes
  // from new_k / new_v instead of the pool.
  const int last_blk = num_blocks - 1;
  const int new_row = (ctx - 1) % kAttnTile;
  const __nv_bfloat16* new_k =
      fused ? p.new_k + int64_t{seq} * p.q_row_stride + int64_t{kvh} * D : nullptr;
  const __nv_bfloat16* new_v =
      fused ? p.new_v + int64_t{seq} * p.q_row_stride + int64_t{kvh} * D : nullptr;

  // Q fragments (A operand), rotated at the query position, and this
  // lane's inverse frequencies for K: lane (g, c) holds dimensions
  // 16s + 8e + 2c + {0, 1} of k-step s and their partners + D/2.
  uint32_t qa[kSteps][4];
  float freq[kHalf][2][2];
  const float qpos = static_cast<float>(ctx - 1);
#pragma unroll
  for (int s = 0; s < kHalf; ++s) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int d0 = 16 * s + 8 * e + 2 * c;
      freq[s][e][0] = __ldg(p.inv_freq + d0);
      freq[s][e][1] = __ldg(p.inv_freq + d0 + 1);
    }
  }
  // This warp's blocks: first, first + kWarps, ... below blk_end.
  const int first = blk_begin + warp;
  const int my_count = first < blk_end ? (blk_end - first + kWarps - 1) / kWarps : 0;
  const uint32_t wsm = device::SmemAddr(smem) + warp * kStages * kStageBytes;
  const int32_t* bt = p.block_tables + int64_t{seq} * p.bt_stride;
  const __nv_bfloat16* head_base = p.layer_base + int64_t{kvh} * kBlock * D;
  int32_t table_window = 0;  // lane i: physical id of this warp's block (it & ~31) + i
  // kViews: lane i's hi block and shift of the same block.
  int32_t hi_window = 0;
  int32_t shift_window = 0;
  // kBlock 8: the same, one entry per block of a tile.
  int32_t sub_window[2] = {0, 0};
  int32_t sub_hi[2] = {0, 0};
  int32_t sub_shift[2] = {0, 0};

  auto load = [&](int it) {
    if constexpr (kBlock != kAttnTile) {
      // As at 16 below, lane i loads the entries of this warp's tile
      // (it & ~31) + i, here one per block of the tile, then every tile
      // takes its blocks' entries from that lane.
      constexpr int kSub = kAttnTile / kBlock;
      static_assert(kSub == 2, "two blocks a tile");
      const int64_t row = int64_t{seq} * p.bt_stride;
      if ((it & 31) == 0) {
        const int t = first + (it + lane) * kWarps;
#pragma unroll
        for (int j = 0; j < kSub; ++j) {
          const int b = t * kSub + j;
          const bool listed = t < blk_end && b * kBlock < ctx;  // entries past the end: unset
          sub_window[j] = listed ? __ldg(bt + b) : 0;
          if constexpr (kViews) {
            sub_hi[j] = listed ? __ldg(p.block_tables_hi + row + b) : 0;
            sub_shift[j] = listed ? __ldg(p.block_shifts + row + b) : 0;
          }
        }
      }
      int32_t lo[kSub], hi[kSub], shift[kSub];
#pragma unroll
      for (int j = 0; j < kSub; ++j) {
        lo[j] = __shfl_sync(0xffffffffu, sub_window[j], it & 31);
        hi[j] = kViews ? __shfl_sync(0xffffffffu, sub_hi[j], it & 31) : 0;
        shift[j] = kViews ? __shfl_sync(0xffffffffu, sub_shift[j], it & 31) : 0;
      }
      const int tile = first + it * kWarps;
      const int valid_rows = ctx - tile * kAttnTile;
      const uint32_t st = wsm + (it % kStages) * kStageBytes;
      const int fresh_row = fused && tile == last_blk ? new_row : -1;
#pragma unroll
      for (int i = 0; i < kChunksPerLane; ++i) {
        const auto [idx, r, q, off] = StageChunk<kChunksPerRow, kRowBytes>(lane, i);
        const bool valid = r < valid_rows;
        // Rows past the end read nothing (zero-filled) from a listed block.
        const bool second = valid && r >= kBlock;
        int slot = valid ? (r & (kBlock - 1)) + (second ? shift[1] : shift[0]) : 0;
        int32_t phys = second ? lo[1] : lo[0];
        if (kViews && slot >= kBlock) phys = second ? hi[1] : hi[0];
        slot &= kBlock - 1;
        const __nv_bfloat16* src = head_base + int64_t{phys} * p.block_elems + slot * D + q * 8;
        const bool fresh = r == fresh_row;
        CpAsync16(st + off, fresh ? new_k + q * 8 : src, valid ? 16 : 0);
        CpAsync16(st + kTileBytes + off, fresh ? new_v + q * 8 : src + p.slab, valid ? 16 : 0);
      }
      return;
    }
    if ((it & 31) == 0) {
      const int b = first + (it + lane) * kWarps;
      table_window = b < blk_end ? __ldg(bt + b) : 0;
      if constexpr (kViews) {
        const int64_t row = int64_t{seq} * p.bt_stride;
        hi_window = b < blk_end ? __ldg(p.block_tables_hi + row + b) : 0;
        shift_window = b < blk_end ? __ldg(p.block_shifts + row + b) : 0;
      }
    }
    const int32_t phys = __shfl_sync(0xffffffffu, table_window, it & 31);
    const int valid_rows = ctx - (first + it * kWarps) * kAttnTile;
    const __nv_bfloat16* kg = head_base + int64_t{phys} * p.block_elems;
    const __nv_bfloat16* vg = kg + p.slab;
    const uint32_t st = wsm + (it % kStages) * kStageBytes;
    // The row to take from new_k / new_v, or none (-1).
    const int fresh_row = fused && first + it * kWarps == last_blk ? new_row : -1;
    if constexpr (!kViews) {
#pragma unroll
      for (int i = 0; i < kChunksPerLane; ++i) {
        const auto [idx, r, q, off] = StageChunk<kChunksPerRow, kRowBytes>(lane, i);
        // Slots past the sequence's end are zero-filled: whatever the pool
        // holds there (NaN included) never reaches the MMAs.
        const int bytes = r < valid_rows ? 16 : 0;
        const bool fresh = r == fresh_row;
        CpAsync16(st + off, fresh ? new_k + q * 8 : kg + idx * 8, bytes);
        CpAsync16(st + kTileBytes + off, fresh ? new_v + q * 8 : vg + idx * 8, bytes);
      }
    } else {
      const int32_t phys_hi = __shfl_sync(0xffffffffu, hi_window, it & 31);
      const int shift = __shfl_sync(0xffffffffu, shift_window, it & 31);
      const __nv_bfloat16* kg_hi = head_base + int64_t{phys_hi} * p.block_elems;
#pragma unroll
      for (int i = 0; i < kChunksPerLane; ++i) {
        const auto [idx, r, q, off] = StageChunk<kChunksPerRow, kRowBytes>(lane, i);
        const int bytes = r < valid_rows ? 16 : 0;
        // Row r of the logical block: row r + shift of lo, or of hi past
        // lo's end (shift 0: lo's row r, as above).
        const int src_row = r + shift;
        const __nv_bfloat16* src =
            (src_row < kAttnTile ? kg : kg_hi) + (src_row & (kAttnTile - 1)) * D + q * 8;
        const bool fresh = r == fresh_row;
        CpAsync16(st + off, fresh ? new_k + q * 8 : src, bytes);
        CpAsync16(st + kTileBytes + off, fresh ? new_v + q * 8 : src + p.slab, bytes);
      }
    }
  };

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};

  // Prologue. With the fused write, every block but the last is final
  // before this grid starts (the launch's contract), so the first stages
  // are requested while the kernel before it still runs; the last block
  // (its new row is that kernel's output), Q and every write wait.
  int issued = 0;
  if (fused) {
    for (; issued < kStages - 1 && issued < my_count; ++issued) {
      if (first + issued * kWarps == last_blk) break;
      load(issued);
      CpAsyncCommit();
    }
  }
  device::WaitForPrerequisites();
  if (fused && blk_begin <= last_blk && last_blk < blk_end && threadIdx.x < 2 * kChunksPerRow) {
    const int32_t slot = p.new_slots[seq];
    if (slot >= 0) {
      const int kind = threadIdx.x / kChunksPerRow;  // 0 = K, 1 = V
      const int j = threadIdx.x % kChunksPerRow;
      const uint4 v = *reinterpret_cast<const uint4*>((kind == 0 ? new_k : new_v) + j * 8);
      __nv_bfloat16* dst = p.write_base + int64_t{slot / kBlock} * p.block_elems + kind * p.slab +
                           (int64_t{kvh} * kBlock + slot % kBlock) * D + j * 8;
      *reinterpret_cast<uint4*>(dst) = v;
    }
  }
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int head = g + 8 * hh;  // head within the group
    const bool valid = (kWide || hh == 0) && head < group;
    const __nv_bfloat16* qrow =
        p.q + int64_t{seq} * p.q_row_stride + int64_t{kvh * group + head} * D;
#pragma unroll
    for (int s = 0; s < kHalf; ++s) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int d0 = 16 * s + 8 * e + 2 * c;
        uint32_t x = 0, y = 0;
        if (valid) {
          x = __ldg(reinterpret_cast<const unsigned int*>(qrow + d0));
          y = __ldg(reinterpret_cast<const unsigned int*>(qrow + d0 + D / 2));
          float s0, c0, s1, c1;
          RopeSinCos(qpos, freq[s][e][0], &s0, &c0);
          RopeSinCos(qpos, freq[s][e][1], &s1, &c1);
          RotatePairs(x, y, s0, c0, s1, c1);
        }
        qa[s][hh + 2 * e] = x;
        qa[s + kHalf][hh + 2 * e] = y;
      }
    }
  }

  for (int st = issued; st < kStages - 1; ++st) {
    if (st < my_count) load(st);
    CpAsyncCommit();
  }
  for (int it = 0; it < my_count; ++it) {
    if (it + kStages - 1 < my_count) load(it + kStages - 1);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    __syncwarp();
    const uint32_t kst = wsm + (it % kStages) * kStageBytes;
    const uint32_t vst = kst + kTileBytes;
    const int tok0 = (first + it * kWarps) * kAttnTile;

    // S = Q K^T, K rotated at positions tok0 + g (n-tile 0), + 8 (n-tile 1).
    float sacc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    const float pos0 = static_cast<float>(tok0 + g);
    const int mi = lane >> 3;
    const uint32_t k_row = ((lane & 7) + ((mi >> 1) << 3)) * kRowBytes;
#pragma unroll
    for (int s = 0; s < kHalf; ++s) {
      uint32_t ka[4], kb[4];
      const int q1 = 2 * s + (mi & 1);
      const int q2 = q1 + kSteps;  // + D/2 dimensions
      Ldmatrix4(kst + k_row + ((q1 ^ (lane & 7)) << 4), ka);
      Ldmatrix4(kst + k_row + ((q2 ^ (lane & 7)) << 4), kb);
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const float pos = pos0 + 8.f * t;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float s0, c0, s1, c1;
          RopeSinCos(pos, freq[s][e][0], &s0, &c0);
          RopeSinCos(pos, freq[s][e][1], &s1, &c1);
          RotatePairs(ka[2 * t + e], kb[2 * t + e], s0, c0, s1, c1);
        }
      }
      MmaBf16(sacc[0], qa[s], ka[0], ka[1]);
      MmaBf16(sacc[1], qa[s], ka[2], ka[3]);
      MmaBf16(sacc[0], qa[s + kHalf], kb[0], kb[1]);
      MmaBf16(sacc[1], qa[s + kHalf], kb[2], kb[3]);
    }

    // Online softmax (log2 domain). sacc[t][j]: row g, token 8t + 2c + j;
    // sacc[t][2 + j]: row g + 8.
    const int valid = ctx - tok0;
    constexpr int kRows = kWide ? 2 : 1;
#pragma unroll
    for (int hh = 0; hh < kRows; ++hh) {
      float mx = -INFINITY;
#pragma unroll
      for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int tok = 8 * t + 2 * c + j;
          float& v = sacc[t][2 * hh + j];
          v = tok < valid ? v * p.scale_log2 : -INFINITY;
          mx = fmaxf(mx, v);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[hh], mx);  // finite: token 0 is valid
      const float alpha = FastExp2(m[hh] - m_new);
      float sum = 0.f;
#pragma unroll
      for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float& v = sacc[t][2 * hh + j];
          v = FastExp2(v - m_new);
          sum += v;
        }
      }
      l[hh] = l[hh] * alpha + sum;
      m[hh] = m_new;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[n][2 * hh] *= alpha;
        o[n][2 * hh + 1] *= alpha;
      }
    }

    // O += P V.
    uint32_t pa[4];
    pa[0] = PackBf16x2(sacc[0][0], sacc[0][1]);
    pa[1] = kWide ? PackBf16x2(sacc[0][2], sacc[0][3]) : 0u;
    pa[2] = PackBf16x2(sacc[1][0], sacc[1][1]);
    pa[3] = kWide ? PackBf16x2(sacc[1][2], sacc[1][3]) : 0u;
    const uint32_t v_row = ((lane & 7) + ((mi & 1) << 3)) * kRowBytes;
#pragma unroll
    for (int jj = 0; jj < D / 16; ++jj) {
      uint32_t vb[4];
      const int q = 2 * jj + (mi >> 1);
      Ldmatrix4Trans(vst + v_row + ((q ^ (lane & 7)) << 4), vb);
      MmaBf16(o[2 * jj], pa, vb[0], vb[1]);
      MmaBf16(o[2 * jj + 1], pa, vb[2], vb[3]);
    }
    __syncwarp();  // every lane is done with this stage before it is refilled
  }
  CpAsyncWait<0>();

#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    l[hh] += __shfl_xor_sync(0xffffffffu, l[hh], 1);
    l[hh] += __shfl_xor_sync(0xffffffffu, l[hh], 2);
  }

  // Merge the warps: per warp O [16][D], m [16], l [16] in shared memory.
  __syncthreads();
  float* red_o = reinterpret_cast<float*>(smem);
  float* red_ml = red_o + kWarps * 16 * D;
  {
    float* wo = red_o + warp * 16 * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int d = 8 * n + 2 * c;
      *reinterpret_cast<float2*>(wo + g * D + d) = make_float2(o[n][0], o[n][1]);
      if (kWide) *reinterpret_cast<float2*>(wo + (g + 8) * D + d) = make_float2(o[n][2], o[n][3]);
    }
    if (c == 0) {
      red_ml[warp * 32 + g] = m[0];
      red_ml[warp * 32 + 16 + g] = l[0];
      if (kWide) {
        red_ml[warp * 32 + g + 8] = m[1];
        red_ml[warp * 32 + 16 + g + 8] = l[1];
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < group * D; i += kWarps * 32) {
    const int row = i / D;
    const int d = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, red_ml[w * 32 + row]);
    float sum_l = 0.f, acc = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = red_ml[w * 32 + row];
      if (mw == -INFINITY) continue;  // a warp with no block
      const float wgt = FastExp2(mw - mx);
      sum_l += red_ml[w * 32 + 16 + row] * wgt;
      acc += red_o[(w * 16 + row) * D + d] * wgt;
    }
    const int head = kvh * group + row;
    if (p.num_splits == 1) {
      p.out[(int64_t{seq} * p.num_q_heads + head) * D + d] = __float2bfloat16(acc / sum_l);
    } else {
      const int64_t slot = (int64_t{seq} * p.num_q_heads + head) * p.num_splits + split;
      p.part_o[slot * D + d] = acc / sum_l;
      if (d == 0) p.part_lse[slot] = mx + __log2f(sum_l);
    }
  }
}

// Grid: (num_q_heads, num_seqs). Block: D threads, one per dimension.
// Merges the splits of one (sequence, head) weighted by their log-sum-exp.
// part_o: [num_seqs][num_q_heads][num_splits][D]; part_lse: [..][num_splits]
// out: bf16 [num_seqs][num_q_heads][D]
template <int D>
__global__ void MergeSplitsKernel(const float* __restrict__ part_o,
                                  const float* __restrict__ part_lse,
                                  const int32_t* __restrict__ context_lens, int num_q_heads,
                                  int num_splits, int blocks_per_split,
                                  __nv_bfloat16* __restrict__ out) {
  device::AllowDependentLaunch();
  device::WaitForPrerequisites();
  const int head = blockIdx.x;
  const int seq = blockIdx.y;
  const int d = threadIdx.x;
  const int ctx = context_lens[seq];
  __nv_bfloat16* o = out + (int64_t{seq} * num_q_heads + head) * D;
  if (ctx <= 0) {
    o[d] = __float2bfloat16(0.f);
    return;
  }
  const int num_blocks = (ctx + kAttnTile - 1) / kAttnTile;
  const int used = min(num_splits, (num_blocks + blocks_per_split - 1) / blocks_per_split);
  const int64_t base = (int64_t{seq} * num_q_heads + head) * num_splits;
  float mx = -INFINITY;
  for (int i = 0; i < used; ++i) mx = fmaxf(mx, part_lse[base + i]);
  float sum = 0.f, acc = 0.f;
  for (int i = 0; i < used; ++i) {
    const float w = FastExp2(part_lse[base + i] - mx);
    sum += w;
    acc += w * part_o[(base + i) * D + d];
  }
  o[d] = __float2bfloat16(acc / sum);
}

template <int D, int kStages, bool kWide, bool kViews, int kBlock>
absl::Status LaunchDecode(const DecodeParamsFor<kViews>& p, int kv_heads, int num_seqs,
                          cudaStream_t stream) {
  constexpr int kSmem = DecodeSmemBytes<D, kStages>();
  static const cudaError_t attr_err =
      cudaFuncSetAttribute(PagedDecodeKernel<D, kStages, kWide, kViews, kBlock>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attr_err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("decode attention: shared memory limit: ", cudaGetErrorString(attr_err)));
  }
  const dim3 grid(kv_heads, num_seqs, p.num_splits);
  cudaError_t err = device::LaunchDependent(PagedDecodeKernel<D, kStages, kWide, kViews, kBlock>,
                                            grid, dim3(kWarps * 32), kSmem, stream, p);
  if (err == cudaSuccess && p.num_splits > 1) {
    err = device::LaunchDependent(MergeSplitsKernel<D>, dim3(p.num_q_heads, num_seqs), dim3(D), 0,
                                  stream, p.part_o, p.part_lse, p.context_lens, p.num_q_heads,
                                  p.num_splits, p.blocks_per_split, p.out);
  }
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("decode attention launch: ", cudaGetErrorString(err)));
  }
  return internal::LaunchStatus("decode attention");
}

// The instantiation for the launch's head size, group width and views.
template <int kBlock>
absl::Status LaunchDecodeFor(const DecodeViewParams& p, int head_dim, int kv_heads, int num_seqs,
                             cudaStream_t stream) {
  const bool wide = p.group > 8;
  const bool d128 = head_dim == 128;
  if (p.block_shifts != nullptr) {
    // Views: the whole DecodeViewParams.
    if (d128) {
      return wide ? LaunchDecode<128, 3, true, true, kBlock>(p, kv_heads, num_seqs, stream)
                  : LaunchDecode<128, 3, false, true, kBlock>(p, kv_heads, num_seqs, stream);
    }
    return wide ? LaunchDecode<64, 3, true, true, kBlock>(p, kv_heads, num_seqs, stream)
                : LaunchDecode<64, 3, false, true, kBlock>(p, kv_heads, num_seqs, stream);
  }
  // No views: the DecodeParams part only.
  const DecodeParams& base = p;
  if (d128) {
    return wide ? LaunchDecode<128, 3, true, false, kBlock>(base, kv_heads, num_seqs, stream)
                : LaunchDecode<128, 3, false, false, kBlock>(base, kv_heads, num_seqs, stream);
  }
  return wide ? LaunchDecode<64, 3, true, false, kBlock>(base, kv_heads, num_seqs, stream)
              : LaunchDecode<64, 3, false, false, kBlock>(base, kv_heads, num_seqs, stream);
}

}  // namespace

DecodeSplit ChooseDecodeSplit(int num_seqs, int kv_heads, int max_context_len, int num_sms) {
  const int max_blocks = std::max(1, (max_context_len + kAttnTile - 1) / kAttnTile);
  const int64_t pairs = std::max<int64_t>(1, int64_t{num_seqs} * kv_heads);
  // At most one wave of CTAs (two fit on a multiprocessor): on an H100 at
  // batch 64 x 4 KV heads (256 CTAs, 264 slots) splitting into 2-12 chunks
  // was 2-20 % slower than none at 1k-16k keys (bench/NOTES-kernels.md).
  const int64_t slots = 2 * int64_t{std::max(1, num_sms)};
  const int splits = static_cast<int>(std::max<int64_t>(1, slots / pairs));
  const int bps = std::max(16, (max_blocks + splits - 1) / splits);
  return {(max_blocks + bps - 1) / bps, bps};
}

size_t DecodeAttentionWorkspaceBytes(int num_seqs, int num_q_heads, int head_dim,
                                     const DecodeSplit& split) {
  if (split.num_splits <= 1) return 0;
  const size_t slots = size_t(std::max(0, num_seqs)) * std::max(0, num_q_heads) * split.num_splits;
  return slots * (size_t(head_dim) + 1) * sizeof(float);
}

absl::Status LaunchPagedDecodeAttention(const PagedAttentionArgs& args, int num_seqs,
                                        const DecodeSplit& split, void* workspace,
                                        cudaStream_t stream) {
  if (absl::Status s = internal::ValidateAttentionArgs(args, num_seqs, "decode attention");
      !s.ok()) {
    return s;
  }
  if (split.num_splits <= 0 || split.blocks_per_split <= 0 || split.num_splits > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("decode attention: bad split ",
                                                   split.num_splits, " x ",
                                                   split.blocks_per_split));
  }
  if (split.num_splits > 1 && (workspace == nullptr || !internal::Aligned(workspace, 16))) {
    return absl::InvalidArgumentError("decode attention: split launch needs a 16-byte aligned workspace");
  }
  if (args.new_slots != nullptr &&
      (!internal::Aligned(args.new_k, 16) || !internal::Aligned(args.new_v, 16) ||
       args.new_k == nullptr || args.new_v == nullptr || args.q_row_stride % 8 != 0)) {
    return absl::InvalidArgumentError(
        "decode attention: the fused K/V write needs new_k and new_v 16-byte aligned and a "
        "q_row_stride that is a multiple of 8");
  }
  if (num_seqs == 0) return absl::OkStatus();
  const internal::PoolView pool = internal::MakePoolView(args);
  const int kv_heads = args.shape.kv_heads;
  const int head_dim = args.shape.head_dim;
  DecodeViewParams p;
  p.q = static_cast<const __nv_bfloat16*>(args.q);
  p.q_row_stride = args.q_row_stride;
  p.layer_base = pool.layer_base;
  p.block_elems = pool.block_elems;
  p.slab = pool.slab;
  p.block_tables = args.block_tables;
  p.block_tables_hi = args.block_tables_hi;
  p.block_shifts = args.block_shifts;
  p.bt_stride = args.block_table_stride;
  p.context_lens = args.context_lens;
  p.inv_freq = args.rope_inv_freq;
  p.scale_log2 = args.softmax_scale * kLog2e;
  p.num_q_heads = args.num_q_heads;
  p.group = args.num_q_heads / kv_heads;
  p.blocks_per_split = split.blocks_per_split;
  p.num_splits = split.num_splits;
  p.out = static_cast<__nv_bfloat16*>(args.out);
  p.new_slots = args.new_slots;
  p.new_k = static_cast<const __nv_bfloat16*>(args.new_k);
  p.new_v = static_cast<const __nv_bfloat16*>(args.new_v);
  // The fused write goes into the pool the launch reads (see new_slots).
  p.write_base = args.new_slots ? const_cast<__nv_bfloat16*>(pool.layer_base) : nullptr;
  const size_t slots = size_t(num_seqs) * args.num_q_heads * split.num_splits;
  p.part_o = static_cast<float*>(workspace);
  p.part_lse = p.part_o == nullptr ? nullptr : p.part_o + slots * head_dim;
  if (args.shape.block_size == 16) {
    return LaunchDecodeFor<16>(p, head_dim, kv_heads, num_seqs, stream);
  }
  return LaunchDecodeFor<8>(p, head_dim, kv_heads, num_seqs, stream);
}

}  // namespace memshare::kernels
