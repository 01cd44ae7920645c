#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda/shard_candidates.h"
#include "kernels/greedy_candidate.h"

namespace memshare::engine::cuda {
namespace {

using kernels::PackGreedyCandidate;

constexpr int kThreads = 128;

__global__ void PackKernel(const float* __restrict__ logits, int64_t stride, int rows,
                           const int32_t* __restrict__ tokens, int64_t token_offset,
                           uint64_t* __restrict__ out) {
  const int r = blockIdx.x * kThreads + threadIdx.x;
  if (r >= rows) return;
  const int32_t t = tokens[r];
  out[r] = PackGreedyCandidate(logits[int64_t{r} * stride + t],
                               static_cast<int32_t>(t + token_offset));
}

}  // namespace

absl::Status LaunchPackGreedyCandidates(const float* logits, int64_t stride, int rows,
                                        const int32_t* tokens, int64_t token_offset,
                                        uint64_t* out, cudaStream_t stream) {
  if (rows < 0 || stride <= 0 || token_offset < 0) {
    return absl::InvalidArgumentError(absl::StrCat("greedy candidates: rows ", rows, " stride ",
                                                   stride, " offset ", token_offset));
  }
  if (rows == 0) return absl::OkStatus();
  PackKernel<<<(rows + kThreads - 1) / kThreads, kThreads, 0, stream>>>(logits, stride, rows,
                                                                         tokens, token_offset, out);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("greedy candidates launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine::cuda
