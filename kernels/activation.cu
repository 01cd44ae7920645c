#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/activation.h"
#include "kernels/device_util.cuh"

namespace memshare::kernels {
namespace {

using device::PackBf16x2;
using device::Silu;
using device::UnpackBf16x2;

constexpr int kThreads = 256;

// Grid: (ceil(inter / 8 / kThreads), n). One thread per 8 outputs.
// gate_up: bf16 [n][2 * inter]; out: bf16 [n][inter]
__global__ void __launch_bounds__(kThreads)
    SiluAndMulKernel(const uint4* __restrict__ gate_up, uint4* __restrict__ out, int inter_vecs) {
  device::AllowDependentLaunch();
  device::WaitForPrerequisites();
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i >= inter_vecs) return;
  const int64_t row = blockIdx.y;
  const uint4 g = __ldg(gate_up + row * 2 * inter_vecs + i);
  const uint4 u = __ldg(gate_up + row * 2 * inter_vecs + inter_vecs + i);
  const uint32_t* gp = &g.x;
  const uint32_t* up = &u.x;
  uint4 r;
  uint32_t* rp = &r.x;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 fg = UnpackBf16x2(gp[j]);
    const float2 fu = UnpackBf16x2(up[j]);
    rp[j] = PackBf16x2(Silu(fg.x) * fu.x, Silu(fg.y) * fu.y);
  }
  out[row * inter_vecs + i] = r;
}

}  // namespace

absl::Status LaunchSiluAndMul(const void* gate_up, void* out, int n, int inter,
                              cudaStream_t stream) {
  if (inter <= 0 || inter % 8 != 0 || n < 0 || n > 65535 ||
      reinterpret_cast<uintptr_t>(gate_up) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "silu_and_mul: inter ", inter, " must be a multiple of 8, n ", n,
        " at most 65535, buffers 16-byte aligned"));
  }
  if (n == 0) return absl::OkStatus();
  const int vecs = inter / 8;
  const dim3 grid((vecs + kThreads - 1) / kThreads, n);
  const cudaError_t err =
      device::LaunchDependent(SiluAndMulKernel, grid, dim3(kThreads), 0, stream,
                              static_cast<const uint4*>(gate_up), static_cast<uint4*>(out), vecs);
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("silu_and_mul launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
