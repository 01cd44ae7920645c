// The compute backend of one rank: runs StepPlans over its shard of the model
// and of the paged KV store (DESIGN.md §4, §5). Implemented by the CPU backend
// (reference: fp32 math, bf16 KV storage) and the CUDA backend.
//
// The KV store of a rank is one pool per layer group, each
//   [num_blocks][layers_in_group][2 (K, V)][kv_heads_local][block_size][head_dim]
// in bf16, K stored before RoPE (attention applies the rotary embedding for the
// logical position while it reads K, so a block can be shared at any position).
// Layer groups split the layers into contiguous, near-equal ranges.
//
// Thread-compatible: the scheduler thread of the worker calls it.
#ifndef MEMSHARE_ENGINE_BACKEND_H_
#define MEMSHARE_ENGINE_BACKEND_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/step_plan.h"
#include "kvmanager/block_distance.h"

namespace memshare::engine {

struct KvCacheSpec {
  int32_t num_layer_groups = 1;
  // First layer of each group, plus the total layer count at the end
  // (num_layer_groups + 1 entries).
  std::vector<int32_t> group_layer_begin;
  int32_t num_blocks = 0;  // per layer group (every group has the same count)
  int32_t block_size = 16;
  int32_t kv_heads_local = 0;
  int32_t head_dim = 0;

  int32_t LayersInGroup(int g) const { return group_layer_begin[g + 1] - group_layer_begin[g]; }
  int64_t BlockBytes(int g) const {
    return int64_t{LayersInGroup(g)} * 2 * kv_heads_local * block_size * head_dim * 2;
  }
};

// Splits `num_layers` into `groups` contiguous ranges of near-equal size
// (the first num_layers % groups ranges are one longer).
inline std::vector<int32_t> SplitLayers(int32_t num_layers, int32_t groups) {
  std::vector<int32_t> begin(groups + 1, 0);
  for (int g = 0; g < groups; ++g) {
    begin[g + 1] = begin[g] + num_layers / groups + (g < num_layers % groups ? 1 : 0);
  }
  return begin;
}

class Backend : public kvmanager::BlockDistance {
 public:
  ~Backend() override = default;

  virtual const KvCacheSpec& kv_spec() const = 0;
  virtual int32_t vocab_size() const = 0;

  // Whether Forward samples the rows whose chunk sets `sampling` on the
  // device (StepOutput's device sampling contract, step_plan.h). False:
  // `sampling` is ignored and every row's logits are returned.
  virtual bool SamplesOnDevice() const { return false; }

  // Whether Forward reads MemShare shifted views (SequenceChunk::
  // block_tables_hi / block_shifts) and ComputeDistanceSums shifted
  // reference windows (kvmanager::BlockPair::shift). False: the engine
  // turns shifted sharing off (DedupPolicy::shifted_sharing), so no plan
  // carries a view and no pair a shift.
  virtual bool SupportsShiftedViews() const { return false; }

  // Runs one step: writes K/V of every token in the plan into its slot and
  // returns the logits asked for. INVALID_ARGUMENT for a plan that does not
  // fit (block table too short, block id out of range, token id outside the
  // vocabulary); nothing is written then.
  virtual absl::Status Forward(const StepPlan& plan, StepOutput* output) = 0;

  // Pipelined steps: Submit queues a step on the device and returns without
  // waiting for it; Collect waits for the oldest step submitted and not yet
  // collected and hands back its output. Forward is Submit then Collect.
  // The point: the caller prepares and submits step N + 1 while step N
  // runs, its decode chunks taking the tokens step N samples on the device
  // (SequenceChunk::fed_row), so the device does not wait for the host
  // between steps. At most two steps are in flight: Submit with two is
  // FAILED_PRECONDITION, as are Collect with none and Forward with any.
  // Submit checks the plan as Forward does (nothing is queued when it
  // fails). CopyBlocks and ComputeDistanceSums may be called between
  // Submit and Collect: copies run after the steps in flight; distance
  // sums may run beside them, so they must only be asked about blocks of
  // committed tokens (as kvmanager's MemShare asks), which no step in
  // flight writes.
  virtual bool SupportsPipelining() const { return false; }
  virtual absl::Status Submit(const StepPlan& /*plan*/) {
    return absl::UnimplementedError("this backend does not pipeline steps");
  }
  virtual absl::Status Collect(StepOutput* /*output*/) {
    return absl::UnimplementedError("this backend does not pipeline steps");
  }

  // Copies whole blocks (src -> dst) in pool `layer_group`: copy-on-write of
  // a shared block that must be written.
  virtual absl::Status CopyBlocks(int layer_group,
                                  absl::Span<const std::pair<int32_t, int32_t>> src_dst) = 0;

  // OK while the backend can run steps; otherwise why not, for good (a
  // tensor-parallel group whose peer died or hung: the worker then reports
  // NOT_SERVING). Thread-safe, unlike the rest of the interface: the
  // worker's health reporting calls it from its own thread.
  virtual absl::Status health() const { return absl::OkStatus(); }
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_BACKEND_H_
