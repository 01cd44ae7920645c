// float32 building blocks of the CPU forward pass.
//
// Batch invariance: every output element is computed by the same sequence
// of float operations whatever the number of rows in the call, the tiling or
// the thread that runs it, so a token's logits do not depend on what else is
// in the step (chunked prefill and mixed batches give bit-identical results;
// the tests rely on it).
//
// Stateless functions; thread-safe.
#ifndef MEMSHARE_ENGINE_CPU_KERNELS_H_
#define MEMSHARE_ENGINE_CPU_KERNELS_H_

#include <cstdint>

#include "engine/cpu/thread_pool.h"

namespace memshare::engine::cpu {

// Σ a[i] * b[i], eight interleaved partial sums added in a fixed order.
float Dot(const float* a, const float* b, int64_t n);

// y[r][j] = Σ_k x[r][k] * w[j][k]: x is [rows][k], w is [n][k] (a weight
// matrix as checkpoints store it, [out][in]), y is [rows][n]. Parallel over
// blocks of w's rows when `pool` is given and the product is large enough.
void MatMulTransposed(const float* x, int64_t rows, int64_t k, const float* w, int64_t n, float* y,
                      ThreadPool* pool);

// out[i] = weight[i] * (x[i] / sqrt(mean(x²) + eps)); out may alias x.
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// Rotary embedding, rotate-half convention, in place on one head:
// (x[i], x[i + d/2]) -> (x[i] cos[i] - x[i + d/2] sin[i], x[i + d/2] cos[i] + x[i] sin[i]).
void ApplyRope(float* x, int64_t head_dim, const float* cos, const float* sin);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

}  // namespace memshare::engine::cpu

#endif  // MEMSHARE_ENGINE_CPU_KERNELS_H_
