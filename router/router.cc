#include "router/router.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"

namespace memshare::router {
namespace {

grpc::Status Status(grpc::StatusCode code, const std::string& message) {
  return grpc::Status(code, message);
}

bool Finite(absl::Time t) { return t != absl::InfiniteFuture(); }

}  // namespace

// One call to one worker. Owns itself: deleted in OnDone. A hold keeps it
// alive while the Call may still start a read or cancel it from outside a
// reaction; the Call releases the hold when it will do neither again, and
// never while a TryCancel on it has not returned (see Call::cancelling_).
class Router::Attempt final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Attempt(CallPtr call, WorkerPtr worker) : call_(std::move(call)), worker_(std::move(worker)) {}

  void Begin() {
    if (Finite(call_->deadline_)) context_.set_deadline(absl::ToChronoTime(call_->deadline_));
    worker_->stub()->async()->Generate(&context_, &call_->request_, this);
    AddHold();
    StartRead(&buf_);
    StartCall();
  }
  void OnReadDone(bool ok) override { call_->OnUpstreamRead(this, ok); }
  void OnDone(const grpc::Status& status) override {
    const bool draining = context_.GetServerTrailingMetadata().count(kDrainingMetadataKey) > 0;
    call_->OnUpstreamDone(this, worker_, status, draining);
    Router* router = call_->router_;
    WorkerPtr worker = std::move(worker_);
    delete this;
    router->AttemptEnded(worker);
  }

  grpc::ClientContext context_;
  v1::GenerateResponse buf_;  // the read in progress (or the one just done)

 private:
  const CallPtr call_;
  WorkerPtr worker_;
};

// ---------------------------------------------------------------- Call

Router::Call::Call(Router* router, v1::GenerateRequest request, absl::Time deadline,
                   ResponseSink* sink, RouteKey key)
    : router_(router),
      request_(std::move(request)),
      deadline_(deadline),
      start_(absl::Now()),
      sink_(sink),
      key_(std::move(key)) {}

void Router::Call::Run(const Actions& a) {
  if (a.cancel != nullptr) {
    a.cancel->context_.TryCancel();
    CancelDone(a.cancel);
  }
  if (a.write != nullptr) sink_->SinkWrite(*a.write);
  if (a.read != nullptr) a.read->StartRead(&a.read->buf_);
  if (a.release != nullptr) a.release->RemoveHold();
  if (a.finish.has_value()) {
    if (router_->serving_metrics_) {
      router_->serving_metrics_->RecordRequestEnd(
          static_cast<absl::StatusCode>(a.finish->error_code()));
      router_->serving_metrics_->ObserveEndToEnd(absl::Now() - start_);
    }
    sink_->SinkFinish(*a.finish);
    router_->Forget(shared_from_this());
  }
}

void Router::Call::CancelDone(Attempt* attempt) {
  bool release = false;
  {
    absl::MutexLock lock(&mu_);
    cancelling_ = false;
    // With a read outstanding, its OnUpstreamRead releases the hold.
    if (!hold_released_ && !read_outstanding_) {
      hold_released_ = true;
      release = true;
    }
  }
  if (release) attempt->RemoveHold();
}

void Router::Call::FinishLocked(const grpc::Status& status, Actions* a) {
  if (finished_) return;
  finished_ = true;
  a->finish = status;
}

void Router::Call::MaybeFinishLocked(Actions* a) {
  if (final_.has_value() && !sink_writing_ && !has_held_) FinishLocked(*final_, a);
}

WorkerPtr Router::Call::current_worker() const {
  absl::MutexLock lock(&mu_);
  return attempt_ != nullptr ? worker_ : nullptr;
}

void Router::Call::Dispatch(const WorkerPtr& worker) {
  Attempt* attempt = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (!finished_ && !cancelled_) {
      attempt = new Attempt(shared_from_this(), worker);
      attempt_ = attempt;
      worker_ = worker;
      read_outstanding_ = true;
      hold_released_ = false;
    }
  }
  if (attempt == nullptr) {
    router_->AttemptEnded(worker);
    return;
  }
  if (router_->router_metrics_) router_->router_metrics_->RecordRouted(worker->address());
  attempt->Begin();
}

void Router::Call::OnUpstreamRead(Attempt* attempt, bool ok) {
  Actions a;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    read_outstanding_ = false;
    if (!ok || cancelled_ || finished_) {
      // End of the worker's stream, or nobody to forward to: no more reads.
      // A cancel still running releases the hold itself, once it returned.
      if (!hold_released_ && !cancelling_) {
        hold_released_ = true;
        a.release = attempt;
      }
    } else {
      streamed_ = true;
      const v1::GenerateResponse& m = attempt->buf_;
      if (m.has_chunk() && m.chunk().token_ids_size() > 0 && router_->serving_metrics_) {
        if (!first_token_) {
          first_token_ = true;
          router_->serving_metrics_->ObserveTimeToFirstToken(now - start_);
        } else {
          router_->serving_metrics_->ObserveInterTokenLatency(now - last_token_,
                                                              m.chunk().token_ids_size());
        }
        last_token_ = now;
      }
      if (m.has_result() && router_->serving_metrics_) {
        router_->serving_metrics_->RecordTokens(m.result().usage().prompt_tokens(),
                                                m.result().usage().completion_tokens());
      }
      if (!sink_writing_) {
        write_msg_.Swap(&attempt->buf_);
        sink_writing_ = true;
        a.write = &write_msg_;
        read_outstanding_ = true;
        a.read = attempt;
      } else {
        held_.Swap(&attempt->buf_);
        has_held_ = true;
      }
    }
  }
  Run(a);
}

void Router::Call::OnUpstreamDone(Attempt* /*attempt*/, const WorkerPtr& worker,
                                  const grpc::Status& status, bool draining) {
  Actions a;
  bool streamed;
  {
    absl::MutexLock lock(&mu_);
    attempt_ = nullptr;
    worker_ = nullptr;
    hold_released_ = true;
    if (finished_ || cancelled_) return;
    if (status.ok()) {
      final_ = grpc::Status::OK;
      MaybeFinishLocked(&a);
    }
    streamed = streamed_;
  }
  if (status.ok()) return Run(a);
  if (!streamed && router_->MaybeRetry(shared_from_this(), worker, status, draining)) return;

  grpc::Status end = status;
  const bool transport = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                         status.error_code() == grpc::StatusCode::CANCELLED;
  if (absl::Now() >= deadline_) {
    end = Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
  } else if (transport && streamed) {
    end = Status(grpc::StatusCode::UNAVAILABLE,
                 absl::StrCat("worker ", worker->address(),
                              " failed after the stream began: ", status.error_message()));
  } else if (status.error_code() == grpc::StatusCode::CANCELLED) {
    // The router did not cancel (the client is still here): the worker went.
    end = Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("worker ", worker->address(), " ended the call: ", status.error_message()));
  }
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || cancelled_) return;
    final_ = end;
    MaybeFinishLocked(&a);
  }
  Run(a);
}

void Router::Call::OnSinkWriteDone(bool ok) {
  Actions a;
  {
    absl::MutexLock lock(&mu_);
    sink_writing_ = false;
    if (finished_) return;
    if (!ok && !cancelled_) {
      cancelled_ = true;
      final_ = Status(grpc::StatusCode::CANCELLED, "client went away");
      if (attempt_ != nullptr && !hold_released_) {
        a.cancel = attempt_;
        cancelling_ = true;
      }
    }
    if (cancelled_) {
      // Nothing more goes to the client; a Cancel that came while this
      // write was in progress left the finish to here.
      has_held_ = false;
      MaybeFinishLocked(&a);
    } else if (has_held_) {
      write_msg_.Swap(&held_);
      held_.Clear();
      has_held_ = false;
      sink_writing_ = true;
      a.write = &write_msg_;
      if (attempt_ != nullptr && !hold_released_ && !read_outstanding_) {
        read_outstanding_ = true;
        a.read = attempt_;
      }
    } else {
      MaybeFinishLocked(&a);
    }
  }
  Run(a);
}

void Router::Call::Cancel() {
  Actions a;
  bool on_worker;
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || cancelled_) return;
    cancelled_ = true;
    on_worker = attempt_ != nullptr;
    if (attempt_ != nullptr && !hold_released_) {
      a.cancel = attempt_;
      cancelling_ = true;
    }
    has_held_ = false;
    final_ = Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    // A sink write decided on another thread may not have started yet: the
    // sink is finished (and may go away) only after its OnSinkWriteDone.
    MaybeFinishLocked(&a);
  }
  if (!on_worker) router_->Dequeue(this);
  Run(a);
}

void Router::Call::End(const grpc::Status& status) {
  Actions a;
  {
    absl::MutexLock lock(&mu_);
    FinishLocked(status, &a);
  }
  Run(a);
}

void Router::Call::AbortQueued() {
  Actions a;
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || cancelled_) return;
    v1::GenerateResponse result;
    result.mutable_result()->set_finish_reason(v1::FINISH_REASON_ABORT);
    final_ = grpc::Status::OK;
    if (!sink_writing_) {
      write_msg_ = std::move(result);
      sink_writing_ = true;
      a.write = &write_msg_;
    } else {
      held_ = std::move(result);
      has_held_ = true;
    }
  }
  Run(a);
}

// ---------------------------------------------------------------- Router

absl::StatusOr<std::unique_ptr<Router>> Router::Create(const Options& options,
                                                       WorkerRegistry* registry,
                                                       std::unique_ptr<RoutingPolicy> policy,
                                                       ServingMetrics* serving_metrics,
                                                       RouterMetrics* router_metrics) {
  if (registry == nullptr || policy == nullptr) {
    return absl::InvalidArgumentError("router: registry and policy are required");
  }
  if (options.max_queue < 0 || options.max_in_flight_per_worker < 1 || options.max_attempts < 1 ||
      options.queue_timeout <= absl::ZeroDuration() || options.prefix_blocks < 1) {
    return absl::InvalidArgumentError(
        "router: max_queue >= 0, max_in_flight_per_worker >= 1, max_attempts >= 1, "
        "queue_timeout > 0 and prefix_blocks >= 1 are required");
  }
  auto router = std::unique_ptr<Router>(
      new Router(options, registry, std::move(policy), serving_metrics, router_metrics));
  router->maintainer_ = std::thread([r = router.get()] { r->Maintain(); });
  return router;
}

Router::Router(const Options& options, WorkerRegistry* registry,
               std::unique_ptr<RoutingPolicy> policy, ServingMetrics* serving_metrics,
               RouterMetrics* router_metrics)
    : options_(options),
      registry_(registry),
      policy_(std::move(policy)),
      serving_metrics_(serving_metrics),
      router_metrics_(router_metrics) {}

void Router::CancelAll() {
  std::vector<CallPtr> calls;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [id, call] : live_) calls.push_back(call);
    for (auto& call : queue_) call->in_queue_ = false;
    queue_.clear();
    PublishGaugesLocked();
  }
  for (const CallPtr& call : calls) call->Cancel();
}

Router::~Router() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (maintainer_.joinable()) maintainer_.join();
  CancelAll();
  // Attempts call back into the router until they end.
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
  mu_.AwaitWithTimeout(absl::Condition(&none), absl::Seconds(10));
}

Router::CallPtr Router::Start(v1::GenerateRequest request, absl::Time deadline,
                              ResponseSink* sink) {
  int block_size = 16;
  if (std::optional<v1::ModelInfo> info = registry_->model_info();
      info.has_value() && info->block_size() > 0) {
    block_size = info->block_size();
  }
  RouteKey key = MakeRouteKey(request, block_size, options_.prefix_blocks);
  grpc::Status refusal;
  std::string rejected_reason;
  CallPtr call;
  {
    absl::MutexLock lock(&mu_);
    if (request.request_id().empty()) {
      request.set_request_id(absl::StrCat(options_.request_id_prefix, "-", ++next_id_));
    }
    call = CallPtr(new Call(this, std::move(request), deadline, sink, std::move(key)));
    if (draining_) {
      refusal = Status(grpc::StatusCode::UNAVAILABLE, "router is draining");
      rejected_reason = "draining";
    } else if (static_cast<int>(queue_.size()) >= options_.max_queue) {
      refusal = Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       absl::StrCat("router queue is full (", options_.max_queue,
                                    " requests waiting); retry later"));
      rejected_reason = "queue_full";
    } else if (live_.contains(call->request_id())) {
      refusal = Status(grpc::StatusCode::ALREADY_EXISTS,
                       absl::StrCat("request_id: '", call->request_id(), "' is already live"));
    } else {
      live_[call->request_id()] = call;
      call->in_queue_ = true;
      call->queued_since_ = absl::Now();
      queue_.push_back(call);
      PublishGaugesLocked();
    }
  }
  if (!refusal.ok()) {
    if (router_metrics_ && !rejected_reason.empty()) {
      router_metrics_->RecordRejected(rejected_reason);
    }
    Call::Actions a;
    {
      absl::MutexLock lock(&call->mu_);
      call->FinishLocked(refusal, &a);
    }
    // Not live: Run's Forget finds nothing (or another call) and leaves it.
    call->Run(a);
    return call;
  }
  Pump();
  return call;
}

void Router::Forget(const CallPtr& call) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(call->request_id());
  if (it != live_.end() && it->second == call) live_.erase(it);
}

bool Router::Dequeue(const Call* call) {
  CallPtr removed;
  absl::MutexLock lock(&mu_);
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->get() == call) {
      (*it)->in_queue_ = false;
      removed = *it;
      queue_.erase(it);
      PublishGaugesLocked();
      return true;
    }
  }
  return false;
}

void Router::AttemptEnded(const WorkerPtr& worker) {
  worker->AddInFlight(-1);
  Pump();  // the worker's freed slot may take a queued call
  // Last: ~Router waits for in_flight_ to reach 0 and then destroys what
  // Pump uses.
  absl::MutexLock lock(&mu_);
  --in_flight_;
  PublishGaugesLocked();
}

bool Router::MaybeRetry(const CallPtr& call, const WorkerPtr& worker, const grpc::Status& status,
                        bool draining) {
  const grpc::StatusCode code = status.error_code();
  const bool capacity = code == grpc::StatusCode::RESOURCE_EXHAUSTED;
  const bool transport =
      code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED;
  if (!capacity && !transport) return false;
  // A draining worker answers UNAVAILABLE with kDrainingMetadataKey but is
  // alive: the poller sees it is not serving. Anything else at the transport
  // marks the worker down.
  draining = draining && code == grpc::StatusCode::UNAVAILABLE;
  if (transport && !draining) registry_->ReportFailure(worker);
  if (absl::Now() >= call->deadline_) return false;
  {
    absl::MutexLock lock(&call->mu_);
    if (call->finished_ || call->cancelled_) return false;
  }
  const std::vector<WorkerPtr> workers = registry_->workers();
  {
    absl::MutexLock lock(&mu_);
    if (stop_ || call->attempts_ >= options_.max_attempts) return false;
    const bool untried = std::any_of(workers.begin(), workers.end(), [&](const WorkerPtr& w) {
      return !call->tried_.contains(w->address());
    });
    if (!untried) return false;
    // Retried requests go first: they have waited longest.
    call->in_queue_ = true;
    call->queued_since_ = absl::Now();
    queue_.push_front(call);
    PublishGaugesLocked();
  }
  if (router_metrics_) {
    router_metrics_->RecordRetry(capacity   ? "resource_exhausted"
                                 : draining ? "draining"
                                            : "unavailable");
  }
  Pump();
  return true;
}

void Router::Pump() {
  {
    absl::MutexLock lock(&mu_);
    if (pumping_) {
      repump_ = true;
      return;
    }
    pumping_ = true;
  }
  while (true) {
    std::vector<std::pair<CallPtr, WorkerPtr>> dispatch;
    std::vector<WorkerPtr> open;
    for (const WorkerPtr& w : registry_->workers()) {
      if (w->eligible() && w->in_flight() < options_.max_in_flight_per_worker) open.push_back(w);
    }
    std::vector<WorkerView> views;
    std::vector<WorkerPtr> candidates;
    {
      absl::MutexLock lock(&mu_);
      repump_ = false;
      for (auto it = queue_.begin(); it != queue_.end() && !open.empty();) {
        Call& call = **it;
        views.clear();
        candidates.clear();
        for (const WorkerPtr& w : open) {
          if (call.tried_.contains(w->address())) continue;
          views.push_back(w->View());
          candidates.push_back(w);
        }
        if (candidates.empty()) {
          ++it;
          continue;
        }
        const size_t pick = std::min(policy_->Pick(call.key_, views), candidates.size() - 1);
        const WorkerPtr worker = candidates[pick];
        worker->AddInFlight(1);
        ++in_flight_;
        call.tried_.insert(worker->address());
        ++call.attempts_;
        call.in_queue_ = false;
        dispatch.emplace_back(*it, worker);
        it = queue_.erase(it);
        if (worker->in_flight() >= options_.max_in_flight_per_worker) {
          std::erase(open, worker);
        }
      }
      PublishGaugesLocked();
    }
    for (auto& [call, worker] : dispatch) call->Dispatch(worker);
    absl::MutexLock lock(&mu_);
    if (!repump_) {
      pumping_ = false;
      return;
    }
  }
}

void Router::Abort(const std::string& request_id, std::function<void(absl::Status)> done) {
  CallPtr call;
  bool was_queued = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = live_.find(request_id);
    if (it != live_.end()) {
      call = it->second;
      if (call->in_queue_) {
        was_queued = true;
        call->in_queue_ = false;
        std::erase(queue_, call);
        PublishGaugesLocked();
      }
    }
  }
  if (call == nullptr) {
    done(absl::NotFoundError(absl::StrCat("no live request '", request_id, "'")));
    return;
  }
  if (was_queued) {
    call->AbortQueued();
    done(absl::OkStatus());
    return;
  }
  WorkerPtr worker = call->current_worker();
  if (worker == nullptr) {
    done(absl::UnavailableError(
        absl::StrCat("request '", request_id, "' is between workers; retry the abort")));
    return;
  }
  struct AbortCall {
    grpc::ClientContext context;
    v1::AbortRequest request;
    v1::AbortResponse response;
  };
  auto* abort = new AbortCall;
  abort->request.set_request_id(request_id);
  abort->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  worker->stub()->async()->Abort(&abort->context, &abort->request, &abort->response,
                                 [abort, done = std::move(done)](grpc::Status s) {
                                   done(FromGrpcStatus(s));
                                   delete abort;
                                 });
}

void Router::StartDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool Router::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool Router::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return live_.empty() && queue_.empty(); };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

int Router::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int Router::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

int Router::live() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(live_.size());
}

void Router::PublishGaugesLocked() {
  if (router_metrics_ == nullptr) return;
  router_metrics_->SetQueueDepth(static_cast<int>(queue_.size()));
  router_metrics_->SetInFlight(in_flight_);
}

void Router::Maintain() {
  while (true) {
    std::vector<std::pair<CallPtr, grpc::Status>> expired;
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Milliseconds(20))) return;
      const absl::Time now = absl::Now();
      for (auto it = queue_.begin(); it != queue_.end();) {
        Call& call = **it;
        grpc::Status status;
        if (now >= call.deadline_) {
          status = Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "deadline exceeded while waiting for a worker");
        } else if (now - call.queued_since_ >= options_.queue_timeout) {
          status = Status(grpc::StatusCode::UNAVAILABLE, "");
        } else {
          ++it;
          continue;
        }
        call.in_queue_ = false;
        expired.emplace_back(*it, status);
        it = queue_.erase(it);
      }
      if (!expired.empty()) PublishGaugesLocked();
    }
    if (expired.empty()) {
      Pump();  // picks up capacity freed without a notification
      continue;
    }
    bool any_up = false;
    for (const WorkerPtr& w : registry_->workers()) any_up = any_up || w->eligible();
    for (auto& [call, status] : expired) {
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        status = any_up ? Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 absl::StrCat("every worker stayed busy for ",
                                              absl::FormatDuration(options_.queue_timeout)))
                        : Status(grpc::StatusCode::UNAVAILABLE,
                                 absl::StrCat("no healthy worker for ",
                                              absl::FormatDuration(options_.queue_timeout)));
        if (router_metrics_ && !any_up) router_metrics_->RecordRejected("no_worker");
      }
      call->End(status);
    }
  }
}

}  // namespace memshare::router
