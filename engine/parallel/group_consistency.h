// The consistency check of a tensor-parallel group (DESIGN.md §2): every
// rank folds what it executed into a running hash (each step's block
// tables, positions and token counts; each copy-on-write; each MemShare
// verification's pairs and all-reduced distance sums), and every K steps
// the ranks all-gather their hashes. Equal hashes mean every rank ran the
// same plans on the same block tables and took its MemShare decisions from
// the same numbers; a difference stops the group with an error that names
// the ranks and the step.
//
// The hash is XXH64 chained over the fields in a fixed order: the same on
// every host of the same build.
//
// Thread-compatible.
#ifndef MEMSHARE_ENGINE_PARALLEL_GROUP_CONSISTENCY_H_
#define MEMSHARE_ENGINE_PARALLEL_GROUP_CONSISTENCY_H_

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/step_plan.h"
#include "kvmanager/block_distance.h"

namespace memshare::engine {

class GroupConsistency {
 public:
  // A step: per sequence its id, start position, token count and every
  // layer group's block table.
  void AddPlan(const StepPlan& plan);
  void AddCopies(int layer_group, absl::Span<const std::pair<int32_t, int32_t>> src_dst);
  // A verification: the pairs and the all-reduced sums (bit for bit).
  void AddDistances(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                    absl::Span<const kvmanager::DistanceSums> sums);

  uint64_t hash() const { return hash_; }

 private:
  void Mix(const void* data, size_t bytes);
  uint64_t hash_ = 0x6d656d7368617265ull;  // "memshare"
};

// OK when every entry equals rank 0's; otherwise INTERNAL naming the ranks
// whose hash differs and `step` (the steps run when the check ran).
absl::Status CompareGroupHashes(absl::Span<const uint64_t> hashes, int64_t step);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_GROUP_CONSISTENCY_H_
