// What the CUDA backend needs from a tensor-parallel group (DESIGN.md §5):
// collectives on its own stream, enqueued like kernels (so they are
// captured in the decode CUDA graphs), and a bounded wait for that stream.
// Implemented over NCCL by engine/parallel/nccl_communicator.h.
//
// Every rank of the group enqueues the same collectives in the same order.
//
// Thread-compatible: the backend's thread.
#ifndef MEMSHARE_ENGINE_CUDA_DEVICE_COLLECTIVES_H_
#define MEMSHARE_ENGINE_CUDA_DEVICE_COLLECTIVES_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace memshare::engine::cuda {

class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // In place: data (bf16 [count], device) becomes the element-wise sum over
  // the ranks. Enqueued on `stream`.
  virtual absl::Status AllReduceSumBf16(void* data, int64_t count, cudaStream_t stream) = 0;

  // recv (fp32 [world_size][count], device) gets every rank's send (fp32
  // [count], device), in rank order. Enqueued on `stream`.
  virtual absl::Status AllGatherFp32(const float* send, float* recv, int64_t count,
                                     cudaStream_t stream) = 0;

  // In place: data (uint64 [count], device) becomes the element-wise
  // maximum over the ranks. Enqueued on `stream`. (The greedy candidates of
  // sampling on vocabulary shards: cuda/shard_sampling.h.)
  virtual absl::Status AllReduceMaxU64(uint64_t* data, int64_t count, cudaStream_t stream) = 0;

  // Whether the backend samples greedy rows on its vocabulary shard and
  // exchanges only each row's best candidate (AllReduceMaxU64) instead of
  // all-gathering the logits. The same answer on every rank.
  virtual bool samples_on_shards() const = 0;

  // Waits until `stream` has run everything enqueued, at most the group's
  // timeout: a peer that died or hangs leaves a collective unfinished, and
  // the wait then breaks the group (its communicator is aborted, which
  // releases the stream) and returns DEADLINE_EXCEEDED or UNAVAILABLE
  // naming `what`.
  virtual absl::Status Synchronize(cudaStream_t stream, absl::string_view what) = 0;

  // The smallest `*value` of any rank, on every rank (host values; waits).
  virtual absl::Status AllReduceMin(int64_t* value) = 0;

  // Whether AllReduceAddRmsNormBf16 takes these buffers and shape. The
  // answer is the same on every rank for the same arguments (the backend
  // picks its code path with it, inside the decode graphs too).
  virtual bool FusesAllReduceAddRmsNorm(const void* x, const void* residual, const void* weight,
                                        const void* out, int rows, int hidden) const {
    (void)x, (void)residual, (void)weight, (void)out, (void)rows, (void)hidden;
    return false;
  }

  // In one kernel, enqueued on `stream`: the all-reduce of x (bf16
  // [rows][hidden], this rank's part; x itself is left as it was) and the
  // residual add + RMSNorm after it: residual = bf16(residual + sum);
  // out = RmsNorm(residual) * weight (kernels/norm.h LaunchAddRmsNorm, the
  // same bits). Only where FusesAllReduceAddRmsNorm says so.
  virtual absl::Status AllReduceAddRmsNormBf16(const void* x, void* residual, const void* weight,
                                               void* out, int rows, int hidden, float eps,
                                               cudaStream_t stream) {
    (void)x, (void)residual, (void)weight, (void)out, (void)rows, (void)hidden, (void)eps,
        (void)stream;
    return absl::UnimplementedError("fused all-reduce + RMSNorm");
  }
};

}  // namespace memshare::engine::cuda

#endif  // MEMSHARE_ENGINE_CUDA_DEVICE_COLLECTIVES_H_
