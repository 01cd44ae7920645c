#include "engine/server/worker_service.h"

#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"

namespace memshare::engine {
namespace {

// The call's deadline as absl::Time (InfiniteFuture when it has none).
absl::Time CallDeadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 10)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace

// One Generate call. Owns itself: deleted when gRPC is done with it (OnDone)
// and the engine is done with it (final event delivered, or never
// submitted).
class WorkerService::GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(WorkerService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), start_(absl::Now()) {}

  void Start(const v1::GenerateRequest& request) {
    absl::StatusOr<EngineRequest> converted =
        ToEngineRequest(request, service_->limits_, CallDeadline(*context_));
    if (!converted.ok()) return Reject(converted.status());
    if (converted->request_id.empty()) converted->request_id = service_->NextRequestId();
    request_id_ = converted->request_id;
    if (service_->draining()) {
      context_->AddTrailingMetadata(kDrainingMetadataKey, "1");
      return Reject(absl::UnavailableError("worker is draining; retry on another worker"));
    }
    if (absl::Status s = service_->AddStream(request_id_); !s.ok()) return Reject(s);
    registered_ = true;
    absl::Status submitted = service_->engine_->Submit(
        *std::move(converted), [this](const StreamEvent& event) { OnEvent(event); });
    if (!submitted.ok()) Reject(submitted);
  }

  void OnWriteDone(bool ok) override {
    Action action;
    bool abort = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        cancelled_ = true;
        abort = TakeAbortLocked();
      }
      action = NextLocked();
    }
    if (abort) (void)service_->engine_->Abort(request_id_);
    Do(action);
  }

  void OnCancel() override {
    Action action;
    bool abort = false;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      abort = TakeAbortLocked();
      action = NextLocked();
    }
    if (abort) (void)service_->engine_->Abort(request_id_);
    Do(action);
  }

  void OnDone() override {
    bool destroy;
    {
      absl::MutexLock lock(&mu_);
      grpc_done_ = true;
      destroy = engine_done_;
    }
    if (destroy) Destroy();
  }

 private:
  enum class ActionKind { kNone, kWrite, kWriteAndFinish, kFinish };
  struct Action {
    ActionKind kind = ActionKind::kNone;
    grpc::Status status;
  };

  // Ends the call before (or instead of) submitting to the engine.
  void Reject(const absl::Status& status) {
    Action action;
    bool destroy;
    {
      absl::MutexLock lock(&mu_);
      engine_done_ = true;
      final_status_ = ToGrpcStatus(status);
      action = NextLocked();
      destroy = grpc_done_;
    }
    Do(action);
    if (destroy) Destroy();
  }

  // Engine thread: must not block.
  void OnEvent(const StreamEvent& event) {
    const bool last = event.finished || !event.status.ok();
    const absl::Time now = absl::Now();
    Action action;
    bool destroy = false;
    {
      absl::MutexLock lock(&mu_);
      if (!event.token_ids.empty() && !finish_called_) {
        if (!first_token_) {
          first_token_ = true;
          if (service_->metrics_) service_->metrics_->ObserveTimeToFirstToken(now - start_);
        } else if (service_->metrics_) {
          service_->metrics_->ObserveInterTokenLatency(now - last_token_,
                                                       static_cast<int>(event.token_ids.size()));
        }
        last_token_ = now;
      }
      if (!finish_called_ && (!event.token_ids.empty() || !event.text_delta.empty())) {
        AppendToChunk(event, pending_.mutable_chunk());
        has_pending_ = true;
      }
      if (last) {
        engine_done_ = true;
        if (event.status.ok()) {
          result_.emplace();
          *result_->mutable_result() = ToResult(event);
        } else {
          final_status_ = ToGrpcStatus(event.status);
        }
        if (service_->metrics_) {
          service_->metrics_->RecordTokens(event.usage.prompt_tokens,
                                           event.usage.completion_tokens);
        }
      }
      action = NextLocked();
      destroy = engine_done_ && grpc_done_;
    }
    Do(action);
    if (destroy) Destroy();
  }

  // True (once) when the engine request must be aborted.
  bool TakeAbortLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!registered_ || engine_done_ || abort_sent_) return false;
    abort_sent_ = true;
    return true;
  }

  // What to start next on the call, given the state.
  Action NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Action a;
    if (writing_ || finish_called_) return a;
    if (cancelled_) {
      finish_called_ = true;
      a.kind = ActionKind::kFinish;
      a.status = grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled");
      return a;
    }
    if (has_pending_) {
      writing_msg_ = std::move(pending_);
      pending_.Clear();
      has_pending_ = false;
      writing_ = true;
      a.kind = ActionKind::kWrite;
      return a;
    }
    if (result_.has_value()) {
      writing_msg_ = *std::move(result_);
      result_.reset();
      writing_ = true;
      finish_called_ = true;
      a.kind = ActionKind::kWriteAndFinish;
      return a;
    }
    if (final_status_.has_value()) {
      finish_called_ = true;
      a.kind = ActionKind::kFinish;
      a.status = *final_status_;
      return a;
    }
    return a;
  }

  // Starts the action, outside the lock. writing_msg_ is not touched again
  // until OnWriteDone (or ever, after a finish).
  void Do(const Action& a) {
    switch (a.kind) {
      case ActionKind::kNone:
        return;
      case ActionKind::kWrite:
        StartWrite(&writing_msg_);
        return;
      case ActionKind::kWriteAndFinish:
        RecordEnd(grpc::StatusCode::OK);
        StartWriteAndFinish(&writing_msg_, grpc::WriteOptions(), grpc::Status::OK);
        return;
      case ActionKind::kFinish:
        RecordEnd(a.status.error_code());
        Finish(a.status);
        return;
    }
  }

  void RecordEnd(grpc::StatusCode code) {
    if (service_->metrics_ == nullptr) return;
    service_->metrics_->RecordRequestEnd(static_cast<absl::StatusCode>(code));
    service_->metrics_->ObserveEndToEnd(absl::Now() - start_);
  }

  void Destroy() {
    if (registered_) service_->RemoveStream(request_id_);
    delete this;
  }

  WorkerService* const service_;
  grpc::CallbackServerContext* const context_;
  const absl::Time start_;
  std::string request_id_;
  bool registered_ = false;  // set in Start before the engine can call back

  absl::Mutex mu_;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);  // chunk not yet written
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<v1::GenerateResponse> result_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> final_status_ ABSL_GUARDED_BY(mu_);
  // The message being written; owned here until OnWriteDone.
  v1::GenerateResponse writing_msg_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool abort_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool engine_done_ ABSL_GUARDED_BY(mu_) = false;
  bool grpc_done_ ABSL_GUARDED_BY(mu_) = false;
  bool first_token_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_token_ ABSL_GUARDED_BY(mu_);
};

// A Drain call with wait = true: answered when the last stream ends.
class WorkerService::DrainReactor final : public grpc::ServerUnaryReactor {
 public:
  DrainReactor(WorkerService* service, v1::DrainResponse* response)
      : service_(service), response_(response) {}

  // Called at most once by the service, under its lock.
  void Complete(int active) {
    if (done_.exchange(true)) return;
    response_->set_active_streams(active);
    Finish(grpc::Status::OK);
  }
  void OnCancel() override {
    service_->RemoveDrainWaiter(this);
    if (done_.exchange(true)) return;
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "drain wait cancelled"));
  }
  void OnDone() override { delete this; }

 private:
  WorkerService* const service_;
  v1::DrainResponse* const response_;
  std::atomic<bool> done_{false};
};

absl::StatusOr<std::unique_ptr<WorkerService>> WorkerService::Create(const Options& options,
                                                                     InferenceEngine* engine,
                                                                     ServingMetrics* metrics) {
  if (engine == nullptr) return absl::InvalidArgumentError("engine must not be null");
  if (options.default_max_tokens < 1) {
    return absl::InvalidArgumentError("default_max_tokens must be >= 1");
  }
  if (options.max_prompt_bytes < 1) {
    return absl::InvalidArgumentError("max_prompt_bytes must be >= 1");
  }
  const ModelInfo info = engine->GetModelInfo();
  if (info.max_model_len < 2 || info.vocab_size < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "engine reports max_model_len ", info.max_model_len, " and vocab_size ", info.vocab_size));
  }
  auto service = std::unique_ptr<WorkerService>(new WorkerService(options, engine, metrics));
  engine->SetStepObserver([recorder = &service->step_times_](StepPhase phase, double seconds) {
    recorder->Observe(phase, seconds);
  });
  return service;
}

WorkerService::WorkerService(const Options& options, InferenceEngine* engine,
                             ServingMetrics* metrics)
    : options_(options), engine_(engine), metrics_(metrics) {
  const ModelInfo info = engine->GetModelInfo();
  limits_.max_model_len = info.max_model_len;
  limits_.vocab_size = info.vocab_size;
  limits_.default_max_tokens = options.default_max_tokens;
  limits_.max_prompt_bytes = options.max_prompt_bytes;
}

std::string WorkerService::NextRequestId() {
  return absl::StrCat(options_.request_id_prefix, "-", next_id_.fetch_add(1) + 1);
}

absl::Status WorkerService::AddStream(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  if (!streams_.insert(request_id).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("request_id: '", request_id, "' is already live on this worker"));
  }
  return absl::OkStatus();
}

void WorkerService::RemoveStream(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  streams_.erase(request_id);
  if (streams_.empty()) {
    for (DrainReactor* w : drain_waiters_) w->Complete(0);
    drain_waiters_.clear();
  }
}

void WorkerService::RemoveDrainWaiter(DrainReactor* waiter) {
  absl::MutexLock lock(&mu_);
  std::erase(drain_waiters_, waiter);
}

void WorkerService::StartDrain() {
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return;
    draining_ = true;
  }
  if (options_.on_drain) options_.on_drain();
}

bool WorkerService::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

int WorkerService::active_streams() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(streams_.size());
}

bool WorkerService::WaitForStreams(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  return mu_.AwaitWithDeadline(absl::Condition(&empty), deadline);
}

void WorkerService::AbortAll() {
  std::set<std::string> ids;
  {
    absl::MutexLock lock(&mu_);
    ids = streams_;
  }
  for (const std::string& id : ids) (void)engine_->Abort(id);
}

v1::LoadReport WorkerService::BuildLoadReport() const {
  v1::LoadReport report = ToProto(engine_->GetLoad());
  step_times_.FillReport(&report);
  absl::MutexLock lock(&mu_);
  report.set_draining(draining_);
  report.set_active_streams(static_cast<int32_t>(streams_.size()));
  return report;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* WorkerService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  auto* reactor = new GenerateReactor(this, context);
  reactor->Start(*request);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Abort(grpc::CallbackServerContext* context,
                                               const v1::AbortRequest* request,
                                               v1::AbortResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->request_id().empty()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError("request_id: must not be empty")));
    return reactor;
  }
  reactor->Finish(ToGrpcStatus(engine_->Abort(request->request_id())));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::GetLoad(grpc::CallbackServerContext* context,
                                                 const v1::GetLoadRequest* /*request*/,
                                                 v1::LoadReport* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = BuildLoadReport();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const v1::GetModelInfoRequest* /*request*/,
                                                      v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = ToProto(engine_->GetModelInfo());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Drain(grpc::CallbackServerContext* context,
                                               const v1::DrainRequest* request,
                                               v1::DrainResponse* response) {
  StartDrain();
  if (!request->wait()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    response->set_active_streams(active_streams());
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  auto* reactor = new DrainReactor(this, response);
  absl::MutexLock lock(&mu_);
  if (streams_.empty()) {
    reactor->Complete(0);
  } else {
    drain_waiters_.push_back(reactor);
  }
  return reactor;
}

}  // namespace memshare::engine
