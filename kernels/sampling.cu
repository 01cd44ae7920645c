#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/greedy_candidate.h"
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

// Calls f(i, row[i]) for every i < vocab, the elements split across the
// block. kVec: 16-byte loads, four in flight per thread (the row is 16-byte
// aligned); a pass is bound by the latency of its loads otherwise.
template <bool kVec, typename F>
__device__ __forceinline__ void ForEach(const float* row, int vocab, F&& f) {
  int tail = 0;
  if constexpr (kVec) {
    const float4* v = reinterpret_cast<const float4*>(row);
    const int nv = vocab >> 2;
    int j = threadIdx.x;
    for (; j + 3 * kThreads < nv; j += 4 * kThreads) {
      float4 q[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) q[u] = v[j + u * kThreads];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int b = 4 * (j + u * kThreads);
        f(b, q[u].x);
        f(b + 1, q[u].y);
        f(b + 2, q[u].z);
        f(b + 3, q[u].w);
      }
    }
    for (; j < nv; j += kThreads) {
      const float4 q = v[j];
      f(4 * j, q.x);
      f(4 * j + 1, q.y);
      f(4 * j + 2, q.z);
      f(4 * j + 3, q.w);
    }
    tail = 4 * nv;
  }
  for (int i = tail + threadIdx.x; i < vocab; i += kThreads) f(i, row[i]);
}

// Calls f(i, row[i]) for the elements of quads [q0, q1) in order (one
// thread's contiguous segment); f returns false to stop.
template <bool kVec, typename F>
__device__ __forceinline__ void ForSegment(const float* row, int vocab, int q0, int q1, F&& f) {
  for (int qd = q0; qd < q1; ++qd) {
    const int n = min(4, vocab - 4 * qd);
    float x[4];
    if (kVec && n == 4) {
      const float4 t = reinterpret_cast<const float4*>(row)[qd];
      x[0] = t.x, x[1] = t.y, x[2] = t.z, x[3] = t.w;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) x[k] = k < n ? row[4 * qd + k] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (k < n && !f(4 * qd + k, x[k])) return;
    }
  }
}

constexpr int kBins = 256;
// Candidate tokens gathered for the cuts in shared memory
// (GatherCandidates), in the memory of the per-warp histograms.
constexpr int kCandidates = 4096;

struct Shared {
  union {
    float warp_hist[kWarps][kBins];  // per-warp histograms: no atomics across warps
    int warp_count[kWarps][kBins];   // the same with integer counts
    struct {
      float val[kCandidates];
      int idx[kCandidates];
    } cand;
  };
  static_assert(sizeof(cand) <= sizeof(warp_hist), "candidates fit the histograms' memory");
  int count[kBins];  // TopKFromCandidates: tokens a coarse bin
  float hist[kBins];
  float warp_f[kWarps];
  uint32_t warp_key[kWarps];
  int warp_idx[kWarps];
  float incl[kThreads];
  int sel_bin;
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

// sh.hist[b] = the count (or mass relative to the best) of the row's
// elements that bin_of maps to b in [0, kBins); bin_of returns -1 to skip.
// Bin order is value order, descending: bin 0 holds the largest values.
template <bool kVec, typename BinOf>
__device__ void Histogram(const float* row, int vocab, bool by_mass, float mx, float inv_t,
                          BinOf bin_of, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float* wh = sh.warp_hist[warp];
  for (int i = lane; i < kBins; i += 32) wh[i] = 0.f;
  __syncwarp();
  ForEach<kVec>(row, vocab, [&](int, float x) {
    const int b = bin_of(x);
    if (b >= 0) atomicAdd(&wh[b], by_mass ? expf((x - mx) * inv_t) : 1.f);
  });
  __syncthreads();
  if (threadIdx.x < kBins) {
    float sum = 0.f;
#pragma unroll 8
    for (int w = 0; w < kWarps; ++w) sum += sh.warp_hist[w][threadIdx.x];
    sh.hist[threadIdx.x] = sum;
  }
  __syncthreads();
}

// The first bin (in value order, descending) at which `above` plus the
// weight of the bins before it and the bin itself reaches `target`; when
// rounding leaves the target out of reach, the last non-empty bin. Writes
// the bin and the weight before it (above included) to sh.sel_*.
__device__ void FindCrossing(float above, float target, Shared& sh) {
  const int lane = threadIdx.x & 31;
  if (threadIdx.x < 32) {
    float bins[8];
    float own = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      bins[j] = sh.hist[8 * lane + j];
      own += bins[j];
    }
    float incl = own;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float t = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += t;
    }
    const float excl = incl - own;
    const unsigned crossing =
        __ballot_sync(0xffffffffu, above + excl < target && above + incl >= target);
    const unsigned nonempty = __ballot_sync(0xffffffffu, own > 0.f);
    const int chosen = crossing != 0 ? __ffs(crossing) - 1 : (nonempty ? 31 - __clz(nonempty) : 0);
    if (lane == chosen) {
      int bin = -1;
      int last_nonempty = 8 * lane;
      float acc = above + excl;
      float acc_at_last = acc;
      float run = acc;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (bins[j] > 0.f) last_nonempty = 8 * lane + j, acc_at_last = run;
        if (bin < 0 && crossing != 0 && run + bins[j] >= target) bin = 8 * lane + j, acc = run;
        run += bins[j];
      }
      if (bin < 0) bin = last_nonempty, acc = acc_at_last;
      sh.sel_bin = bin;
      sh.sel_above = acc;
    }
  }
  __syncthreads();
}

// Bins of distance from the best logit: kBins over kMassFloor nats.
struct Coarse {
  float mx, scale;
  __device__ int operator()(float x) const {
    return min(kBins - 1, static_cast<int>((mx - x) * scale));
  }
};
__device__ Coarse CoarseBins(float mx, float inv_t) { return {mx, inv_t * (kBins / kMassFloor)}; }

// The smallest key t such that the candidates (key >= floor_key) with
// key >= t hold at least `target` (a count, or mass relative to the best),
// in two halves. CoarseSelect: one pass bins the candidates by distance
// from the best logit (256 bins over kMassFloor nats: spread out, so few
// atomics collide) and finds the bin where the target is reached
// (sh.sel_bin; the weight of the bins before it in sh.sel_above, and each
// bin's weight in sh.hist). RefineSelect: radix passes over 8 bits of the
// key at a time inside that bin, which holds few elements.
template <bool kVec>
__device__ void CoarseSelect(const float* row, int vocab, uint32_t floor_key, float target,
                             bool by_mass, float mx, float inv_t, Shared& sh) {
  const Coarse coarse = CoarseBins(mx, inv_t);
  Histogram<kVec>(row, vocab, by_mass, mx, inv_t,
                  [=](float x) { return OrderedKey(x) >= floor_key ? coarse(x) : -1; }, sh);
  FindCrossing(0.f, target, sh);
}

template <bool kVec>
__device__ uint32_t RefineSelect(const float* row, int vocab, uint32_t floor_key, float target,
                                 bool by_mass, float mx, float inv_t, int cbin, float above,
                                 Shared& sh) {
  const Coarse coarse = CoarseBins(mx, inv_t);
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    Histogram<kVec>(row, vocab, by_mass, mx, inv_t,
              [=](float x) {
                const uint32_t key = OrderedKey(x);
                if (key < floor_key || (key & mask) != prefix || coarse(x) != cbin) return -1;
                return kBins - 1 - static_cast<int>((key >> shift) & 255u);
              },
              sh);
    FindCrossing(above, target, sh);
    prefix |= static_cast<uint32_t>(kBins - 1 - sh.sel_bin) << shift;
    mask |= 255u << shift;
    above = sh.sel_above;
  }
  return prefix;
}

// Sorts the candidates [0, n) (n <= kCandidates) so that before(a, b) holds
// for a listed before b (bitonic, padded to a power of two with entries
// that sort last in both orders used: value -inf, index INT_MAX).
template <typename Before>
__device__ void SortCandidates(int n, Before before, Shared& sh) {
  int size = 2;
  while (size < n) size <<= 1;
  for (int i = n + threadIdx.x; i < size; i += kThreads) {
    sh.cand.val[i] = -INFINITY;
    sh.cand.idx[i] = 0x7fffffff;
  }
  __syncthreads();
  for (int k = 2; k <= size; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < size; i += kThreads) {
        const int l = i ^ j;
        if (l <= i) continue;
        const bool forward = (i & k) == 0;
        if (forward ? before(l, i) : before(i, l)) {
          const float v = sh.cand.val[i];
          sh.cand.val[i] = sh.cand.val[l];
          sh.cand.val[l] = v;
          const int x = sh.cand.idx[i];
          sh.cand.idx[i] = sh.cand.idx[l];
          sh.cand.idx[l] = x;
        }
      }
      __syncthreads();
    }
  }
}

// sh.incl[t] = the sum of `own` over threads 0 .. t (in thread order; the
// block's total in sh.incl[kThreads - 1]). Starts and ends with a barrier.
__device__ void BlockInclusiveScan(float own, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float incl = own;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  __syncthreads();  // the previous readers of sh.warp_f and sh.incl are done
  if (lane == 31) sh.warp_f[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const float wt = sh.warp_f[lane];
    float wi = wt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float t = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += t;
    }
    sh.warp_f[lane] = wi - wt;  // exclusive prefix of the warps
  }
  __syncthreads();
  sh.incl[threadIdx.x] = incl + sh.warp_f[warp];
  __syncthreads();
}

// The first j < m at which the running sum of w(0) .. w(j) reaches
// target_of(total) (>= target, or > target when `strict`), m when none:
// thread t sums a contiguous run of j, then an exclusive scan of the runs.
template <typename W, typename TargetOf>
__device__ int FirstCrossingOf(int m, W w, TargetOf target_of, bool strict, Shared& sh) {
  const int per = (m + kThreads - 1) / kThreads;
  const int j0 = min(m, int(threadIdx.x) * per);
  const int j1 = min(m, j0 + per);
  float own = 0.f;
  for (int j = j0; j < j1; ++j) own += w(j);
  __syncthreads();  // the previous call's result has been read
  if (threadIdx.x == 0) sh.result = m;
  BlockInclusiveScan(own, sh);
  const float target = target_of(sh.incl[kThreads - 1]);
  float acc = sh.incl[threadIdx.x] - own;
  for (int j = j0; j < j1; ++j) {
    acc += w(j);
    if (strict ? acc > target : acc >= target) {
      atomicMin(&sh.result, j);
      break;
    }
  }
  __syncthreads();
  return sh.result;
}

// How many of the candidates [0, n), sorted by value descending, are at
// least `cut`.
__device__ int CountAtLeast(int n, float cut, Shared& sh) {
  __syncthreads();  // the previous result has been read
  if (threadIdx.x == 0) {
    int lo = 0, hi = n;  // the first index below cut
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (sh.cand.val[mid] >= cut) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    sh.result = lo;
  }
  __syncthreads();
  return sh.result;
}

// The tokens within kMassFloor of the best whose coarse bin is at most
// last_bin, into sh.cand (any order): their count, or -1 when more than
// kCandidates.
template <bool kVec>
__device__ int GatherCandidates(const float* row, int vocab, uint32_t floor_key, Coarse coarse,
                                int last_bin, Shared& sh) {
  __syncthreads();  // sh.result's last reader is done
  if (threadIdx.x == 0) sh.result = 0;
  __syncthreads();
  ForEach<kVec>(row, vocab, [&](int i, float x) {
    if (OrderedKey(x) < floor_key || coarse(x) > last_bin) return;
    const int at = atomicAdd(&sh.result, 1);
    if (at < kCandidates) {
      sh.cand.val[at] = x;
      sh.cand.idx[at] = i;
    }
  });
  __syncthreads();
  const int n = sh.result;
  return n <= kCandidates ? n : -1;
}

// The rest of the row's sampling from its gathered candidates, which hold
// every token the cuts below can keep: sorted by value, cut as top-k (when
// `top_k`), top-p (of the top-k survivors' mass, or of `z`, the mass of
// every token within the floor, when top-k is off) and min-p say, sorted by
// index and drawn from by inverse CDF in vocabulary order. The same kept
// set and draw as the general path up to the order of fp32 additions.
__device__ void FinishFromCandidates(int n, const SamplingRow& prm, bool top_k, float z, float mx,
                                     int best_idx, int32_t* out, Shared& sh) {
  const float temp = prm.temperature;
  const float inv_t = 1.f / temp;
  // By value, descending (lowest index first among equals).
  SortCandidates(
      n,
      [&](int a, int b) {
        const float va = sh.cand.val[a], vb = sh.cand.val[b];
        return va > vb || (va == vb && sh.cand.idx[a] < sh.cand.idx[b]);
      },
      sh);
  auto mass_of = [&](int j) { return expf((sh.cand.val[j] - mx) * inv_t); };
  int m = n;  // kept: the first m candidates
  if (top_k && prm.top_k <= n) m = CountAtLeast(n, sh.cand.val[prm.top_k - 1], sh);
  if (prm.top_p < 1.f) {
    // At least the best token: a target of 0 would select nothing. When
    // rounding leaves the target out of reach, every candidate stays.
    const int j = FirstCrossingOf(
        m, mass_of,
        [&](float total) { return fmaxf(fmaxf(prm.top_p, 0.f) * (top_k ? total : z), 1e-30f); },
        false, sh);
    if (j < m) m = CountAtLeast(m, sh.cand.val[j], sh);
  }
  if (prm.min_p > 0.f) {
    m = min(m, CountAtLeast(m, mx + temp * logf(fminf(prm.min_p, 1.f)), sh));
  }
  m = max(m, 1);  // the best token is always first
  // The draw, in vocabulary order.
  SortCandidates(
      m, [&](int a, int b) { return sh.cand.idx[a] < sh.cand.idx[b]; }, sh);
  const float u = fminf(fmaxf(prm.uniform, 0.f), 1.f);
  const int pick = FirstCrossingOf(
      m, mass_of, [&](float total) { return u * total; }, true, sh);
  if (threadIdx.x == 0) {
    // Past the end (rounding at the very top): the last kept token.
    out[0] = pick < m ? sh.cand.idx[pick] : (m > 0 ? sh.cand.idx[m - 1] : best_idx);
  }
}

// Top-k (then top-p and min-p) where k is small: one pass counts the row's
// tokens within the floor by coarse bin (integer atomics), the bins up to
// the one where the count reaches k are gathered and the rest is done in
// shared memory. False, having written nothing, when the gathered tokens
// would not fit (k near kCandidates with many ties of the k-th bin).
template <bool kVec>
__device__ bool TopKFromCandidates(const float* row, int vocab, const SamplingRow& prm, float mx,
                                   int best_idx, int32_t* out, Shared& sh) {
  const float inv_t = 1.f / prm.temperature;
  const uint32_t floor_key = OrderedKey(mx - kMassFloor * prm.temperature);
  const Coarse coarse = CoarseBins(mx, inv_t);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int i = lane; i < kBins; i += 32) sh.warp_count[warp][i] = 0;
  __syncwarp();
  ForEach<kVec>(row, vocab, [&](int, float x) {
    if (OrderedKey(x) >= floor_key) atomicAdd(&sh.warp_count[warp][coarse(x)], 1);
  });
  __syncthreads();
  if (threadIdx.x < kBins) {
    int sum = 0;
#pragma unroll 8
    for (int w = 0; w < kWarps; ++w) sum += sh.warp_count[w][threadIdx.x];
    sh.count[threadIdx.x] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int last = kBins - 1;  // every token within the floor when fewer than k
    for (int b = 0, n = 0; b < kBins; ++b) {
      n += sh.count[b];
      if (n >= prm.top_k) {
        last = b;
        break;
      }
    }
    sh.sel_bin = last;
  }
  __syncthreads();
  const int n = GatherCandidates<kVec>(row, vocab, floor_key, coarse, sh.sel_bin, sh);
  if (n < 0) return false;
  FinishFromCandidates(n, prm, /*top_k=*/true, 0.f, mx, best_idx, out, sh);
  return true;
}

// Grid: (rows). Block: kThreads threads, one row each; the row is read a
// few times from L2 (max, selections, sums, the draw).
// logits: fp32 [rows][stride]; params: [rows]; penalty_*: CSR or null;
// out: int32 [rows]
template <bool kVec>
__global__ void __launch_bounds__(kThreads, 1)
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
  ForEach<kVec>(row, vocab, [&](int i, float x) {
    const uint32_t k = OrderedKey(x);
    if (k > best_key || (k == best_key && i < best_idx)) best_key = k, best_idx = i;
  });
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
  // Where the cuts can keep few tokens, the rest runs in shared memory over
  // those candidates (TopKFromCandidates, FinishFromCandidates): three or
  // four passes over the row instead of up to fourteen.
  const bool top_k = prm.top_k > 0 && prm.top_k < vocab;
  if (top_k && prm.top_k <= kCandidates &&
      TopKFromCandidates<kVec>(row, vocab, prm, mx, best_idx, out + r, sh)) {
    return;
  }
  uint32_t thr = OrderedKey(mx - kMassFloor * temp);
  if (top_k) {
    const float k = static_cast<float>(prm.top_k);
    CoarseSelect<kVec>(row, vocab, thr, k, false, mx, inv_t, sh);
    thr = max(thr, RefineSelect<kVec>(row, vocab, thr, k, false, mx, inv_t, sh.sel_bin,
                                      sh.sel_above, sh));
  }
  if (prm.top_p < 1.f) {
    float z = 0.f;
    ForEach<kVec>(row, vocab, [&](int, float x) {
      if (OrderedKey(x) >= thr) z += expf((x - mx) * inv_t);
    });
    z = BlockSum(z, sh);
    // At least the best token: a target of 0 would select nothing.
    const float target = fmaxf(fmaxf(prm.top_p, 0.f) * z, 1e-30f);
    CoarseSelect<kVec>(row, vocab, thr, target, true, mx, inv_t, sh);
    const int cbin = sh.sel_bin;
    const float above = sh.sel_above;
    if (!top_k) {
      // The tokens up to the crossing bin, if few: each bin's mass (relative
      // to the best) bounds its count, as its tokens lie between the bin's
      // edges; the gather finds out when the bound is loose.
      float lower = 0.f;
      for (int b = threadIdx.x & 31; b <= cbin; b += 32) {
        lower += sh.hist[b] * expf(b * (kMassFloor / kBins));
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) lower += __shfl_xor_sync(0xffffffffu, lower, o);
      if (lower <= kCandidates) {  // the same sum in every warp
        const int n = GatherCandidates<kVec>(row, vocab, thr, CoarseBins(mx, inv_t), cbin, sh);
        if (n >= 0) {
          FinishFromCandidates(n, prm, /*top_k=*/false, z, mx, best_idx, out + r, sh);
          return;
        }
      }
    }
    thr = max(thr, RefineSelect<kVec>(row, vocab, thr, target, true, mx, inv_t, cbin, above, sh));
  }
  if (prm.min_p > 0.f) {
    thr = max(thr, OrderedKey(mx + temp * logf(fminf(prm.min_p, 1.f))));
  }

  // The draw: thread t owns a contiguous segment of the vocabulary; an
  // inclusive scan of the segments' kept mass finds the segment, then the
  // token, where the cumulative mass passes u * total.
  const int quads = (vocab + 3) / 4;
  const int per_thread = (quads + kThreads - 1) / kThreads;
  const int q0 = min(quads, int(threadIdx.x) * per_thread);
  const int q1 = min(quads, q0 + per_thread);
  float own = 0.f;
  int last_kept = -1;
  ForSegment<kVec>(row, vocab, q0, q1, [&](int i, float x) {
    if (OrderedKey(x) >= thr) {
      own += expf((x - mx) * inv_t);
      last_kept = i;
    }
    return true;
  });
  if (threadIdx.x == 0) sh.result = -1;
  // Each thread's interval starts exactly where the previous one's ends, so
  // the intervals partition [0, total) whatever the rounding.
  BlockInclusiveScan(own, sh);
  const float hi = sh.incl[threadIdx.x];
  const float lo = threadIdx.x == 0 ? 0.f : sh.incl[threadIdx.x - 1];
  const float target = fminf(fmaxf(prm.uniform, 0.f), 1.f) * sh.incl[kThreads - 1];
  if (lo <= target && target < hi) {
    float acc = lo;
    int pick = last_kept;
    ForSegment<kVec>(row, vocab, q0, q1, [&](int i, float x) {
      if (OrderedKey(x) >= thr) {
        acc += expf((x - mx) * inv_t);
        if (acc > target) {
          pick = i;
          return false;
        }
      }
      return true;
    });
    sh.result = pick;
  }
  // Fallback for a draw at the very top (rounding): the last kept token.
  int last = last_kept;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  if ((threadIdx.x & 31) == 0) sh.warp_idx[threadIdx.x >> 5] = last;
  __syncthreads();
  if (threadIdx.x == 0) {
    int fallback = best_idx;
    for (int w = 0; w < kWarps; ++w) fallback = max(fallback, sh.warp_idx[w]);
    out[r] = sh.result >= 0 ? sh.result : fallback;
  }
}

// Grid: (rows). Block: kGreedyThreads threads, the row's candidates strided
// over them, then the block's maximum.
constexpr int kGreedyThreads = 256;
__global__ void __launch_bounds__(kGreedyThreads)
    GreedyFromCandidatesKernel(const uint64_t* __restrict__ candidates, int parts,
                               int32_t* __restrict__ out, int32_t* __restrict__ out_copy,
                               const int32_t* __restrict__ out_offset) {
  __shared__ uint64_t warp_best[kGreedyThreads / 32];
  const uint64_t* row = candidates + int64_t{blockIdx.x} * parts;
  uint64_t best = 0;
  for (int i = threadIdx.x; i < parts; i += kGreedyThreads) best = max(best, row[i]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
  if ((threadIdx.x & 31) == 0) warp_best[threadIdx.x >> 5] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kGreedyThreads / 32; ++w) best = max(best, warp_best[w]);
    const int32_t token = GreedyCandidateToken(best);
    out[(out_offset != nullptr ? *out_offset : 0) + blockIdx.x] = token;
    if (out_copy != nullptr) out_copy[blockIdx.x] = token;
  }
}

}  // namespace

absl::Status LaunchGreedyFromCandidates(const uint64_t* candidates, int parts, int rows,
                                        int32_t* out, cudaStream_t stream, int32_t* out_copy,
                                        const int32_t* out_offset) {
  if (rows < 0 || parts <= 0 || (rows > 0 && (candidates == nullptr || out == nullptr))) {
    return absl::InvalidArgumentError(
        absl::StrCat("greedy from candidates: rows ", rows, ", parts ", parts, " (>= 1)"));
  }
  if (rows == 0) return absl::OkStatus();
  GreedyFromCandidatesKernel<<<rows, kGreedyThreads, 0, stream>>>(candidates, parts, out, out_copy,
                                                                  out_offset);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("greedy from candidates launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

namespace {

// Grid: (rows). Block: kThreads threads, the row's list strided over them.
__global__ void __launch_bounds__(kThreads)
    CountFedTokensKernel(const SamplingRow* __restrict__ params,
                         const int32_t* __restrict__ pen_offsets, int32_t* __restrict__ pen_tokens,
                         int32_t* __restrict__ pen_counts, const int32_t* __restrict__ feed,
                         int32_t vocab_begin, int32_t vocab_end) {
  __shared__ int found;
  const int r = blockIdx.x;
  const int fed_row = params[r].fed_row;
  if (fed_row < 0) return;
  const int global = feed[fed_row];
  if (global < vocab_begin || global >= vocab_end) return;  // another shard's token
  const int token = global - vocab_begin;
  const int begin = pen_offsets[r];
  const int last = pen_offsets[r + 1] - 1;  // the placeholder
  if (last < begin) return;
  if (threadIdx.x == 0) found = 0;
  __syncthreads();
  for (int i = begin + threadIdx.x; i < last; i += kThreads) {
    if (pen_tokens[i] == token) {  // listed once at most
      pen_counts[i] += 1;
      found = 1;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && !found) {
    pen_tokens[last] = token;
    pen_counts[last] = 1;
  }
}

}  // namespace

absl::Status LaunchCountFedTokens(const SamplingRow* params, int rows,
                                  const int32_t* penalty_offsets, int32_t* penalty_tokens,
                                  int32_t* penalty_counts, const int32_t* feed, cudaStream_t stream,
                                  int32_t vocab_begin, int32_t vocab_end) {
  if (rows < 0 || vocab_begin < 0 || vocab_end <= vocab_begin ||
      (rows > 0 && (params == nullptr || penalty_offsets == nullptr || penalty_tokens == nullptr ||
                    penalty_counts == nullptr || feed == nullptr))) {
    return absl::InvalidArgumentError(absl::StrCat("count fed tokens: rows ", rows,
                                                   ", vocabulary range [", vocab_begin, ", ",
                                                   vocab_end, ") and every buffer required"));
  }
  if (rows == 0) return absl::OkStatus();
  CountFedTokensKernel<<<rows, kThreads, 0, stream>>>(params, penalty_offsets, penalty_tokens,
                                                      penalty_counts, feed, vocab_begin, vocab_end);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("count fed tokens launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

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
  const bool vec = logits_stride % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  if (vec) {
    SampleKernel<true><<<rows, kThreads, 0, stream>>>(logits, logits_stride, vocab, params,
                                                      penalty_offsets, penalty_tokens,
                                                      penalty_counts, out_tokens);
  } else {
    SampleKernel<false><<<rows, kThreads, 0, stream>>>(logits, logits_stride, vocab, params,
                                                       penalty_offsets, penalty_tokens,
                                                       penalty_counts, out_tokens);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("sample launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
