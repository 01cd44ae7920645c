// Paged prefill attention (see attention.h): causal flash attention of a
// chunk of query tokens over the cached prefix and the chunk itself, both
// read from the paged pool, with bf16 tensor-core MMAs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

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

// 8 warps (128 rows) share each K/V tile: 4.5-12 % faster than 4 on an H100
// (bench/NOTES-cuda-backend.md, session 4).
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerCta = 16 * kWarps;  // (query token, head) rows
constexpr int kKvTile = 64;               // keys per iteration
constexpr float kLog2e = 1.4426950408889634f;

struct PrefillParams {
  const __nv_bfloat16* q;  // [num_tokens][q_row_stride]
  int64_t q_row_stride;
  const __nv_bfloat16* layer_base;  // pool + layer * 2 * slab
  int64_t block_elems;
  int64_t slab;
  const int32_t* block_tables;  // [num_seqs][bt_stride]
  int64_t bt_stride;
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* cu_q_lens;     // [num_seqs + 1]
  const float* inv_freq;        // [D / 2]
  float scale_log2;
  int num_q_heads;
  int group;
  __nv_bfloat16* out;  // [num_tokens][num_q_heads][D]
};

// With shifted views. A separate type, so that the kernel without views
// takes exactly the parameters it did before views existed.
struct PrefillViewParams : PrefillParams {
  const int32_t* block_tables_hi;  // [num_seqs][bt_stride]
  const int32_t* block_shifts;     // [num_seqs][bt_stride]
};

template <bool kViews>
using PrefillParamsFor = std::conditional_t<kViews, PrefillViewParams, PrefillParams>;

template <int D>
constexpr int PrefillSmemBytes() {
  return 2 /*stages*/ * 2 /*K, V*/ * kKvTile * D * 2 + D / 2 * 4 /*inv_freq*/;
}

// Grid: (row tiles, num_seqs, kv_heads). Block: kWarps (8) warps.
// The rows of a (sequence, KV head) are its (query token, head of the
// group) pairs, token-major: row r is token r / group, head r % group; CTA
// x owns rows [128x, 128x + 128), warp w the 16 rows from 128x + 16w. Keys run
// from position 0 to the tile's last query position, kKvTile (64) at a
// time through a 2-stage cp.async pipeline; each K tile is rotated in place
// in shared memory (RoPE at its logical positions) before the warps read it.
// Per warp and tile: S[16 x 64] = Q K^T, causal mask, online softmax,
// O[16 x D] += P V.
// kViews: the launch has shifted views; key `tok` then comes from slot
// (tok % kBlock + shift) of its lo block or, past its end, of its hi block.
// The tile in shared memory is in logical order either way. kBlock: the
// pool's block size (16 or 8); a key's block and slot are looked up per key.
template <int D, bool kViews, int kBlock>
__global__ void __launch_bounds__(kThreads) PagedPrefillKernel(const PrefillParamsFor<kViews> p) {
  static_assert(kBlock == 16 || kBlock == 8, "block sizes of the fast kernels");
  constexpr int kSteps = D / 16;
  constexpr int kHalf = kSteps / 2;
  constexpr int kRowBytes = D * 2;
  constexpr int kChunksPerRow = D / 8;
  constexpr int kTileBytes = kKvTile * kRowBytes;
  constexpr int kStageBytes = 2 * kTileBytes;
  constexpr int kLoadIters = kKvTile * kChunksPerRow / kThreads;
  constexpr int kRopeIters = kKvTile * (kChunksPerRow / 2) / kThreads;
  extern __shared__ __align__(128) uint8_t smem[];
  float* s_freq = reinterpret_cast<float*>(smem + 2 * kStageBytes);

  const int seq = blockIdx.y;
  const int kvh = blockIdx.z;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;
  const int c = lane & 3;
  const int group = p.group;
  const int q_begin = p.cu_q_lens[seq];
  const int q_len = p.cu_q_lens[seq + 1] - q_begin;
  const int ctx = p.context_lens[seq];
  const int rows = q_len * group;
  const int row0 = blockIdx.x * kRowsPerCta;
  if (row0 >= rows || ctx <= 0) return;
  const int first_pos = ctx - q_len;
  const int kv_end = first_pos + (min(rows, row0 + kRowsPerCta) - 1) / group + 1;
  const int num_tiles = (kv_end + kKvTile - 1) / kKvTile;

  for (int i = threadIdx.x; i < D / 2; i += kThreads) s_freq[i] = p.inv_freq[i];

  // Q fragments of rows ra (a0, a2) and ra + 8 (a1, a3), rotated at their
  // positions. pos[] = -1 marks a row past the sequence's rows.
  uint32_t qa[kSteps][4];
  int pos[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int r = row0 + warp * 16 + g + 8 * hh;
    const bool valid = r < rows;
    const int token = valid ? r / group : 0;
    const int head = valid ? r % group : 0;
    pos[hh] = valid ? first_pos + token : -1;
    const __nv_bfloat16* qrow = p.q + int64_t{q_begin + token} * p.q_row_stride +
                                int64_t{kvh * group + head} * D;
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
          RopeSinCos(static_cast<float>(pos[hh]), __ldg(p.inv_freq + d0), &s0, &c0);
          RopeSinCos(static_cast<float>(pos[hh]), __ldg(p.inv_freq + d0 + 1), &s1, &c1);
          RotatePairs(x, y, s0, c0, s1, c1);
        }
        qa[s][hh + 2 * e] = x;
        qa[s + kHalf][hh + 2 * e] = y;
      }
    }
  }

  const uint32_t sbase = device::SmemAddr(smem);
  const int32_t* bt = p.block_tables + int64_t{seq} * p.bt_stride;
  const __nv_bfloat16* head_base = p.layer_base + int64_t{kvh} * kBlock * D;
  auto load_tile = [&](int tile) {
    const uint32_t kdst = sbase + (tile & 1) * kStageBytes;
#pragma unroll
    for (int i = 0; i < kLoadIters; ++i) {
      const int idx = threadIdx.x + kThreads * i;
      const int r = idx / kChunksPerRow;
      const int q = idx % kChunksPerRow;
      const int tok = tile * kKvTile + r;
      const bool valid = tok < kv_end;
      const __nv_bfloat16* src;
      if constexpr (!kViews) {
        const int32_t phys = __ldg(bt + (valid ? tok / kBlock : 0));
        src = head_base + int64_t{phys} * p.block_elems + (valid ? (tok % kBlock) * D : 0) + q * 8;
      } else {
        const int logical = valid ? tok / kBlock : 0;
        const int64_t row = int64_t{seq} * p.bt_stride;
        int32_t phys = __ldg(bt + logical);
        int slot = valid ? tok % kBlock + __ldg(p.block_shifts + row + logical) : 0;
        if (slot >= kBlock) phys = __ldg(p.block_tables_hi + row + logical);
        slot &= kBlock - 1;
        src = head_base + int64_t{phys} * p.block_elems + slot * D + q * 8;
      }
      const uint32_t off = r * kRowBytes + ((q ^ (r & 7)) << 4);
      CpAsync16(kdst + off, src, valid ? 16 : 0);
      CpAsync16(kdst + kTileBytes + off, src + p.slab, valid ? 16 : 0);
    }
  };

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};
  const int mi = lane >> 3;

  load_tile(0);
  CpAsyncCommit();
  for (int tile = 0; tile < num_tiles; ++tile) {
    if (tile + 1 < num_tiles) load_tile(tile + 1);
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    const uint32_t kst = sbase + (tile & 1) * kStageBytes;
    const uint32_t vst = kst + kTileBytes;
    const int key0 = tile * kKvTile;

    // RoPE on the K tile, in place: chunk q (dims 8q..8q+7) with its
    // partner chunk q + D/16 (dims + D/2), at position key0 + r.
#pragma unroll
    for (int i = 0; i < kRopeIters; ++i) {
      const int idx = threadIdx.x + kThreads * i;
      const int r = idx / (kChunksPerRow / 2);
      const int q = idx % (kChunksPerRow / 2);
      const uint32_t ax = kst + r * kRowBytes + ((q ^ (r & 7)) << 4);
      const uint32_t ay = kst + r * kRowBytes + (((q + kChunksPerRow / 2) ^ (r & 7)) << 4);
      uint32_t x[4], y[4];
      asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(x[0]), "=r"(x[1]), "=r"(x[2]), "=r"(x[3])
                   : "r"(ax));
      asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(y[0]), "=r"(y[1]), "=r"(y[2]), "=r"(y[3])
                   : "r"(ay));
      const float kpos = static_cast<float>(key0 + r);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float s0, c0, s1, c1;
        RopeSinCos(kpos, s_freq[8 * q + 2 * j], &s0, &c0);
        RopeSinCos(kpos, s_freq[8 * q + 2 * j + 1], &s1, &c1);
        RotatePairs(x[j], y[j], s0, c0, s1, c1);
      }
      asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(ax), "r"(x[0]), "r"(x[1]),
                   "r"(x[2]), "r"(x[3]));
      asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(ay), "r"(y[0]), "r"(y[1]),
                   "r"(y[2]), "r"(y[3]));
    }
    __syncthreads();

    // S = Q K^T over the tile's 64 keys: 8 n-tiles of 8 keys.
    float sacc[kKvTile / 8][4];
#pragma unroll
    for (int n = 0; n < kKvTile / 8; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.f;
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
#pragma unroll
      for (int tp = 0; tp < kKvTile / 16; ++tp) {
        uint32_t kb[4];
        const int r = 16 * tp + (lane & 7) + ((mi >> 1) << 3);
        const int q = 2 * s + (mi & 1);
        Ldmatrix4(kst + r * kRowBytes + ((q ^ (lane & 7)) << 4), kb);
        MmaBf16(sacc[2 * tp], qa[s], kb[0], kb[1]);
        MmaBf16(sacc[2 * tp + 1], qa[s], kb[2], kb[3]);
      }
    }

    // Causal mask and online softmax, per row half.
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < kKvTile / 8; ++n) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int key = key0 + 8 * n + 2 * c + j;
          float& v = sacc[n][2 * hh + j];
          v = key <= pos[hh] ? v * p.scale_log2 : -INFINITY;
          mx = fmaxf(mx, v);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[hh], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet
      const float alpha = FastExp2(m[hh] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < kKvTile / 8; ++n) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float& v = sacc[n][2 * hh + j];
          v = FastExp2(v - m_use);
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

    // O += P V: 4 k-steps of 16 keys, D/8 n-tiles.
#pragma unroll
    for (int kk = 0; kk < kKvTile / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = PackBf16x2(sacc[2 * kk][0], sacc[2 * kk][1]);
      pa[1] = PackBf16x2(sacc[2 * kk][2], sacc[2 * kk][3]);
      pa[2] = PackBf16x2(sacc[2 * kk + 1][0], sacc[2 * kk + 1][1]);
      pa[3] = PackBf16x2(sacc[2 * kk + 1][2], sacc[2 * kk + 1][3]);
      const int r = 16 * kk + (lane & 7) + ((mi & 1) << 3);
#pragma unroll
      for (int jj = 0; jj < D / 16; ++jj) {
        uint32_t vb[4];
        const int q = 2 * jj + (mi >> 1);
        Ldmatrix4Trans(vst + r * kRowBytes + ((q ^ (lane & 7)) << 4), vb);
        MmaBf16(o[2 * jj], pa, vb[0], vb[1]);
        MmaBf16(o[2 * jj + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // the stage is refilled by the next iteration's load
  }
  CpAsyncWait<0>();

#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    l[hh] += __shfl_xor_sync(0xffffffffu, l[hh], 1);
    l[hh] += __shfl_xor_sync(0xffffffffu, l[hh], 2);
    if (pos[hh] < 0) continue;
    const int r = row0 + warp * 16 + g + 8 * hh;
    const int token = r / group;
    const int head = kvh * group + r % group;
    __nv_bfloat16* orow = p.out + (int64_t{q_begin + token} * p.num_q_heads + head) * D;
    const float inv_l = 1.f / l[hh];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<uint32_t*>(orow + 8 * n + 2 * c) =
          PackBf16x2(o[n][2 * hh] * inv_l, o[n][2 * hh + 1] * inv_l);
    }
  }
}

template <int D, bool kViews, int kBlock>
absl::Status LaunchPrefill(const PrefillParamsFor<kViews>& p, int kv_heads, int num_seqs,
                           int max_q_len, cudaStream_t stream) {
  constexpr int kSmem = PrefillSmemBytes<D>();
  static const cudaError_t attr_err = cudaFuncSetAttribute(
      PagedPrefillKernel<D, kViews, kBlock>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attr_err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("prefill attention: shared memory limit: ", cudaGetErrorString(attr_err)));
  }
  const int64_t tiles = (int64_t{max_q_len} * p.group + kRowsPerCta - 1) / kRowsPerCta;
  if (tiles > 0x7fffffff) return absl::InvalidArgumentError("prefill attention: too many rows");
  const dim3 grid(static_cast<unsigned>(tiles), num_seqs, kv_heads);
  PagedPrefillKernel<D, kViews, kBlock><<<grid, kThreads, kSmem, stream>>>(p);
  return internal::LaunchStatus("prefill attention");
}

}  // namespace

absl::Status LaunchPagedPrefillAttention(const PagedAttentionArgs& args, int num_seqs,
                                         const int32_t* cu_q_lens, int max_q_len,
                                         cudaStream_t stream) {
  if (absl::Status s = internal::ValidateAttentionArgs(args, num_seqs, "prefill attention");
      !s.ok()) {
    return s;
  }
  if (max_q_len < 0) {
    return absl::InvalidArgumentError(absl::StrCat("prefill attention: max_q_len ", max_q_len));
  }
  if (args.new_slots != nullptr) {
    return absl::InvalidArgumentError(
        "prefill attention: the fused K/V write (new_slots) is decode only");
  }
  if (num_seqs == 0 || max_q_len == 0) return absl::OkStatus();
  const internal::PoolView pool = internal::MakePoolView(args);
  PrefillViewParams p;
  p.q = static_cast<const __nv_bfloat16*>(args.q);
  p.q_row_stride = args.q_row_stride;
  p.layer_base = pool.layer_base;
  p.block_elems = pool.block_elems;
  p.slab = pool.slab;
  p.block_tables = args.block_tables;
  p.bt_stride = args.block_table_stride;
  p.context_lens = args.context_lens;
  p.cu_q_lens = cu_q_lens;
  p.inv_freq = args.rope_inv_freq;
  p.scale_log2 = args.softmax_scale * kLog2e;
  p.num_q_heads = args.num_q_heads;
  p.group = args.num_q_heads / args.shape.kv_heads;
  p.out = static_cast<__nv_bfloat16*>(args.out);
  p.block_tables_hi = args.block_tables_hi;
  p.block_shifts = args.block_shifts;
  const int kvh = args.shape.kv_heads;
  const bool b16 = args.shape.block_size == 16;
  if (p.block_shifts != nullptr) {
    if (args.shape.head_dim == 128) {
      return b16 ? LaunchPrefill<128, true, 16>(p, kvh, num_seqs, max_q_len, stream)
                 : LaunchPrefill<128, true, 8>(p, kvh, num_seqs, max_q_len, stream);
    }
    return b16 ? LaunchPrefill<64, true, 16>(p, kvh, num_seqs, max_q_len, stream)
               : LaunchPrefill<64, true, 8>(p, kvh, num_seqs, max_q_len, stream);
  }
  const PrefillParams& base = p;  // no views: the PrefillParams part only
  if (args.shape.head_dim == 128) {
    return b16 ? LaunchPrefill<128, false, 16>(base, kvh, num_seqs, max_q_len, stream)
               : LaunchPrefill<128, false, 8>(base, kvh, num_seqs, max_q_len, stream);
  }
  return b16 ? LaunchPrefill<64, false, 16>(base, kvh, num_seqs, max_q_len, stream)
             : LaunchPrefill<64, false, 8>(base, kvh, num_seqs, max_q_len, stream);
}

}  // namespace memshare::kernels
