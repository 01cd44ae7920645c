// The worker process's servers: the gRPC server (WorkerService, the standard
// grpc.health.v1.Health and server reflection) and the /metrics endpoint,
// around one InferenceEngine. memshare_worker's main and the tests build one
// of these.
//
// Thread-safe. Drain and Shutdown may be called once each, from a thread that
// is not a gRPC or engine thread.
#ifndef MEMSHARE_ENGINE_SERVER_WORKER_SERVER_H_
#define MEMSHARE_ENGINE_SERVER_WORKER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics_server.h"
#include "common/serving_metrics.h"
#include "engine/inference_engine.h"
#include "engine/server/worker_service.h"

namespace memshare::engine {

class WorkerServer {
 public:
  struct Options {
    // host:port of the gRPC server; port 0 lets the OS choose (see port()).
    std::string address = "0.0.0.0:50051";
    // host:port of /metrics; port 0 lets the OS choose; empty: no endpoint
    // (metrics are still kept, see metrics()).
    std::string metrics_address = "0.0.0.0:9401";
    // Largest gRPC message received or sent, in bytes.
    int max_message_bytes = 16 << 20;
    // PEM files of the server's TLS certificate and key; both empty: plain
    // text.
    std::string tls_cert_file;
    std::string tls_key_file;
    // How often the engine's load is copied into the metrics.
    absl::Duration metrics_refresh = absl::Milliseconds(500);
    WorkerService::Options service;
  };

  // UNAVAILABLE when an address cannot be bound; INVALID_ARGUMENT for bad
  // options; NOT_FOUND for unreadable TLS files.
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Create(
      const Options& options, std::unique_ptr<InferenceEngine> engine);
  // Shuts down (cancelling open streams) if Drain/Shutdown did not run.
  ~WorkerServer();
  WorkerServer(const WorkerServer&) = delete;
  WorkerServer& operator=(const WorkerServer&) = delete;

  // Stops accepting requests (Generate answers UNAVAILABLE, health
  // NOT_SERVING), lets open streams finish until `timeout`, aborts the rest,
  // then shuts the gRPC server down. OK when every stream finished in time;
  // DEADLINE_EXCEEDED naming how many were aborted.
  absl::Status Drain(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops at once: open streams end with CANCELLED.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  int port() const { return port_; }
  // 0 when there is no /metrics endpoint.
  int metrics_port() const { return metrics_server_ ? metrics_server_->port() : 0; }
  WorkerService& service() { return *service_; }
  InferenceEngine& engine() { return *engine_; }
  prometheus::Registry& registry() { return *registry_; }
  // Copies the engine's load into the metrics now (also done periodically),
  // and turns the health service NOT_SERVING once the engine's health()
  // fails.
  void RefreshMetrics();

 private:
  WorkerServer() = default;
  void StopServer(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  std::unique_ptr<MetricsServer> metrics_server_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ServingMetrics> metrics_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<InferenceEngine> engine_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> reported_unhealthy_{false};

  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool refresher_stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration refresh_interval_;
  std::thread refresher_;
};

// Reads a whole file (TLS material); NOT_FOUND when it cannot be read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_WORKER_SERVER_H_
