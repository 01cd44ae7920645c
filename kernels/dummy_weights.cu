// Dummy weights drawn on the GPU (see dummy_weights.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/dummy_weights.h"

namespace memshare::kernels {
namespace {

constexpr int kThreads = 256;
constexpr double kPi = 3.14159265358979323846;

__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Grid-stride over out: bf16 [count].
__global__ void __launch_bounds__(kThreads)
    DummyNormalKernel(uint64_t key, float std, int64_t count, int64_t base, int64_t width,
                      int64_t full_row, __nv_bfloat16* __restrict__ out) {
  for (int64_t j = int64_t{blockIdx.x} * kThreads + threadIdx.x; j < count;
       j += int64_t{gridDim.x} * kThreads) {
    const uint64_t full = static_cast<uint64_t>(base + (j / width) * full_row + j % width);
    const uint64_t a = SplitMix64(key ^ SplitMix64(2 * full));
    const uint64_t b = SplitMix64(key ^ SplitMix64(2 * full + 1));
    const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1p-53;
    const double u2 = static_cast<double>(b >> 11) * 0x1p-53;
    const float n = static_cast<float>(sqrt(-2.0 * log(u1)) * cos(2.0 * kPi * u2));
    out[j] = __float2bfloat16_rn(std * n);
  }
}

}  // namespace

absl::Status LaunchDummyNormalBf16(uint64_t stream_key, float std, int64_t count, int64_t base,
                                   int64_t width, int64_t full_row, void* out,
                                   cudaStream_t stream) {
  if (count < 0 || width <= 0 || base < 0 || full_row < 0) {
    return absl::InvalidArgumentError(absl::StrCat("dummy weights: count ", count, ", width ",
                                                   width, ", base ", base, ", row ", full_row));
  }
  if (count == 0) return absl::OkStatus();
  const int64_t blocks = std::min<int64_t>((count + kThreads - 1) / kThreads, 132 * 64);
  DummyNormalKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      stream_key, std, count, base, width, full_row, static_cast<__nv_bfloat16*>(out));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("dummy weights launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::kernels
