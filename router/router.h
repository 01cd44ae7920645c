// The router's core, independent of the client's transport (gRPC
// InferenceService or OpenAI HTTP): admission into a bounded queue,
// dispatch to a worker chosen by the routing policy, streaming of the
// worker's messages to the client with flow control, retries, cancellation,
// deadlines and drain.
//
//  - Admission: a request waits in the queue until a worker is eligible
//    (healthy, serving, fewer than max_in_flight_per_worker calls). When
//    max_queue requests already wait, it is refused with RESOURCE_EXHAUSTED.
//    A request that waits longer than queue_timeout ends with UNAVAILABLE (no
//    worker up) or RESOURCE_EXHAUSTED (workers up but full).
//  - Retries: while no message has been sent to the client, a failed attempt
//    (worker unreachable or gone, draining, or refusing for capacity) is
//    retried on a worker not tried yet, up to max_attempts. After the first
//    message, a worker failure ends the stream with UNAVAILABLE.
//  - Cancellation: a client that goes away (or whose deadline passes) makes
//    the router cancel its call to the worker, which aborts the request and
//    frees its KV blocks. The client's deadline is the worker call's.
//  - Drain: StartDrain refuses new requests with UNAVAILABLE; queued and
//    running ones complete.
//
// Thread-safe. Lock order: Router::mu_ is never held while a Call's lock is
// taken, nor the reverse.
#ifndef MEMSHARE_ROUTER_ROUTER_H_
#define MEMSHARE_ROUTER_ROUTER_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/serving_metrics.h"
#include "proto/memshare/v1/worker.grpc.pb.h"
#include "router/router_metrics.h"
#include "router/routing_policy.h"
#include "router/worker_registry.h"

namespace memshare::router {

// Where a call's messages go: the client's stream. The router calls
// SinkWrite with at most one message outstanding (the next comes after
// Call::OnSinkWriteDone) and SinkFinish exactly once, last, with no write
// outstanding (after the OnSinkWriteDone of the last SinkWrite, which the
// sink must call even when the client is gone); after SinkFinish it never
// touches the sink again. `message` stays valid until OnSinkWriteDone.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void SinkWrite(const v1::GenerateResponse& message) = 0;
  virtual void SinkFinish(const grpc::Status& status) = 0;
};

class Router {
 public:
  struct Options {
    // Requests waiting for a worker; more are refused (RESOURCE_EXHAUSTED).
    int max_queue = 1024;
    // Calls in flight on one worker; more wait in the router's queue.
    int max_in_flight_per_worker = 256;
    // Attempts per request (the first and its retries), >= 1.
    int max_attempts = 3;
    // Longest wait in the queue.
    absl::Duration queue_timeout = absl::Seconds(30);
    // prefix policy: full KV blocks of the prompt that make its key (8: the
    // first 64 tokens at the workers' default 8-token blocks).
    int prefix_blocks = 8;
    // Prefix of the ids given to requests without one.
    std::string request_id_prefix = "router";
  };

  class Call;
  using CallPtr = std::shared_ptr<Call>;

  // `registry` and the metrics (which may be null) must outlive the router.
  static absl::StatusOr<std::unique_ptr<Router>> Create(const Options& options,
                                                        WorkerRegistry* registry,
                                                        std::unique_ptr<RoutingPolicy> policy,
                                                        ServingMetrics* serving_metrics,
                                                        RouterMetrics* router_metrics);
  // Ends queued calls (UNAVAILABLE) and cancels those in flight, then waits
  // for their workers' calls to end.
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Routes `request`. `sink` must stay valid until its SinkFinish. The
  // returned call takes the sink's notifications. The sink may be finished
  // before Start returns (refused at admission).
  CallPtr Start(v1::GenerateRequest request, absl::Time deadline, ResponseSink* sink)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Ends the live request `request_id` with finish_reason ABORT: a queued
  // one at once, one on a worker through the worker's Abort. `done` gets OK,
  // or NOT_FOUND when no live request has that id.
  void Abort(const std::string& request_id, std::function<void(absl::Status)> done)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Ends every live request: queued ones and those on workers end with
  // CANCELLED towards their clients, and their worker calls are cancelled.
  void CancelAll() ABSL_LOCKS_EXCLUDED(mu_);

  // Refuses new requests from now on (UNAVAILABLE). Idempotent.
  void StartDrain() ABSL_LOCKS_EXCLUDED(mu_);
  bool draining() const ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until no request is live (true) or `deadline` (false).
  bool WaitIdle(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // Dispatches what can be dispatched (the registry calls it when workers
  // change; it is also called on every admission and completion).
  void Pump() ABSL_LOCKS_EXCLUDED(mu_);

  int queued() const ABSL_LOCKS_EXCLUDED(mu_);
  int in_flight() const ABSL_LOCKS_EXCLUDED(mu_);
  int live() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class Attempt;
  friend class Call;
  friend class Attempt;

  Router(const Options& options, WorkerRegistry* registry, std::unique_ptr<RoutingPolicy> policy,
         ServingMetrics* serving_metrics, RouterMetrics* router_metrics);
  // A failed attempt: requeues the call (true) when it may retry. A
  // transport failure marks the worker down unless it was draining.
  bool MaybeRetry(const CallPtr& call, const WorkerPtr& worker, const grpc::Status& status,
                  bool draining) ABSL_LOCKS_EXCLUDED(mu_);
  // The call has ended towards its client.
  void Forget(const CallPtr& call) ABSL_LOCKS_EXCLUDED(mu_);
  // An attempt ended (its worker call is done).
  void AttemptEnded(const WorkerPtr& worker) ABSL_LOCKS_EXCLUDED(mu_);
  // Removes `call` from the queue; false if it was not queued.
  bool Dequeue(const Call* call) ABSL_LOCKS_EXCLUDED(mu_);
  // Expires calls that waited too long.
  void Maintain() ABSL_LOCKS_EXCLUDED(mu_);
  void PublishGaugesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  WorkerRegistry* const registry_;
  const std::unique_ptr<RoutingPolicy> policy_;
  ServingMetrics* const serving_metrics_;
  RouterMetrics* const router_metrics_;

  mutable absl::Mutex mu_;
  std::deque<CallPtr> queue_ ABSL_GUARDED_BY(mu_);
  // Live calls by request id (queued, in flight, or streaming out).
  std::map<std::string, CallPtr> live_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // attempts running on workers
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;
  bool repump_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread maintainer_;
};

// One request through the router. Shared by the router (while live), the
// running attempt and the client's sink.
class Router::Call : public std::enable_shared_from_this<Router::Call> {
 public:
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // The sink's write of the last SinkWrite message completed (ok = false:
  // the client is gone).
  void OnSinkWriteDone(bool ok) ABSL_LOCKS_EXCLUDED(mu_);
  // The client went away (or cancelled): ends the call towards the client
  // at once and cancels the worker's call.
  void Cancel() ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& request_id() const { return request_.request_id(); }

 private:
  friend class Router;
  friend class Router::Attempt;
  // What to do outside the lock, in this order.
  struct Actions {
    Attempt* cancel = nullptr;                    // TryCancel its call, then CancelDone
    const v1::GenerateResponse* write = nullptr;  // to the sink
    Attempt* read = nullptr;                      // StartRead on it
    Attempt* release = nullptr;                   // RemoveHold: it may end after this
    std::optional<grpc::Status> finish;           // to the sink
  };

  Call(Router* router, v1::GenerateRequest request, absl::Time deadline, ResponseSink* sink,
       RouteKey key);
  void Dispatch(const WorkerPtr& worker) ABSL_LOCKS_EXCLUDED(mu_);
  void OnUpstreamRead(Attempt* attempt, bool ok) ABSL_LOCKS_EXCLUDED(mu_);
  // `draining`: the worker refused the call with kDrainingMetadataKey.
  void OnUpstreamDone(Attempt* attempt, const WorkerPtr& worker, const grpc::Status& status,
                      bool draining) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the call towards the client with `status` (queue expiry, refusal).
  void End(const grpc::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends a call that never reached a worker with finish_reason ABORT.
  void AbortQueued() ABSL_LOCKS_EXCLUDED(mu_);
  WorkerPtr current_worker() const ABSL_LOCKS_EXCLUDED(mu_);
  void FinishLocked(const grpc::Status& status, Actions* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeFinishLocked(Actions* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(const Actions& a);
  // After a.cancel's TryCancel returned: releases the attempt's hold unless
  // a read is outstanding (whose OnUpstreamRead then releases it).
  void CancelDone(Attempt* attempt) ABSL_LOCKS_EXCLUDED(mu_);

  Router* const router_;
  v1::GenerateRequest request_;  // resent on retries; its request_id is set
  const absl::Time deadline_;
  const absl::Time start_;
  ResponseSink* const sink_;
  const RouteKey key_;

  // Dispatch bookkeeping, under the router's lock.
  std::set<std::string> tried_ ABSL_GUARDED_BY(router_->mu_);  // worker addresses
  int attempts_ ABSL_GUARDED_BY(router_->mu_) = 0;
  bool in_queue_ ABSL_GUARDED_BY(router_->mu_) = false;
  absl::Time queued_since_ ABSL_GUARDED_BY(router_->mu_);

  mutable absl::Mutex mu_;
  Attempt* attempt_ ABSL_GUARDED_BY(mu_) = nullptr;  // running attempt
  WorkerPtr worker_ ABSL_GUARDED_BY(mu_);            // its worker
  bool read_outstanding_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_released_ ABSL_GUARDED_BY(mu_) = true;  // attempt_ may end on its own
  // A TryCancel on attempt_ is running outside the lock. The hold stays
  // until it returned: once the cancel is sent, gRPC may end the attempt (on
  // this thread or another) as soon as nothing holds it.
  bool cancelling_ ABSL_GUARDED_BY(mu_) = false;
  bool streamed_ ABSL_GUARDED_BY(mu_) = false;  // a message went to the sink
  bool sink_writing_ ABSL_GUARDED_BY(mu_) = false;
  v1::GenerateResponse write_msg_;              // owned by the sink's write
  bool has_held_ ABSL_GUARDED_BY(mu_) = false;  // read, waiting for the sink
  v1::GenerateResponse held_ ABSL_GUARDED_BY(mu_);
  // To finish with, once written (a cancel sets it too: a sink write in
  // progress ends before the sink is finished).
  std::optional<grpc::Status> final_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // SinkFinish called
  bool first_token_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_token_ ABSL_GUARDED_BY(mu_);
};

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_ROUTER_H_
