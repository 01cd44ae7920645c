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

__global__ void UnpackKernel(const uint64_t* __restrict__ candidates, int rows,
                             int32_t* __restrict__ tokens) {
  const int r = blockIdx.x * kThreads + threadIdx.x;
  if (r < rows) tokens[r] = kernels::GreedyCandidateToken(candidates[r]);
}

}  // namespace

absl::Status LaunchUnpackGreedyCandidates(const uint64_t* candidates, int rows, int32_t* tokens,
                                          cudaStream_t stream) {
  if (rows < 0 || (rows > 0 && (candidates == nullptr || tokens == nullptr))) {
    return absl::InvalidArgumentError(
        absl::StrCat("unpack greedy candidates: rows ", rows, " and both buffers required"));
  }
  if (rows == 0) return absl::OkStatus();
  UnpackKernel<<<(rows + kThreads - 1) / kThreads, kThreads, 0, stream>>>(candidates, rows, tokens);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("unpack greedy candidates launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

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
