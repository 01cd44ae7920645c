// The greedy candidates of a vocabulary shard's rows (greedy_candidate.h),
// on the GPU: launcher only.
#ifndef MEMSHARE_ENGINE_CUDA_SHARD_CANDIDATES_H_
#define MEMSHARE_ENGINE_CUDA_SHARD_CANDIDATES_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::engine::cuda {

// out[r] = PackGreedyCandidate(logits[r][tokens[r]], tokens[r] +
// token_offset) for r < rows: tokens (int32 [rows], device) are the shard's
// greedy picks (kernels::LaunchSample over the shard, indices into it),
// logits (fp32 [rows][stride], device) the shard's logits as the sampler
// left them (penalties applied), token_offset the shard's first token id.
// out: uint64 [rows], device. INVALID_ARGUMENT for a bad shape.
absl::Status LaunchPackGreedyCandidates(const float* logits, int64_t stride, int rows,
                                        const int32_t* tokens, int64_t token_offset,
                                        uint64_t* out, cudaStream_t stream);

// tokens[r] = GreedyCandidateToken(candidates[r]) for r < rows: the greedy
// tokens of rows whose candidates were reduced over every shard, on the
// device (a fed next step reads them there). tokens: int32 [rows], device.
absl::Status LaunchUnpackGreedyCandidates(const uint64_t* candidates, int rows, int32_t* tokens,
                                          cudaStream_t stream);

}  // namespace memshare::engine::cuda

#endif  // MEMSHARE_ENGINE_CUDA_SHARD_CANDIDATES_H_
