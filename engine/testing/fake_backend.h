// A Backend for scheduler and engine tests: no model, but a real paged store.
//
// Its "KV" is the token id itself: Forward writes each token id into the
// slot its position maps to through the chunk's block tables (every layer
// group), and the logits of a chunk are a deterministic function of the
// token ids it reads back through those tables for positions
// [0, start_pos + token_ids.size()). So a wrong block table, a block reused
// while still referenced, a position off by one or a lost recompute changes
// the output, and a test can compare outputs across schedules.
//
// With `window` > 0 only the last `window` tokens are read back and the
// logits depend on them alone: generated text then falls into cycles, which
// gives MemShare repeated blocks to find.
//
// It also keeps, per seq_id, the tokens the plans said were written at each
// position (positions a chunk starts after without having written them, a
// prefix-cache hit, are taken as they read then); a read-back that differs (a block freed and
// reused while still in a table, a remap onto different content) is counted in history_mismatches()
// and poisons that row, whatever the window.
//
// MemShare shifted views (SequenceChunk::block_tables_hi / block_shifts)
// are read through their windows, and shifted reference windows compared
// slot by slot, as a real backend does.
//
// ComputeDistanceSums compares stored token ids (0 for identical blocks or
// windows), CopyBlocks copies them.
//
// With `samples_on_device` it reports SamplesOnDevice() and follows the
// device sampling contract of step_plan.h as the CUDA backend does: a row
// whose chunk sets `sampling` is sampled by the CPU sampler's own rules
// (Sampler::SampleRow over the chunk's penalty lists and draw), its logprob
// is Sampler::Logprob's, and `logits` comes back empty when every row was
// sampled and none asked for logits; with `pack_logits` too, where only
// some rows need them, it returns just those, packed (StepOutput::
// logits_index). It checks the DeviceSampling it gets as the CUDA backend
// does, and also that no penalty token is listed twice.
//
// With `pipelines` (and samples_on_device) it runs pipelined steps as a
// device stream would: Submit runs the step at once, in order with
// CopyBlocks and ComputeDistanceSums, its fed chunks (SequenceChunk::
// fed_row) taking the tokens the previous step sampled (and counting them in
// their penalty lists where DeviceSampling::count_fed_token asks); Collect
// hands back the oldest output not collected. At most two steps wait to be
// collected.
//
// Thread-compatible.
#ifndef MEMSHARE_ENGINE_TESTING_FAKE_BACKEND_H_
#define MEMSHARE_ENGINE_TESTING_FAKE_BACKEND_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace memshare::engine {

class FakeBackend : public Backend {
 public:
  struct Options {
    int32_t vocab_size = 64;
    int32_t num_blocks = 64;  // per layer group
    int32_t block_size = 4;
    int32_t num_layers = 2;
    int32_t num_layer_groups = 1;
    // 0: logits depend on the whole history; > 0: on the last `window` tokens.
    int32_t window = 0;
    // Changes every logit row (a different "model").
    uint64_t seed = 0;
    // What SupportsShiftedViews() answers (views are read either way).
    bool shifted_views = true;
    // Sample rows on the "device" (see the class comment).
    bool samples_on_device = false;
    // With samples_on_device: packed logits (see the class comment).
    bool pack_logits = false;
    // Submit / Collect (see the class comment).
    bool pipelines = false;
  };

  static absl::StatusOr<std::unique_ptr<FakeBackend>> Create(const Options& options);

  const KvCacheSpec& kv_spec() const override { return spec_; }
  int32_t vocab_size() const override { return options_.vocab_size; }
  bool SupportsShiftedViews() const override { return options_.shifted_views; }
  bool SamplesOnDevice() const override { return options_.samples_on_device; }
  absl::Status Forward(const StepPlan& plan, StepOutput* output) override;
  bool SupportsPipelining() const override { return options_.pipelines; }
  absl::Status Submit(const StepPlan& plan) override;
  absl::Status Collect(StepOutput* output) override;
  absl::Status CopyBlocks(int layer_group,
                          absl::Span<const std::pair<int32_t, int32_t>> src_dst) override;
  absl::Status ComputeDistanceSums(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override;

  // The logits row the fake computes for a history (what Forward returns
  // for a chunk whose cache holds exactly `history`).
  std::vector<float> LogitsFor(absl::Span<const int32_t> history) const;

  // What the tests look at.
  int64_t forward_calls() const { return forward_calls_; }
  int64_t max_tokens_in_step() const { return max_tokens_in_step_; }
  int64_t max_sequences_in_step() const { return max_sequences_in_step_; }
  int64_t total_tokens() const { return total_tokens_; }
  int64_t copy_calls() const { return copy_calls_; }
  int64_t history_mismatches() const { return history_mismatches_; }
  // Chunks whose token was fed from the previous step (fed_row).
  int64_t fed_chunks() const { return fed_chunks_; }
  // Rows sampled on the "device", and logits rows returned to the caller.
  int64_t device_sampled_rows() const { return device_sampled_rows_; }
  int64_t logits_rows_returned() const { return logits_rows_returned_; }
  // Time spent running steps (the fake model's own work, wherever the
  // caller's phases count it: Submit runs the step at once); may be read
  // from another thread.
  double run_seconds() const { return 1e-9 * run_nanos_.load(std::memory_order_relaxed); }
  // Called with every plan Forward or Submit accepts, before it runs (fed
  // chunks with their tokens filled in).
  void SetPlanObserver(std::function<void(const StepPlan&)> observer) {
    plan_observer_ = std::move(observer);
  }
  // Makes the next `n` Forward calls fail with INTERNAL (nothing written).
  void FailNextForwards(int n) { fail_forwards_ = n; }

 private:
  explicit FakeBackend(const Options& options);
  int32_t& Slot(int group, int32_t block, int32_t offset) {
    return slots_[group][static_cast<size_t>(block) * spec_.block_size + offset];
  }
  // What position `pos` of a chunk's sequence reads in `group`, through a
  // shifted view when its block is one.
  int32_t Read(const SequenceChunk& c, int group, int32_t pos);
  // Forward without the pipeline's checks; keeps the sampled tokens for
  // the next step's fed chunks. Run times RunStep (run_seconds).
  absl::Status Run(const StepPlan& plan, StepOutput* output);
  absl::Status RunStep(const StepPlan& plan, StepOutput* output);

  const Options options_;
  KvCacheSpec spec_;
  std::vector<std::vector<int32_t>> slots_;  // [group][block * block_size + offset]; -1 = empty
  int64_t forward_calls_ = 0;
  int64_t max_tokens_in_step_ = 0;
  int64_t max_sequences_in_step_ = 0;
  int64_t total_tokens_ = 0;
  int64_t copy_calls_ = 0;
  int fail_forwards_ = 0;
  int64_t history_mismatches_ = 0;
  int64_t device_sampled_rows_ = 0;
  int64_t logits_rows_returned_ = 0;
  std::function<void(const StepPlan&)> plan_observer_;
  std::vector<StepOutput> submitted_;  // Submit's outputs, oldest first
  std::vector<int32_t> last_sampled_;  // the last step's sampled tokens by row (-1: none)
  int64_t fed_chunks_ = 0;
  std::atomic<int64_t> run_nanos_{0};
  std::unordered_map<uint64_t, std::vector<int32_t>> shadow_;  // seq_id -> tokens by position
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_TESTING_FAKE_BACKEND_H_
