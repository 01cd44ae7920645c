// The engine of one worker (group rank 0): InferenceEngine over a Scheduler,
// a Backend, the kvmanager::KvManager of its KV pool and a TextCodec
// (DESIGN.md §2, §4, §5, §6).
//
// Submit() runs on the caller's thread: it checks the request (prompt form,
// sampling values, MemShare thresholds, prompt length against the model and
// the server), tokenizes it, and hands it to the scheduler thread through a
// bounded inbox. One scheduler thread runs the steps: it admits new requests,
// applies aborts before the next step (so their blocks are freed at once),
// runs Scheduler::Step, detokenizes each sequence's new tokens incrementally
// (UTF-8 safe), matches stop strings on the text (held-back text is never
// emitted early; a stop string is not emitted) and calls each request's
// callback with the new tokens and text, and once with finished = true.
//
// Drain() stops accepting and waits for live requests; the destructor ends
// the ones still live (status CANCELLED) and joins the thread.
//
// Thread-safe. Callbacks run on the scheduler thread and must not block.
#ifndef MEMSHARE_ENGINE_LLM_ENGINE_H_
#define MEMSHARE_ENGINE_LLM_ENGINE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/backend.h"
#include "engine/inference_engine.h"
#include "engine/scheduler.h"
#include "engine/text_codec.h"
#include "kvmanager/kv_manager.h"

namespace memshare::engine {

class LlmEngine : public InferenceEngine {
 public:
  struct Options {
    // Batching limits, model length, sampling bounds. eos_token_ids are
    // added to the codec's.
    Scheduler::Options scheduler;
    // Live requests (queued, waiting or running) beyond which Submit
    // answers RESOURCE_EXHAUSTED.
    int32_t max_live_requests = 1024;
    // The KV manager: prefix cache, MemShare policy (the mode of requests
    // that leave it to the server, default thresholds and their bounds),
    // segmenter. Layer groups, block count, block size and block bytes are
    // taken from the backend's KvCacheSpec.
    kvmanager::KvManager::Options kv;
    // Reported by GetModelInfo; vocab_size, max_model_len and block_size
    // are filled in from the parts.
    ModelInfo model_info;
  };

  // The parts the engine owns.
  struct Parts {
    std::unique_ptr<Backend> backend;
    std::unique_ptr<TextCodec> codec;
  };

  static absl::StatusOr<std::unique_ptr<LlmEngine>> Create(const Options& options, Parts parts);

  // Which of ids [0, vocab_size) have a piece with a decimal digit: the
  // table DedupPolicy::keep_numbers needs (KvManager::Options::digit_tokens),
  // which Create fills when the policy asks for it.
  static std::vector<bool> DigitTokens(const TextCodec& codec, int32_t vocab_size);

  LlmEngine(const LlmEngine&) = delete;
  LlmEngine& operator=(const LlmEngine&) = delete;
  ~LlmEngine() override;

  absl::Status Submit(EngineRequest request, EventCallback on_event) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Abort(const std::string& request_id) override ABSL_LOCKS_EXCLUDED(mu_);
  LoadReport GetLoad() const override ABSL_LOCKS_EXCLUDED(mu_);
  ModelInfo GetModelInfo() const override { return model_info_; }
  // Phases of every step: schedule, prefill or decode (the forward pass),
  // sample, dedup (only steps that ran MemShare).
  void SetStepObserver(StepObserver observer) override ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting (Submit answers FAILED_PRECONDITION from now on) and
  // waits until every live request has finished: OK, or DEADLINE_EXCEEDED
  // after `timeout`.
  absl::Status Drain(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

  // The backend's health (a tensor-parallel group that broke). While it is
  // not OK, Submit answers UNAVAILABLE.
  absl::Status health() const override { return backend_->health(); }

  // Scheduler counters (copied after each step).
  SchedulerStats GetSchedulerStats() const ABSL_LOCKS_EXCLUDED(mu_);

  // KV pool figures and counters: prefix cache, MemShare funnel.
  kvmanager::KvStatsSnapshot GetKvStats() const { return kv_->Stats(); }

 private:
  // A request between Submit and the scheduler thread.
  struct Incoming {
    std::string request_id;
    uint64_t seq_id = 0;
    SequenceRequest sequence;
    std::vector<std::string> stop;
    bool want_logprobs = false;
    EventCallback on_event;
  };
  struct Live;  // scheduler-thread state of one request

  LlmEngine(const Options& options, Parts parts);
  // The request's prompt as token ids, or INVALID_ARGUMENT naming the field.
  absl::StatusOr<std::vector<int32_t>> Tokenize(const EngineRequest& request) const;
  // The request's MemShare options for the KV manager, or INVALID_ARGUMENT
  // naming the field when they are outside the server's bounds.
  absl::StatusOr<kvmanager::DedupParams> MemShareOf(const MemShareParams& params) const;

  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  void Admit(Incoming incoming);
  void Emit(SequenceOutput output);
  // Ends a request the scheduler does not hold: it stops being live, then
  // `event` is delivered.
  void EndWithoutScheduler(const std::string& request_id, const EventCallback& on_event,
                           const StreamEvent& event) ABSL_LOCKS_EXCLUDED(mu_);
  void PublishLoad() ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  ModelInfo model_info_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<TextCodec> codec_;
  std::unique_ptr<kvmanager::KvManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;  // scheduler thread only (after Create)

  // Scheduler-thread state.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Live>> live_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;  // the scheduler thread has something to do
  absl::CondVar idle_;  // a request finished (Drain waits on it)
  std::deque<Incoming> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> aborts_ ABSL_GUARDED_BY(mu_);
  // request_id -> seq_id of every live request (inbox, waiting, running).
  absl::flat_hash_map<std::string, uint64_t> ids_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Final events being delivered (their requests are no longer in ids_).
  int32_t delivering_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  LoadReport load_ ABSL_GUARDED_BY(mu_);
  StepObserver observer_ ABSL_GUARDED_BY(mu_);
  SchedulerStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_LLM_ENGINE_H_
