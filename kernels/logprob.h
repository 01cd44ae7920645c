// Log-probabilities of sampled tokens under the model's own distribution
// (log-softmax of the raw logits, before penalties and temperature: what the
// CPU sampler and vLLM return), for a backend that samples on the device.
#ifndef MEMSHARE_KERNELS_LOGPROB_H_
#define MEMSHARE_KERNELS_LOGPROB_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

// lse[r] = log Σ_v exp(logits[r][v]) over the first `vocab` entries.
// logits: fp32 [rows][stride], device; lse: fp32 [rows], device.
absl::Status LaunchRowLogSumExp(const float* logits, int64_t stride, int rows, int vocab,
                                float* lse, cudaStream_t stream);

// out[r] = logits[r][tokens[r]] - lse[r]; NaN for a token outside
// [0, vocab). All device arrays of `rows` entries.
absl::Status LaunchTokenLogprob(const float* logits, int64_t stride, int rows, int vocab,
                                const int32_t* tokens, const float* lse, float* out,
                                cudaStream_t stream);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_LOGPROB_H_
