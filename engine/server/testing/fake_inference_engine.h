// A deterministic InferenceEngine for the tests of the serving layer (worker
// service, router, load generator, multi-process tests) until, and besides,
// the real engine.
//
// Behaviour: text prompts are tokenized one byte per token (chat messages are
// rendered "<|role|>content\n" + "<|assistant|>"). A scheduler thread runs
// steps every `step_interval`: it admits waiting requests up to
// `max_running`, and gives every running request one token, a lowercase
// letter that depends only on the prompt's tokens, the seed and the position
// (so the same request gives the same tokens on every fake engine). Requests
// end on max_tokens (LENGTH), a stop token id or stop string (STOP), Abort
// (ABORT) or their deadline (DEADLINE_EXCEEDED status). KV accounting: a
// running request holds ceil((prompt + generated) / block_size) blocks; with
// MemShare on, every fourth full generated block counts as shared.
//
// Thread-safe. Callbacks run on the scheduler thread, outside the engine's
// lock (a callback may call Abort or GetLoad).
#ifndef MEMSHARE_ENGINE_SERVER_TESTING_FAKE_INFERENCE_ENGINE_H_
#define MEMSHARE_ENGINE_SERVER_TESTING_FAKE_INFERENCE_ENGINE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/inference_engine.h"

namespace memshare::engine {

class FakeInferenceEngine final : public InferenceEngine {
 public:
  struct Options {
    // ModelInfo.model_id.
    std::string model_id = "fake-model";
    // Token ids of prompts must be in [0, vocab_size).
    int32_t vocab_size = 256;
    // Prompt + max_tokens must not exceed this.
    int32_t max_model_len = 4096;
    int32_t block_size = 16;
    int64_t kv_blocks_total = 4096;
    // Bytes of one KV block (for bytes_saved).
    int64_t kv_block_bytes = 1 << 16;
    // Time between steps (one token per running request per step).
    absl::Duration step_interval = absl::Milliseconds(1);
    // Requests in the running batch; the rest wait.
    int max_running = 16;
    // Waiting requests beyond this are refused with RESOURCE_EXHAUSTED.
    int max_waiting = 256;
    // Largest per-request MemShare thresholds accepted.
    float max_tau_kv = 0.5f;
    // Scheduler starts paused (see Pause/Resume).
    bool start_paused = false;
  };

  static absl::StatusOr<std::unique_ptr<FakeInferenceEngine>> Create(const Options& options);
  // Ends every live request with an ABORT event, then joins the thread.
  ~FakeInferenceEngine() override;
  FakeInferenceEngine(const FakeInferenceEngine&) = delete;
  FakeInferenceEngine& operator=(const FakeInferenceEngine&) = delete;

  absl::Status Submit(EngineRequest request, EventCallback on_event) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Abort(const std::string& request_id) override ABSL_LOCKS_EXCLUDED(mu_);
  LoadReport GetLoad() const override ABSL_LOCKS_EXCLUDED(mu_);
  ModelInfo GetModelInfo() const override;
  void SetStepObserver(StepObserver observer) override ABSL_LOCKS_EXCLUDED(mu_);

  // While paused no step runs: submitted requests wait (or sit in the
  // running batch) without tokens. For tests of "queued" and "in flight".
  void Pause() ABSL_LOCKS_EXCLUDED(mu_);
  void Resume() ABSL_LOCKS_EXCLUDED(mu_);
  // Submits fail with `status` while it is not OK.
  void SetSubmitError(absl::Status status) ABSL_LOCKS_EXCLUDED(mu_);
  // health() returns `status` from now on (an engine whose group broke).
  void SetHealth(absl::Status status) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status health() const override ABSL_LOCKS_EXCLUDED(mu_);
  // Requests submitted so far (accepted or not), and aborts received.
  int64_t submitted() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t aborted() const ABSL_LOCKS_EXCLUDED(mu_);

  // The tokens a request with this prompt and seed generates at `index`
  // (what tests compare streams against).
  static int32_t TokenAt(const std::vector<int32_t>& prompt, uint64_t seed, int index);
  // The prompt tokens of a request (text bytes, rendered chat, or its ids).
  static std::vector<int32_t> PromptTokens(const EngineRequest& request);

 private:
  struct Live;
  explicit FakeInferenceEngine(const Options& options);
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  int64_t BlocksOf(const Live& live) const;
  int64_t SharedBlocksOf(const Live& live) const;

  const Options options_;
  mutable absl::Mutex mu_;
  std::list<std::unique_ptr<Live>> waiting_ ABSL_GUARDED_BY(mu_);
  std::list<std::unique_ptr<Live>> running_ ABSL_GUARDED_BY(mu_);
  bool paused_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status submit_error_ ABSL_GUARDED_BY(mu_);
  absl::Status health_ ABSL_GUARDED_BY(mu_);
  StepObserver observer_ ABSL_GUARDED_BY(mu_);
  int64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t aborted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t remapped_total_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_TESTING_FAKE_INFERENCE_ENGINE_H_
