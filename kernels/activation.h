// SiLU-and-multiply after the fused gate/up projection.
#ifndef MEMSHARE_KERNELS_ACTIVATION_H_
#define MEMSHARE_KERNELS_ACTIVATION_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace memshare::kernels {

// gate_up: bf16 [n][2 * inter], the gate half first (the fused gate_up
// weight is [gate; up]); out: bf16 [n][inter] = silu(gate) * up, fp32
// math, one rounding. inter a multiple of 8; buffers 16-byte aligned.
absl::Status LaunchSiluAndMul(const void* gate_up, void* out, int n, int inter,
                              cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_ACTIVATION_H_
