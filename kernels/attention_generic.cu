// Generic paged attention (see attention_generic.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention_generic.h"

namespace memshare::kernels {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxHeadDim = 256;
constexpr int kPairsPerLane = kMaxHeadDim / 2 / 32;  // rotation pairs (t, t + D/2) per lane

struct GenericParams {
  const __nv_bfloat16* q;  // [rows][q_row_stride]
  int64_t q_row_stride;
  const __nv_bfloat16* layer_base;  // pool + layer * 2 * slab
  int64_t block_elems;              // elements of one block
  int64_t slab;                     // elements of one (layer, K or V) slab
  const int32_t* block_tables;      // [num_seqs][bt_stride]
  // Shifted views (kViews only): [num_seqs][bt_stride] like block_tables.
  const int32_t* block_tables_hi;
  const int32_t* block_shifts;
  int64_t bt_stride;
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* cu_q_lens;     // [num_seqs + 1]
  const float* inv_freq;        // [head_dim / 2]
  float scale;
  int num_q_heads;
  int group;  // query heads per KV head
  int head_dim;
  int block_size;
  __nv_bfloat16* out;  // [rows][num_q_heads][head_dim]
};

__device__ __forceinline__ float WarpSumF(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Grid: (num_q_heads, max_q_len, num_seqs). Block: kWarps warps.
// CTA (h, i, s) computes query row i of sequence s for query head h. Warp w
// takes keys w, w + kWarps, ... up to the query position with an online
// softmax; lane l holds the rotation pairs (t, t + D/2) for t = l + 32 r.
// The warps' partial states merge in shared memory.
// kViews: the launch has shifted views; key j then comes from slot
// j % block_size + shift of its entry's block, or of the entry's hi block
// past the end (attention.h). Without views the code is what it was before
// views existed.
template <bool kViews>
__global__ void __launch_bounds__(kThreads) GenericAttentionKernel(const GenericParams p) {
  const int head = blockIdx.x;
  const int i = blockIdx.y;
  const int seq = blockIdx.z;
  const int q0 = p.cu_q_lens[seq];
  const int q_len = p.cu_q_lens[seq + 1] - q0;
  if (i >= q_len) return;
  const int D = p.head_dim;
  const int half = D / 2;
  const int ctx = p.context_lens[seq];
  __nv_bfloat16* orow = p.out + (int64_t{q0 + i} * p.num_q_heads + head) * D;
  if (ctx <= 0) {  // padding
    for (int d = threadIdx.x; d < D; d += kThreads) orow[d] = __float2bfloat16(0.f);
    return;
  }
  const int pos = ctx - q_len + i;
  const int kvh = head / p.group;

  __shared__ float q_s[kMaxHeadDim];
  __shared__ float red_m[kWarps];
  __shared__ float red_l[kWarps];
  __shared__ float red_acc[kWarps][kMaxHeadDim];

  const __nv_bfloat16* qrow = p.q + int64_t{q0 + i} * p.q_row_stride + int64_t{head} * D;
  for (int t = threadIdx.x; t < half; t += kThreads) {
    float s, c;
    sincosf(static_cast<float>(pos) * p.inv_freq[t], &s, &c);
    const float x = __bfloat162float(qrow[t]);
    const float y = __bfloat162float(qrow[t + half]);
    q_s[t] = x * c - y * s;
    q_s[t + half] = y * c + x * s;
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  float m = -INFINITY;
  float l = 0.f;
  float acc[2 * kPairsPerLane];
#pragma unroll
  for (int r = 0; r < 2 * kPairsPerLane; ++r) acc[r] = 0.f;
  const int32_t* table = p.block_tables + int64_t{seq} * p.bt_stride;
  const int64_t head_off = int64_t{kvh} * p.block_size * D;

  for (int j = warp; j <= pos; j += kWarps) {
    int64_t block = table[j / p.block_size];
    int slot = j % p.block_size;
    if constexpr (kViews) {
      const int64_t entry = int64_t{seq} * p.bt_stride + j / p.block_size;
      slot += p.block_shifts[entry];
      if (slot >= p.block_size) {
        slot -= p.block_size;
        block = p.block_tables_hi[entry];
      }
    }
    const __nv_bfloat16* k = p.layer_base + block * p.block_elems + head_off + int64_t{slot} * D;
    const __nv_bfloat16* v = k + p.slab;
    float part = 0.f;
#pragma unroll
    for (int r = 0; r < kPairsPerLane; ++r) {
      const int t = lane + 32 * r;
      if (t < half) {
        float s, c;
        sincosf(static_cast<float>(j) * p.inv_freq[t], &s, &c);
        const float x = __bfloat162float(k[t]);
        const float y = __bfloat162float(k[t + half]);
        part += q_s[t] * (x * c - y * s) + q_s[t + half] * (y * c + x * s);
      }
    }
    const float score = WarpSumF(part) * p.scale;
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float w = expf(score - m_new);
    l = l * corr + w;
#pragma unroll
    for (int r = 0; r < kPairsPerLane; ++r) {
      const int t = lane + 32 * r;
      if (t < half) {
        acc[2 * r] = acc[2 * r] * corr + w * __bfloat162float(v[t]);
        acc[2 * r + 1] = acc[2 * r + 1] * corr + w * __bfloat162float(v[t + half]);
      }
    }
    m = m_new;
  }

  if (lane == 0) {
    red_m[warp] = m;
    red_l[warp] = l;
  }
#pragma unroll
  for (int r = 0; r < kPairsPerLane; ++r) {
    const int t = lane + 32 * r;
    if (t < half) {
      red_acc[warp][t] = acc[2 * r];
      red_acc[warp][t + half] = acc[2 * r + 1];
    }
  }
  __syncthreads();
  float big = red_m[0];  // warp 0 always has key 0
#pragma unroll
  for (int w = 1; w < kWarps; ++w) big = fmaxf(big, red_m[w]);
  float denom = 0.f;
  float scale_w[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    scale_w[w] = red_m[w] == -INFINITY ? 0.f : expf(red_m[w] - big);
    denom += scale_w[w] * red_l[w];
  }
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float num = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) num += scale_w[w] * red_acc[w][d];
    orow[d] = __float2bfloat16(num / denom);
  }
}

}  // namespace

bool FastAttentionSupports(const KvBlockShape& shape, int num_q_heads) {
  return (shape.block_size == 16 || shape.block_size == 8) &&
         (shape.head_dim == 64 || shape.head_dim == 128) && shape.kv_heads > 0 &&
         num_q_heads % shape.kv_heads == 0 && num_q_heads / shape.kv_heads >= 1 &&
         num_q_heads / shape.kv_heads <= 16;
}

absl::Status LaunchPagedAttentionGeneric(const PagedAttentionArgs& a, int num_seqs,
                                         const int32_t* cu_q_lens, int max_q_len,
                                         cudaStream_t stream) {
  const KvBlockShape& s = a.shape;
  if (a.new_slots != nullptr) {
    return absl::InvalidArgumentError(
        "generic attention: the fused K/V write (new_slots) is decode only");
  }
  if (s.head_dim <= 0 || s.head_dim % 2 != 0 || s.head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("generic attention: head_dim ", s.head_dim, " (even, <= 256)"));
  }
  if (s.block_size <= 0 || s.kv_heads <= 0 || a.num_q_heads <= 0 ||
      a.num_q_heads % s.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("generic attention: block_size ", s.block_size,
                                                   ", heads ", a.num_q_heads, "/", s.kv_heads));
  }
  if (a.layer < 0 || a.layer >= s.layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("generic attention: layer ", a.layer, " outside the group's ", s.layers));
  }
  if (num_seqs < 0 || num_seqs > 65535 || max_q_len < 0 || max_q_len > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("generic attention: ", num_seqs, " sequences, max_q_len ", max_q_len));
  }
  if (a.q_row_stride < int64_t{a.num_q_heads} * s.head_dim || a.block_table_stride <= 0 ||
      !(a.softmax_scale > 0.f)) {
    return absl::InvalidArgumentError("generic attention: bad q stride, table stride or scale");
  }
  if ((a.block_tables_hi == nullptr) != (a.block_shifts == nullptr)) {
    return absl::InvalidArgumentError(
        "generic attention: block_tables_hi and block_shifts must both be set or both be null");
  }
  if (num_seqs == 0 || max_q_len == 0) return absl::OkStatus();
  GenericParams p;
  const int64_t slab = s.SlabElements();
  p.q = static_cast<const __nv_bfloat16*>(a.q);
  p.q_row_stride = a.q_row_stride;
  p.layer_base = static_cast<const __nv_bfloat16*>(a.kv_pool) + int64_t{a.layer} * 2 * slab;
  p.block_elems = s.BlockElements();
  p.slab = slab;
  p.block_tables = a.block_tables;
  p.block_tables_hi = a.block_tables_hi;
  p.block_shifts = a.block_shifts;
  p.bt_stride = a.block_table_stride;
  p.context_lens = a.context_lens;
  p.cu_q_lens = cu_q_lens;
  p.inv_freq = a.rope_inv_freq;
  p.scale = a.softmax_scale;
  p.num_q_heads = a.num_q_heads;
  p.group = a.num_q_heads / s.kv_heads;
  p.head_dim = s.head_dim;
  p.block_size = s.block_size;
  p.out = static_cast<__nv_bfloat16*>(a.out);
  const dim3 grid(a.num_q_heads, max_q_len, num_seqs);
  if (a.block_shifts != nullptr) {
    GenericAttentionKernel<true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    GenericAttentionKernel<false><<<grid, kThreads, 0, stream>>>(p);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("generic attention launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
