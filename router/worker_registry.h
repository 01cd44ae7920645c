// The router's view of its worker groups: where they are (a static list, and
// a DNS name re-resolved periodically, e.g. a Kubernetes headless service),
// whether they are up (grpc.health.v1 Check and WorkerService.GetLoad polled
// every poll_interval; down after `unhealthy_after` failed polls, or at once
// when a call to it fails at the transport; up again at the first good poll),
// and their last load report (KV usage, queued tokens) for routing.
//
// Thread-safe. A Worker is shared (WorkerPtr) by the registry and the calls
// in flight on it, so a worker that leaves the registry (DNS) lives on until
// its last call ends; it takes no new call.
#ifndef MEMSHARE_ROUTER_WORKER_REGISTRY_H_
#define MEMSHARE_ROUTER_WORKER_REGISTRY_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/serving_metrics.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/memshare/v1/worker.grpc.pb.h"
#include "router/router_metrics.h"
#include "router/routing_policy.h"

namespace memshare::router {

// One worker group (its rank 0).
class Worker {
 public:
  Worker(std::string address, std::shared_ptr<grpc::Channel> channel);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const std::string& address() const { return address_; }
  v1::WorkerService::Stub* stub() const { return stub_.get(); }
  grpc::health::v1::Health::Stub* health_stub() const { return health_.get(); }

  // Answers polls (its calls in flight go on).
  bool up() const ABSL_LOCKS_EXCLUDED(mu_);
  // Up, serving (not draining) and still in the registry: takes new calls.
  bool eligible() const ABSL_LOCKS_EXCLUDED(mu_);
  v1::LoadReport load() const ABSL_LOCKS_EXCLUDED(mu_);
  int in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  void AddInFlight(int delta) { in_flight_.fetch_add(delta, std::memory_order_relaxed); }
  WorkerView View() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class WorkerRegistry;

  const std::string address_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::WorkerService::Stub> stub_;
  const std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::atomic<int> in_flight_{0};

  mutable absl::Mutex mu_;
  bool up_ ABSL_GUARDED_BY(mu_) = false;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool removed_ ABSL_GUARDED_BY(mu_) = false;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;  // consecutive failed polls
  v1::LoadReport load_ ABSL_GUARDED_BY(mu_);
};

using WorkerPtr = std::shared_ptr<Worker>;

class WorkerRegistry {
 public:
  // "host:port" -> the "ip:port" addresses it resolves to now.
  using Resolver =
      std::function<absl::StatusOr<std::vector<std::string>>(const std::string& target)>;

  struct Options {
    // Worker addresses, host:port.
    std::vector<std::string> static_workers;
    // A DNS name and port ("workers.ns.svc.cluster.local:50051") whose
    // addresses are workers; re-resolved every dns_refresh. Empty: none.
    std::string dns_target;
    absl::Duration dns_refresh = absl::Seconds(5);
    // Health and load polling.
    absl::Duration poll_interval = absl::Milliseconds(500);
    absl::Duration poll_timeout = absl::Seconds(1);
    // Failed polls in a row before a worker counts as down.
    int unhealthy_after = 2;
    // Largest message to and from workers.
    int max_message_bytes = 16 << 20;
    // Credentials of the channels to workers (TLS to workers when set).
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Resolves dns_target; default: getaddrinfo.
    Resolver resolver;
    // Called (on the registry's thread, or the reporter's) when a worker
    // joins, leaves, or becomes eligible or not. Must not block.
    std::function<void()> on_change;
  };

  // INVALID_ARGUMENT when there is no worker source or an option is bad.
  // Polls once before returning. `serving_metrics` and `router_metrics` may
  // be null; they must outlive the registry.
  static absl::StatusOr<std::unique_ptr<WorkerRegistry>> Create(const Options& options,
                                                                ServingMetrics* serving_metrics,
                                                                RouterMetrics* router_metrics);
  ~WorkerRegistry();
  WorkerRegistry(const WorkerRegistry&) = delete;
  WorkerRegistry& operator=(const WorkerRegistry&) = delete;

  // The workers in the registry now (up or not).
  std::vector<WorkerPtr> workers() const ABSL_LOCKS_EXCLUDED(mu_);
  // A call to `worker` failed at the transport: it counts as down until a
  // poll succeeds.
  void ReportFailure(const WorkerPtr& worker) ABSL_LOCKS_EXCLUDED(mu_);
  // The model the workers serve (from the first worker that answered).
  std::optional<v1::ModelInfo> model_info() const ABSL_LOCKS_EXCLUDED(mu_);
  // One poll round (and DNS resolution when due), blocking. The registry's
  // thread calls it; tests may too.
  void PollNow() ABSL_LOCKS_EXCLUDED(mu_);

  // Stops the polling thread (no more on_change from it). Idempotent.
  void StopPolling() ABSL_LOCKS_EXCLUDED(mu_);

  // getaddrinfo-based resolver.
  static absl::StatusOr<std::vector<std::string>> ResolveDns(const std::string& target);

 private:
  explicit WorkerRegistry(const Options& options, ServingMetrics* serving_metrics,
                          RouterMetrics* router_metrics);
  WorkerPtr MakeWorker(const std::string& address) const;
  // Adds `addresses` not yet present and drops the DNS workers not in it.
  void SyncDnsWorkers(const std::vector<std::string>& addresses) ABSL_LOCKS_EXCLUDED(mu_);
  void SetState(const WorkerPtr& worker, bool answered, bool serving, const v1::LoadReport* report)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  void NotifyChange();

  const Options options_;
  ServingMetrics* const serving_metrics_;
  RouterMetrics* const router_metrics_;

  mutable absl::Mutex mu_;
  std::vector<WorkerPtr> static_ ABSL_GUARDED_BY(mu_);
  std::vector<WorkerPtr> dns_ ABSL_GUARDED_BY(mu_);
  // Workers that left (DNS) while calls still held them. Kept here until
  // those calls are gone, so that the last reference, and with it the
  // channel, is dropped on the registry's thread: a gRPC channel must not be
  // destroyed on one of gRPC's own callback threads.
  std::vector<WorkerPtr> retired_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::ModelInfo> model_info_ ABSL_GUARDED_BY(mu_);
  absl::Time next_dns_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_WORKER_REGISTRY_H_
