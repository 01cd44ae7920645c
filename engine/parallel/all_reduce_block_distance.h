// BlockDistance over a tensor-parallel group (DESIGN.md §4, step 4): each
// rank computes the distance sums of its own KV heads, then the sums are
// all-reduced, so every rank holds the sums over every head and compares
// the same relative distance with the threshold: every rank takes the same
// MemShare decision. Every rank of the group must make the same call (rank
// 0's leader backend broadcasts it first).
//
// With KV heads replicated (fewer KV heads than ranks) each head is counted
// world_size / num_kv_heads times in every sum alike, which leaves the
// relative distances unchanged.
//
// Thread-compatible (one scheduler thread, as BlockDistance).
#ifndef MEMSHARE_ENGINE_PARALLEL_ALL_REDUCE_BLOCK_DISTANCE_H_
#define MEMSHARE_ENGINE_PARALLEL_ALL_REDUCE_BLOCK_DISTANCE_H_

#include "engine/parallel/communicator.h"
#include "kvmanager/block_distance.h"

namespace memshare::engine {

class AllReduceBlockDistance : public kvmanager::BlockDistance {
 public:
  // Neither is owned; both outlive this.
  AllReduceBlockDistance(kvmanager::BlockDistance* local, Communicator* comm)
      : local_(local), comm_(comm) {}

  // The local backend's errors (INVALID_ARGUMENT for a bad pair: every rank
  // validates the same call alike, and none enters the all-reduce); the
  // communicator's (the group is then broken).
  absl::Status ComputeDistanceSums(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override;

 private:
  kvmanager::BlockDistance* local_;
  Communicator* comm_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_ALL_REDUCE_BLOCK_DISTANCE_H_
