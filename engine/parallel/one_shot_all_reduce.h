// The one-shot all-reduce kernels of a two-rank group on one host (issue
// 7; the protocol and the buffers: all_reduce_path.h). Launchers only; the
// buffers are set up by NcclCommunicator.
#ifndef MEMSHARE_ENGINE_PARALLEL_ONE_SHOT_ALL_REDUCE_H_
#define MEMSHARE_ENGINE_PARALLEL_ONE_SHOT_ALL_REDUCE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::engine {

struct OneShotBuffers {
  // This rank's exchange buffer (one_shot::kBufferBytes, device, zeroed
  // before first use) and the peer's, mapped through CUDA IPC.
  void* local = nullptr;
  void* peer = nullptr;
  // uint32 [one_shot::kSlots], device, zeroed: this rank's count per slot.
  uint32_t* counts = nullptr;
  // Device pointer to a host-mapped int: nonzero makes every wait for the
  // peer give up (the group broke; results are garbage from then on).
  const int* abort = nullptr;
  // true: each rank writes its piece into the peer's staging slot (NVLink
  // stores) and reads the peer's from its own; false: each rank stages its
  // piece locally and reads the peer's over NVLink. The same on both ranks.
  bool push = true;
};

// data: bf16 [count], in place: the sum of both ranks' data. count a
// multiple of 8, count * 2 <= one_shot::kMaxBytes, data 16-byte aligned.
absl::Status LaunchOneShotAllReduceBf16(const OneShotBuffers& b, void* data, int64_t count,
                                        cudaStream_t stream);

// x: bf16 [rows][hidden], this rank's part (read only). residual = bf16(
// residual + bf16(x + peer's x)); out = RmsNorm(residual) * weight: the
// same bits as LaunchOneShotAllReduceBf16 (or NCCL's sum) followed by
// kernels::LaunchAddRmsNorm. rows <= one_shot::kSlots, hidden a multiple
// of 8 with hidden * 2 <= one_shot::kSlotBytes, pointers 16-byte aligned.
absl::Status LaunchOneShotAllReduceAddRmsNorm(const OneShotBuffers& b, const void* x,
                                              void* residual, const void* weight, void* out,
                                              int rows, int hidden, float eps, cudaStream_t stream);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_ONE_SHOT_ALL_REDUCE_H_
