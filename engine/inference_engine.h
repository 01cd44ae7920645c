// The engine as the worker server sees it: submit a request, receive its
// events, abort it, read load. Implemented by the scheduler-driven engine
// (engine/llm_engine.h); the serving tests of the RPC boundary use a fake.
//
// Thread-safe: RPC handlers call it from gRPC threads. Callbacks run on the
// engine's scheduler thread and must not block (hand off to the RPC reactor).
#ifndef MEMSHARE_ENGINE_INFERENCE_ENGINE_H_
#define MEMSHARE_ENGINE_INFERENCE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "engine/request.h"

namespace memshare::engine {

struct LoadReport {
  int32_t running_requests = 0;
  int32_t waiting_requests = 0;
  int64_t waiting_tokens = 0;  // prompt tokens not yet prefilled
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;  // physical
  int64_t kv_blocks_logical = 0;
  int64_t kv_blocks_shared = 0;
  int64_t bytes_saved = 0;  // by MemShare sharing
  // Counters, cumulative since the engine started (monotonic).
  int64_t dedup_candidates = 0;      // block pairs proposed by the lexical stage
  int64_t dedup_verified = 0;        // pairs whose K/V distance was computed
  int64_t dedup_rejected = 0;        // verified pairs over the distance threshold
  int64_t dedup_remapped = 0;        // logical blocks remapped onto an earlier block
  int64_t prefix_cache_queries = 0;  // full prompt blocks looked up
  int64_t prefix_cache_hits = 0;     // of those, found in the cache
  int64_t preemptions = 0;           // requests preempted (recomputed later)
  double kv_usage() const {
    return kv_blocks_total > 0 ? double(kv_blocks_used) / double(kv_blocks_total) : 0.0;
  }
};

struct ModelInfo {
  std::string model_id;
  std::string architecture;
  int32_t vocab_size = 0;
  int32_t max_model_len = 0;  // longest prompt + generation accepted
  int32_t num_layers = 0;
  int32_t block_size = 0;
  std::string device;  // "cpu", "cuda"
  int32_t tensor_parallel_size = 1;
  // Bytes of one KV block over all layers (K and V, every rank): what one
  // shared block saves.
  int64_t kv_block_bytes = 0;
};

// The parts of an engine step whose durations are exported as
// memshare_step_duration_seconds{phase=...}.
enum class StepPhase {
  kSchedule,  // choosing the batch and building the StepPlan
  kPrefill,   // model forward of a step that holds prompt tokens
  kDecode,    // model forward of a decode-only step
  kSample,    // logits to tokens
  kDedup,     // MemShare: candidates, distance verification, remaps
};
inline constexpr StepPhase kAllStepPhases[] = {StepPhase::kSchedule, StepPhase::kPrefill,
                                               StepPhase::kDecode, StepPhase::kSample,
                                               StepPhase::kDedup};
inline const char* StepPhaseName(StepPhase phase) {
  switch (phase) {
    case StepPhase::kSchedule:
      return "schedule";
    case StepPhase::kPrefill:
      return "prefill";
    case StepPhase::kDecode:
      return "decode";
    case StepPhase::kSample:
      return "sample";
    case StepPhase::kDedup:
      return "dedup";
  }
  return "unknown";
}

class InferenceEngine {
 public:
  using EventCallback = std::function<void(const StreamEvent&)>;
  // Called on the scheduler thread with the duration of one phase of one
  // step; must not block.
  using StepObserver = std::function<void(StepPhase phase, double seconds)>;
  virtual ~InferenceEngine() = default;

  // Validates and enqueues. On error (INVALID_ARGUMENT naming the field,
  // RESOURCE_EXHAUSTED when the queue is full, FAILED_PRECONDITION while
  // draining) nothing is enqueued and `on_event` is never called. On OK,
  // `on_event` is called for each batch of new tokens and exactly once with
  // finished = true (or a non-OK status).
  virtual absl::Status Submit(EngineRequest request, EventCallback on_event) = 0;

  // Ends a request: its blocks are freed at once, its stream ends with
  // finish_reason kAbort. NOT_FOUND if no live request has that id.
  virtual absl::Status Abort(const std::string& request_id) = 0;

  virtual LoadReport GetLoad() const = 0;
  virtual ModelInfo GetModelInfo() const = 0;

  // Installs the receiver of step timings. Called at most once, before the
  // first Submit. Engines that do not time their steps ignore it.
  virtual void SetStepObserver(StepObserver /*observer*/) {}

  // OK while the engine can serve; otherwise why not, for good (its
  // tensor-parallel group broke): the worker then reports NOT_SERVING and
  // exits.
  virtual absl::Status health() const { return absl::OkStatus(); }
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_INFERENCE_ENGINE_H_
