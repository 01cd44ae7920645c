#include "engine/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace memshare::engine::cpu {
namespace {

// Eight float lanes as a GCC/Clang vector; the compiler maps it onto
// whatever SIMD width the target has (two SSE registers on baseline
// x86-64), without reassociating anything: each lane is its own sum.
// Loads go through an unaligned, aliasing variant of the type (and never
// pass a V8 by value: without AVX that would change the calling convention).
typedef float V8 __attribute__((vector_size(32)));
typedef float V8Unaligned __attribute__((vector_size(32), aligned(4), may_alias));

#define LOAD8(p) (*reinterpret_cast<const V8Unaligned*>(p))

inline float Reduce(const V8& v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// Rows of w per block: each x row is read once per block.
constexpr int64_t kRowBlock = 4;

// y[r][j0..j0+4) for every r; w points at row j0.
void Block4(const float* x, int64_t rows, int64_t k, const float* w, int64_t n, float* y) {
  const int64_t k8 = k & ~int64_t{7};
  const float* w0 = w;
  const float* w1 = w + k;
  const float* w2 = w + 2 * k;
  const float* w3 = w + 3 * k;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    V8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t i = 0; i < k8; i += 8) {
      const V8 xv = LOAD8(xr + i);
      a0 += LOAD8(w0 + i) * xv;
      a1 += LOAD8(w1 + i) * xv;
      a2 += LOAD8(w2 + i) * xv;
      a3 += LOAD8(w3 + i) * xv;
    }
    float s0 = Reduce(a0), s1 = Reduce(a1), s2 = Reduce(a2), s3 = Reduce(a3);
    for (int64_t i = k8; i < k; ++i) {
      s0 += w0[i] * xr[i];
      s1 += w1[i] * xr[i];
      s2 += w2[i] * xr[i];
      s3 += w3[i] * xr[i];
    }
    float* yr = y + r * n;
    yr[0] = s0;
    yr[1] = s1;
    yr[2] = s2;
    yr[3] = s3;
  }
}

void RowRange(const float* x, int64_t rows, int64_t k, const float* w, int64_t n, float* y,
              int64_t j_begin, int64_t j_end) {
  int64_t j = j_begin;
  for (; j + kRowBlock <= j_end; j += kRowBlock) Block4(x, rows, k, w + j * k, n, y + j);
  for (; j < j_end; ++j) {
    for (int64_t r = 0; r < rows; ++r) y[r * n + j] = Dot(w + j * k, x + r * k, k);
  }
}

}  // namespace

float Dot(const float* a, const float* b, int64_t n) {
  // The same operations, in the same order, as one lane of Block4.
  const int64_t n8 = n & ~int64_t{7};
  V8 acc = {};
  for (int64_t i = 0; i < n8; i += 8) acc += LOAD8(a + i) * LOAD8(b + i);
  float s = Reduce(acc);
  for (int64_t i = n8; i < n; ++i) s += a[i] * b[i];
  return s;
}

void MatMulTransposed(const float* x, int64_t rows, int64_t k, const float* w, int64_t n, float* y,
                      ThreadPool* pool) {
  // Below this many multiply-adds, waking the workers costs more than it saves.
  constexpr int64_t kParallelWork = int64_t{1} << 19;
  if (pool == nullptr || pool->num_threads() == 1 || rows * k * n < kParallelWork) {
    RowRange(x, rows, k, w, n, y, 0, n);
    return;
  }
  // Blocks of w's rows, a few per thread for balance, whole kRowBlocks.
  const int64_t blocks = (n + kRowBlock - 1) / kRowBlock;
  const int64_t per_chunk = std::max<int64_t>(1, blocks / (4 * pool->num_threads()));
  pool->ParallelFor(blocks, per_chunk, [&](int64_t b, int64_t e) {
    RowRange(x, rows, k, w, n, y, b * kRowBlock, std::min(n, e * kRowBlock));
  });
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  const float mean_sq = Dot(x, x, n) / static_cast<float>(n);
  const float inv = 1.0f / std::sqrt(mean_sq + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

void ApplyRope(float* x, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i];
    const float b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i] + a * sin[i];
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace memshare::engine::cpu
