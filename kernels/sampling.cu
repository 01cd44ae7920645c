#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/sampling.h"

namespace memshare::kernels {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
// Tokens more than this many (temperature-scaled) nats below the best have
// probability zero in fp32 and are never kept.
constexpr float kMassFloor = 87.f;

// Monotone map of floats to unsigned keys (NaN lowest, below -inf).
__device__ __forceinline__ uint32_t OrderedKey(float x) {
  if (x != x) return 0u;
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct Shared {
  float hist[256];
  float warp_f[kWarps];
  uint32_t warp_key[kWarps];
  int warp_idx[kWarps];
  float incl[kThreads];
  uint32_t sel_digit;
  float sel_above;
  int result;
};

__device__ float BlockSum(float v, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh.warp_f[warp] = v;
  __syncthreads();
  v = sh.warp_f[lane];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Largest key, lowest index among equals, over the block.
__device__ void BlockArgMax(uint32_t& key, int& idx, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  auto better = [](uint32_t k1, int i1, uint32_t k2, int i2) {
    return k1 > k2 || (k1 == k2 && i1 < i2);
  };
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const uint32_t k2 = __shfl_xor_sync(0xffffffffu, key, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
    if (better(k2, i2, key, idx)) key = k2, idx = i2;
  }
  __syncthreads();
  if (lane == 0) sh.warp_key[warp] = key, sh.warp_idx[warp] = idx;
  __syncthreads();
  key = sh.warp_key[lane];
  idx = sh.warp_idx[lane];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const uint32_t k2 = __shfl_xor_sync(0xffffffffu, key, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
    if (better(k2, i2, key, idx)) key = k2, idx = i2;
  }
}

// The smallest key t such that the tokens with floor <= key, key >= t hold
// at least `target` (count, or probability mass relative to the best), by
// radix selection over the keys, 8 bits a pass.
__device__ uint32_t RadixSelect(const float* row, int vocab, uint32_t floor_key, float target,
                                bool by_mass, float mx, float inv_t, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  uint32_t prefix = 0, mask = 0;
  float above = 0.f;  // count or mass of candidates above the current prefix
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kThreads) sh.hist[i] = 0.f;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = row[i];
      const uint32_t key = OrderedKey(x);
      if (key >= floor_key && (key & mask) == prefix) {
        atomicAdd(&sh.hist[(key >> shift) & 255u], by_mass ? expf((x - mx) * inv_t) : 1.f);
      }
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l owns bins 255 - 8l down to 248 - 8l: lane order is key order, descending.
      float bins[8];
      float own = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        bins[j] = sh.hist[255 - 8 * lane - j];
        own += bins[j];
      }
      float incl = own;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
      }
      const float excl = incl - own;
      const bool crosses = above + excl < target && above + incl >= target;
      const unsigned crossing = __ballot_sync(0xffffffffu, crosses);
      int chosen_lane;
      if (crossing != 0) {
        chosen_lane = __ffs(crossing) - 1;
      } else {
        // Rounding left the target out of reach: take the lowest non-empty bin.
        const unsigned nonempty = __ballot_sync(0xffffffffu, own > 0.f);
        chosen_lane = nonempty ? 31 - __clz(nonempty) : 0;
      }
      if (lane == chosen_lane) {
        float acc = above + excl;
        int digit = 255 - 8 * lane;
        int last_nonempty = digit;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (bins[j] > 0.f) last_nonempty = 255 - 8 * lane - j;
        }
        bool found = false;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (!found && crossing != 0 && acc + bins[j] >= target) {
            digit = 255 - 8 * lane - j;
            found = true;
          } else if (!found) {
            acc += bins[j];
          }
        }
        if (!found) {  // lowest non-empty bin; everything above it counts
          digit = last_nonempty;
          acc = above + excl;
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            if (255 - 8 * lane - j > digit) acc += bins[j];
          }
        }
        sh.sel_digit = static_cast<uint32_t>(digit);
        sh.sel_above = acc;
      }
    }
    __syncthreads();
    prefix |= sh.sel_digit << shift;
    mask |= 255u << shift;
    above = sh.sel_above;
    __syncthreads();
  }
  return prefix;
}

// Grid: (rows). Block: kThreads threads, one row each; the row is read a
// few times from L2 (max, selections, sums, the draw).
// logits: fp32 [rows][stride]; params: [rows]; penalty_*: CSR or null;
// out: int32 [rows]
__global__ void __launch_bounds__(kThreads)
    SampleKernel(float* logits, int64_t stride, int vocab, const SamplingRow* __restrict__ params,
                 const int32_t* __restrict__ pen_offsets, const int32_t* __restrict__ pen_tokens,
                 const int32_t* __restrict__ pen_counts, int32_t* __restrict__ out) {
  __shared__ Shared sh;
  const int r = blockIdx.x;
  float* row = logits + int64_t{r} * stride;
  const SamplingRow prm = params[r];

  if (pen_offsets != nullptr) {
    const bool rep = prm.repetition_penalty != 1.f;
    for (int i = pen_offsets[r] + threadIdx.x; i < pen_offsets[r + 1]; i += kThreads) {
      const int tok = pen_tokens[i];
      if (tok < 0 || tok >= vocab) continue;
      const int cnt = pen_counts[i];
      float x = row[tok];
      if (rep) x = x > 0.f ? x / prm.repetition_penalty : x * prm.repetition_penalty;
      x -= prm.presence_penalty * (cnt > 0 ? 1.f : 0.f) + prm.frequency_penalty * cnt;
      row[tok] = x;
    }
    __syncthreads();
  }

  uint32_t best_key = 0;
  int best_idx = 0x7fffffff;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const uint32_t k = OrderedKey(row[i]);
    if (k > best_key || (k == best_key && i < best_idx)) best_key = k, best_idx = i;
  }
  BlockArgMax(best_key, best_idx, sh);
  if (best_idx == 0x7fffffff) best_idx = 0;  // every logit NaN
  const float mx = row[best_idx];
  if (prm.temperature <= 0.f || !(mx > -INFINITY)) {
    if (threadIdx.x == 0) out[r] = best_idx;
    return;
  }
  const float temp = prm.temperature;
  const float inv_t = 1.f / temp;
  // Hugging Face's order: top-k, then top-p over the top-k survivors, then
  // min-p (relative to the best, so it only cuts further).
  uint32_t thr = OrderedKey(mx - kMassFloor * temp);
  if (prm.top_k > 0 && prm.top_k < vocab) {
    thr = max(thr, RadixSelect(row, vocab, thr, static_cast<float>(prm.top_k), false, mx, inv_t, sh));
  }
  if (prm.top_p < 1.f) {
    float z = 0.f;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float x = row[i];
      if (OrderedKey(x) >= thr) z += expf((x - mx) * inv_t);
    }
    z = BlockSum(z, sh);
    // At least the best token: a target of 0 would select nothing.
    const float target = fmaxf(fmaxf(prm.top_p, 0.f) * z, 1e-30f);
    thr = max(thr, RadixSelect(row, vocab, thr, target, true, mx, inv_t, sh));
  }
  if (prm.min_p > 0.f) {
    thr = max(thr, OrderedKey(mx + temp * logf(fminf(prm.min_p, 1.f))));
  }

  // The draw: thread t owns a contiguous segment of the vocabulary; an
  // inclusive scan of the segments' kept mass finds the segment, then the
  // token, where the cumulative mass passes u * total.
  const int seg = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, int(threadIdx.x) * seg);
  const int end = min(vocab, begin + seg);
  float own = 0.f;
  int last_kept = -1;
  for (int i = begin; i < end; ++i) {
    const float x = row[i];
    if (OrderedKey(x) >= thr) {
      own += expf((x - mx) * inv_t);
      last_kept = i;
    }
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float incl = own;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (lane == 31) sh.warp_f[warp] = incl;
  if (threadIdx.x == 0) sh.result = -1;
  __syncthreads();
  if (warp == 0) {
    const float w = sh.warp_f[lane];
    float wi = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float t = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += t;
    }
    sh.warp_f[lane] = wi - w;  // exclusive prefix of the warps
  }
  __syncthreads();
  // Each thread's interval starts exactly where the previous one's ends, so
  // the intervals partition [0, total) whatever the rounding.
  sh.incl[threadIdx.x] = incl + sh.warp_f[warp];
  __syncthreads();
  const float hi = sh.incl[threadIdx.x];
  const float lo = threadIdx.x == 0 ? 0.f : sh.incl[threadIdx.x - 1];
  const float target = fminf(fmaxf(prm.uniform, 0.f), 1.f) * sh.incl[kThreads - 1];
  if (lo <= target && target < hi) {
    float acc = lo;
    int pick = last_kept;
    for (int i = begin; i < end; ++i) {
      const float x = row[i];
      if (OrderedKey(x) >= thr) {
        acc += expf((x - mx) * inv_t);
        if (acc > target) {
          pick = i;
          break;
        }
      }
    }
    sh.result = pick;
  }
  // Fallback for a draw at the very top (rounding): the last kept token.
  int last = last_kept;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  if (lane == 0) sh.warp_idx[warp] = last;
  __syncthreads();
  if (threadIdx.x == 0) {
    int fallback = best_idx;
    for (int w = 0; w < kWarps; ++w) fallback = max(fallback, sh.warp_idx[w]);
    out[r] = sh.result >= 0 ? sh.result : fallback;
  }
}

}  // namespace

absl::Status LaunchSample(float* logits, int64_t logits_stride, int rows, int vocab,
                          const SamplingRow* params, const int32_t* penalty_offsets,
                          const int32_t* penalty_tokens, const int32_t* penalty_counts,
                          int32_t* out_tokens, cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || logits_stride < vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: bad shape rows ", rows, " vocab ", vocab, " stride ", logits_stride));
  }
  const bool any_pen = penalty_offsets != nullptr || penalty_tokens != nullptr ||
                       penalty_counts != nullptr;
  const bool all_pen = penalty_offsets != nullptr && penalty_tokens != nullptr &&
                       penalty_counts != nullptr;
  if (any_pen && !all_pen) {
    return absl::InvalidArgumentError("sample: penalty offsets, tokens and counts come together");
  }
  if (rows == 0) return absl::OkStatus();
  SampleKernel<<<rows, kThreads, 0, stream>>>(logits, logits_stride, vocab, params,
                                              penalty_offsets, penalty_tokens, penalty_counts,
                                              out_tokens);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("sample launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
