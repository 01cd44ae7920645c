// The one-shot all-reduce kernels of a group of 2 .. one_shot::kMaxRanks
// ranks on one host (issue 7; the protocol and the buffers:
// all_reduce_path.h). Launchers only; the buffers are set up by
// NcclCommunicator.
#ifndef MEMSHARE_ENGINE_PARALLEL_ONE_SHOT_ALL_REDUCE_H_
#define MEMSHARE_ENGINE_PARALLEL_ONE_SHOT_ALL_REDUCE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace memshare::engine {

// Passed by value to the kernels.
struct OneShotBuffers {
  static constexpr int kMaxRanks = 8;  // one_shot::kMaxRanks
  // This rank and the group's size, 2 .. kMaxRanks.
  int rank = 0;
  int world = 0;
  // Every rank's exchange buffer (one_shot::BufferBytes(world), device,
  // zeroed before first use) as this rank addresses it: buffers[rank] is
  // this rank's own, the others are mapped through CUDA IPC.
  void* buffers[kMaxRanks] = {};
  // uint32 [one_shot::kSlots], device, zeroed: this rank's count per slot
  // (flag protocol), and the same for the Lamport staging.
  uint32_t* counts = nullptr;
  uint32_t* lamport_counts = nullptr;
  // Device pointer to a host-mapped int: nonzero makes every wait for a
  // peer give up (the group broke; results are garbage from then on).
  const int* abort = nullptr;
  // true: each rank writes its piece into every peer's staging (NVLink
  // stores) and reads the peers' from its own buffer; false: each rank
  // stages its piece locally and reads the peers' over NVLink. The same on
  // every rank.
  bool push = true;
  // bf16 sums (plain and fused) through the Lamport staging
  // (all_reduce_path.h) instead of flags; the same on every rank.
  bool lamport = false;
};

// data: bf16 [count], in place: the sum of every rank's data (fp32, in rank
// order, rounded once: the same bits on every rank; with two ranks the
// bits of bf16(a + b); Lamport: NaN payloads aside). count a multiple of 8, count * 2 <=
// one_shot::kMaxBytes, data 16-byte aligned.
absl::Status LaunchOneShotAllReduceBf16(const OneShotBuffers& b, void* data, int64_t count,
                                        cudaStream_t stream);

// x: bf16 [rows][hidden], this rank's part (read only). residual = bf16(
// residual + sum), sum as LaunchOneShotAllReduceBf16's; out =
// RmsNorm(residual) * weight: the same bits as LaunchOneShotAllReduceBf16
// followed by kernels::LaunchAddRmsNorm. rows <= one_shot::kSlots, hidden a
// multiple of 8 with hidden * 2 <= one_shot::kSlotBytes, pointers 16-byte
// aligned.
absl::Status LaunchOneShotAllReduceAddRmsNorm(const OneShotBuffers& b, const void* x,
                                              void* residual, const void* weight, void* out,
                                              int rows, int hidden, float eps, cudaStream_t stream);

// data: uint64 [count], in place: the element-wise maximum over the ranks.
// 1 <= count <= one_shot::kMaxU64Count, data 8-byte aligned.
absl::Status LaunchOneShotAllReduceMaxU64(const OneShotBuffers& b, uint64_t* data, int64_t count,
                                          cudaStream_t stream);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_ONE_SHOT_ALL_REDUCE_H_
