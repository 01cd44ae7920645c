// Runs the held-out problems through an in-process LlmEngine under one
// MemShare setting and measures what the evaluation of issue 8 reports:
// accuracy (answers parsed like tools/tiny_reasoner/datagen.py), KV blocks
// per request and in the pool at their peaks (physical vs logical: memory
// saved), the MemShare funnel, the time of the dedup phase per step, and
// throughput (requests/s and tokens/s).
//
// All problems are submitted at once and batched by the engine (continuous
// batching; the batch is bounded by max_num_seqs and by the KV pool), so
// the same runner measures accuracy with a large pool and throughput under
// memory pressure with a small one.
//
// Thread-safety: RunEval is thread-safe (each call builds its own engine).
#ifndef MEMSHARE_BENCH_MEMSHARE_EVAL_EVAL_RUNNER_H_
#define MEMSHARE_BENCH_MEMSHARE_EVAL_EVAL_RUNNER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bench/memshare_eval/heldout.h"
#include "engine/request.h"
#include "kvmanager/block_aligner.h"

namespace memshare::bench {

// The engine every configuration runs on.
struct EngineSetup {
  // Hugging Face model directory.
  std::string model_dir = "assets/models/tiny-reasoner";
  // "cpu", "cuda" or "auto" (engine/backend_factory.h). RunEval answers
  // FAILED_PRECONDITION for cuda without a usable device.
  std::string device = "cpu";
  // Threads of the CPU forward pass; 0: every core.
  int32_t threads = 0;
  // KV blocks per layer group; 0: enough for every request at once (no
  // memory pressure). Small values bound the batch by memory.
  int32_t num_blocks = 0;
  int32_t block_size = 8;  // the worker's default
  // Scheduler limits.
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 2048;
  // Conservative admission (Scheduler::Options::reserve_ratio_step); 0: off.
  double admission_reserve = 0;
  // Pipelined steps where the backend runs them (Scheduler::Options::
  // pipeline_steps; the worker's --async_scheduling).
  bool async_scheduling = true;
  // Generation limit per problem (greedy).
  int32_t max_tokens = 1200;
  // Exact prefix caching across requests (kvmanager's default: on).
  bool prefix_cache = true;
  // Longest a configuration may run before it is abandoned.
  absl::Duration timeout = absl::Hours(4);
};

// One MemShare setting. Unset optionals keep the KvManager defaults, so a
// default-constructed config with memshare = true measures the server's
// defaults.
struct EvalConfig {
  // Row name in the tables.
  std::string name = "off";
  bool memshare = false;
  std::optional<float> tau_lex;
  std::optional<float> tau_kv;
  // Segmenter.
  std::optional<int32_t> min_step_tokens;
  std::optional<int32_t> max_step_tokens;
  std::optional<std::vector<std::string>> delimiters;
  // Candidate selection.
  std::optional<float> min_block_token_overlap;
  std::optional<int32_t> max_candidates_per_step;
  std::optional<kvmanager::OverlapMeasure> overlap_measure;
  std::optional<int32_t> near_match_delay_tokens;
  std::optional<bool> shifted_sharing;
  // DedupPolicy::keep_numbers.
  std::optional<bool> keep_numbers;
  // KV layer groups, and those allowed to share (empty: all).
  int32_t layer_groups = 1;
  std::vector<int32_t> share_groups;
};

struct ProblemOutcome {
  int32_t id = 0;
  int64_t answer = 0;
  std::optional<int64_t> predicted;
  bool correct = false;
  engine::FinishReason finish_reason = engine::FinishReason::kNone;
  std::string error;  // non-empty when the request failed
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  // Summed over layer groups (engine::Usage).
  int32_t peak_physical_blocks = 0;
  int32_t peak_logical_blocks = 0;
  std::string text;  // the reply
};

struct EvalResult {
  EvalConfig config;
  std::vector<ProblemOutcome> problems;  // in input order

  int32_t num_problems = 0;
  int32_t num_correct = 0;
  int32_t num_failed = 0;  // requests that ended with an error
  double accuracy() const { return num_problems ? double(num_correct) / num_problems : 0; }

  // Per request, at its peak, summed over requests and layer groups.
  int64_t request_peak_physical = 0;
  int64_t request_peak_logical = 0;
  // 1 - physical / logical of the sums above: the headline "memory saved".
  double request_saved() const {
    return request_peak_logical ? 1.0 - double(request_peak_physical) / request_peak_logical : 0;
  }
  // Mean over requests of each request's own saved share.
  double mean_request_saved = 0;

  // The pool, sampled after every step (all layer groups): the highest
  // physical and logical block counts seen, and the physical count at the
  // step of the highest logical count.
  int64_t pool_peak_physical = 0;
  int64_t pool_peak_logical = 0;
  int64_t pool_physical_at_peak_logical = 0;
  // Physical blocks referenced by two or more entries, at that step.
  int64_t pool_shared_at_peak_logical = 0;
  // Shared-block ratio: shared physical blocks over physical blocks there.
  double shared_block_ratio() const {
    return pool_physical_at_peak_logical
               ? double(pool_shared_at_peak_logical) / pool_physical_at_peak_logical
               : 0;
  }
  double pool_saved_at_peak() const {
    return pool_peak_logical ? 1.0 - double(pool_physical_at_peak_logical) / pool_peak_logical : 0;
  }
  int64_t pool_blocks = 0;  // per layer group
  // The pool over the whole run: physical and logical blocks summed over
  // the steps' samples. Under memory pressure the pool is full at nearly
  // every step, and what it holds on average, not at its peak, bounds the
  // batch: pool_mean_saved is the share of logical blocks that cost no
  // physical block, averaged over the steps (weighted by logical blocks).
  int64_t pool_physical_step_sum = 0;
  int64_t pool_logical_step_sum = 0;
  double pool_mean_physical() const { return steps ? double(pool_physical_step_sum) / steps : 0; }
  double pool_mean_logical() const { return steps ? double(pool_logical_step_sum) / steps : 0; }
  double pool_mean_saved() const {
    return pool_logical_step_sum ? 1.0 - double(pool_physical_step_sum) / pool_logical_step_sum
                                 : 0;
  }

  // MemShare funnel (KvStats counters).
  int64_t dedup_steps = 0;
  int64_t dedup_candidate_steps = 0;
  int64_t dedup_candidates = 0;
  int64_t dedup_verified = 0;
  int64_t dedup_rejected = 0;
  int64_t dedup_remapped = 0;

  // Engine steps and the wall time of their phases.
  int64_t steps = 0;
  int64_t dedup_phase_steps = 0;  // steps that ran the dedup phase
  double step_seconds = 0;        // schedule + forward + sample + dedup
  double dedup_seconds = 0;
  double dedup_ms_per_step() const { return steps ? 1e3 * dedup_seconds / steps : 0; }
  double dedup_share() const { return step_seconds > 0 ? dedup_seconds / step_seconds : 0; }
  // The other phases (engine StepPhase): schedule and sample over every
  // step, the forward pass over the steps of its kind (a step with prompt
  // tokens, a decode-only step); and what the engine spends per step
  // outside the phases (its loop, detokenizing, callbacks; wall time less
  // the phases, as the steps run back to back).
  double schedule_seconds = 0;
  double sample_seconds = 0;
  int64_t prefill_steps = 0;
  double prefill_seconds = 0;
  int64_t decode_steps = 0;
  double decode_seconds = 0;
  double schedule_ms_per_step() const { return steps ? 1e3 * schedule_seconds / steps : 0; }
  double sample_ms_per_step() const { return steps ? 1e3 * sample_seconds / steps : 0; }
  double prefill_ms_per_step() const {
    return prefill_steps ? 1e3 * prefill_seconds / prefill_steps : 0;
  }
  double decode_ms_per_step() const {
    return decode_steps ? 1e3 * decode_seconds / decode_steps : 0;
  }
  double outside_phases_ms_per_step() const {
    return steps ? 1e3 * (wall_seconds - step_seconds) / steps : 0;
  }

  int64_t preemptions = 0;
  int64_t generated_tokens = 0;
  double wall_seconds = 0;  // first submit to last finish
  double requests_per_second() const { return wall_seconds > 0 ? num_problems / wall_seconds : 0; }
  double tokens_per_second() const {
    return wall_seconds > 0 ? generated_tokens / wall_seconds : 0;
  }
};

// INVALID_ARGUMENT naming the field for a bad setup or config; the engine's
// errors otherwise (FAILED_PRECONDITION: no CUDA device). A
// request that fails counts as wrong (num_failed) and does not stop the run.
absl::StatusOr<EvalResult> RunEval(const EngineSetup& setup, const EvalConfig& config,
                                   absl::Span<const HeldoutProblem> problems);

}  // namespace memshare::bench

#endif  // MEMSHARE_BENCH_MEMSHARE_EVAL_EVAL_RUNNER_H_
