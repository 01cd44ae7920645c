// WorkerService (proto/memshare/v1/worker.proto) over an InferenceEngine:
// the gRPC face of one worker group's rank 0.
//
// RPC handlers are thin and never block: Generate converts and validates the
// request (request_conversion.h), submits it, and streams the engine's events
// back from the engine's callbacks. While the client is slow to read, new
// tokens are coalesced into the next chunk (memory per stream stays bounded
// by max_tokens). A cancelled call (client gone, deadline passed, router
// retrying elsewhere) aborts the engine request, which frees its KV blocks.
//
// Drain: StartDrain (SIGTERM or the Drain RPC) makes Generate answer
// UNAVAILABLE; open streams finish normally; WaitForStreams waits for them.
//
// Thread-safe. Lifetime: the engine's callbacks reach streams that use the
// service, so destroy the grpc::Server first, then the engine (which ends its
// live requests), then the service (WorkerServer does this).
#ifndef MEMSHARE_ENGINE_SERVER_WORKER_SERVICE_H_
#define MEMSHARE_ENGINE_SERVER_WORKER_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/serving_metrics.h"
#include "engine/inference_engine.h"
#include "engine/server/request_conversion.h"
#include "engine/server/step_time_recorder.h"
#include "proto/memshare/v1/worker.grpc.pb.h"

namespace memshare::engine {

class WorkerService final : public v1::WorkerService::CallbackService {
 public:
  struct Options {
    // max_tokens when a request sets none.
    int32_t default_max_tokens = 256;
    // Longest text prompt (or sum of chat contents), in bytes.
    int64_t max_prompt_bytes = 1 << 20;
    // Prefix of the request ids the worker assigns to requests without one.
    std::string request_id_prefix = "worker";
    // Called once when draining starts (to flip the health status).
    std::function<void()> on_drain;
  };

  // `engine` is not owned (see the lifetime rule above). `metrics` may be
  // null (no metrics).
  static absl::StatusOr<std::unique_ptr<WorkerService>> Create(const Options& options,
                                                               InferenceEngine* engine,
                                                               ServingMetrics* metrics);
  WorkerService(const WorkerService&) = delete;
  WorkerService& operator=(const WorkerService&) = delete;
  ~WorkerService() override = default;

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const v1::GetLoadRequest* request,
                                    v1::LoadReport* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

  // Stops accepting new requests. Idempotent.
  void StartDrain() ABSL_LOCKS_EXCLUDED(mu_);
  bool draining() const ABSL_LOCKS_EXCLUDED(mu_);
  // Streams accepted and not yet ended.
  int active_streams() const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until no stream is open (true) or `deadline` passes (false).
  // Not from a gRPC or engine thread.
  bool WaitForStreams(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // Aborts the engine requests of every open stream (their streams end with
  // finish_reason ABORT).
  void AbortAll() ABSL_LOCKS_EXCLUDED(mu_);

  // The engine's load, plus draining, open streams and step times.
  v1::LoadReport BuildLoadReport() const ABSL_LOCKS_EXCLUDED(mu_);
  StepTimeRecorder& step_times() { return step_times_; }

 private:
  class GenerateReactor;
  class DrainReactor;
  friend class GenerateReactor;
  friend class DrainReactor;

  WorkerService(const Options& options, InferenceEngine* engine, ServingMetrics* metrics);
  // Registers an accepted stream; ALREADY_EXISTS when the id is open.
  absl::Status AddStream(const std::string& request_id) ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveStream(const std::string& request_id) ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveDrainWaiter(DrainReactor* waiter) ABSL_LOCKS_EXCLUDED(mu_);
  std::string NextRequestId();

  const Options options_;
  InferenceEngine* const engine_;
  ServingMetrics* const metrics_;  // may be null
  RequestLimits limits_;
  StepTimeRecorder step_times_;
  std::atomic<uint64_t> next_id_{0};

  mutable absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Request ids of open streams.
  std::set<std::string> streams_ ABSL_GUARDED_BY(mu_);
  // Drain calls waiting for streams_ to empty.
  std::vector<DrainReactor*> drain_waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_WORKER_SERVICE_H_
