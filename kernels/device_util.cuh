// Device helpers shared by the kernels of this package: bf16 packing,
// asynchronous copies, ldmatrix, the bf16 tensor-core MMA, warp reductions,
// the rotary embedding angle, programmatic dependent launch. A textual
// header of the cuda_library targets of kernels/ and of engine/parallel's
// all-reduce kernels; host code never includes it.
#ifndef MEMSHARE_KERNELS_DEVICE_UTIL_CUH_
#define MEMSHARE_KERNELS_DEVICE_UTIL_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace memshare::kernels::device {

// Two bf16 in one register, the first in the low half (memory order).
__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float2 UnpackBf16x2(uint32_t v) {
  // bf16 -> fp32 is a shift: exact, and cheaper than the conversion calls.
  return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u));
}

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1. With `src_bytes` 0 the
// destination is zero-filled and nothing is read.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void Ldmatrix4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void Ldmatrix4Trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// D = A (16x16, row) * B (16x8, col) + D, bf16 inputs, fp32 accumulators.
// Fragments (g = lane / 4, c = lane % 4):
//   a[0] = A[g][2c..2c+1]   a[1] = A[g+8][2c..]   a[2] = A[g][2c+8..]   a[3] = A[g+8][2c+8..]
//   b0 = B[2c..2c+1][g]     b1 = B[2c+8..2c+9][g]
//   d[0..1] = D[g][2c..2c+1]   d[2..3] = D[g+8][2c..2c+1]
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Programmatic dependent launch: lets the next kernel in the stream, when it
// was launched with programmatic stream serialization, start once every CTA
// of this grid has passed here. That kernel must itself wait
// (griddepcontrol.wait) before it reads what this grid writes; the kernels
// that follow a norm, an activation or attention (kernels/skinny_gemm) only
// stream their weights before then. Without such a successor it does nothing.
__device__ __forceinline__ void AllowDependentLaunch() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// The other half of programmatic dependent launch: in a kernel launched
// with LaunchDependent, waits until the grid before it in the stream has
// finished and its writes are visible. Everything before this line may run
// while that grid still runs, so it must neither read what that grid (or
// the one before it) writes nor write what they read. In a kernel launched
// the ordinary way it returns at once.
__device__ __forceinline__ void WaitForPrerequisites() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

// Launches `kernel` with programmatic stream serialization: its CTAs may be
// scheduled as soon as every CTA of the previous kernel in the stream has
// called AllowDependentLaunch (or exited), which hides the launch latency
// between back-to-back kernels of a decode step. The kernel must call
// WaitForPrerequisites before it touches memory its predecessors use.
// Inside stream capture this becomes a programmatic graph edge.
template <typename... Params, typename... Args>
cudaError_t LaunchDependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                            cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

// x * sigmoid(x) in fp32, as the SiLU pass and the gate/up GEMM's SwiGLU
// epilogue both compute it (the same function on either path).
__device__ __forceinline__ float Silu(float x) { return x / (1.f + __expf(-x)); }

__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// sin and cos of the rotary angle pos * inv_freq. The angle is the fp32
// product, as Hugging Face computes it; it is reduced to [-pi, pi] with a
// two-part 2*pi (exact for the angles of any context length in use) and the
// hardware sine/cosine (absolute error about 4e-7 there) finish.
__device__ __forceinline__ void RopeSinCos(float pos, float inv_freq, float* s, float* c) {
  const float a = pos * inv_freq;
  const float k = rintf(a * 0.159154943091895336f);
  float r = fmaf(-k, 6.28318548202514648f, a);  // fl32(2*pi)
  r = fmaf(-k, -1.74845553146951e-07f, r);      // 2*pi - fl32(2*pi)
  __sincosf(r, s, c);
}

// Rotates the pairs (x.lo, y.lo) and (x.hi, y.hi) of packed bf16 by the
// angles whose (sin, cos) are (s0, c0) and (s1, c1): neox-style rotate-half,
// x holding dimension i, y dimension i + head_dim / 2.
__device__ __forceinline__ void RotatePairs(uint32_t& x, uint32_t& y, float s0, float c0,
                                            float s1, float c1) {
  const float2 fx = UnpackBf16x2(x);
  const float2 fy = UnpackBf16x2(y);
  x = PackBf16x2(fx.x * c0 - fy.x * s0, fx.y * c1 - fy.y * s1);
  y = PackBf16x2(fy.x * c0 + fx.x * s0, fy.y * c1 + fx.y * s1);
}

}  // namespace memshare::kernels::device

#endif  // MEMSHARE_KERNELS_DEVICE_UTIL_CUH_
