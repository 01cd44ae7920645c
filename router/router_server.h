// The router process's servers around one Router: the public gRPC server
// (InferenceService, grpc.health.v1.Health, server reflection; optional TLS
// and API keys), the OpenAI-compatible HTTP server (plain HTTP: terminate TLS
// in front of it, see openai_http_server.h), /metrics, and the worker
// registry. memshare_router's main and the tests build one of these.
//
// Thread-safe. Drain and Shutdown are for one thread that is not a gRPC,
// HTTP or registry thread; each runs at most once (Shutdown after Drain does
// nothing).
#ifndef MEMSHARE_ROUTER_ROUTER_SERVER_H_
#define MEMSHARE_ROUTER_ROUTER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics_server.h"
#include "common/serving_metrics.h"
#include "router/api_keys.h"
#include "router/openai_http_server.h"
#include "router/router.h"
#include "router/router_metrics.h"
#include "router/router_service.h"
#include "router/routing_policy.h"
#include "router/worker_registry.h"

namespace memshare::router {

class RouterServer {
 public:
  struct Options {
    // host:port of the public gRPC server; port 0 lets the OS choose.
    std::string address = "0.0.0.0:50050";
    // host:port of the OpenAI HTTP API; port 0 lets the OS choose; empty:
    // no HTTP API.
    std::string http_address = "0.0.0.0:8000";
    // host:port of /metrics; empty: no endpoint (metrics still kept).
    std::string metrics_address = "0.0.0.0:9400";
    // Largest gRPC message, in bytes, from clients and to/from workers.
    int max_message_bytes = 16 << 20;
    // gRPC TLS: PEM certificate chain and key; both empty: plain text.
    std::string tls_cert_file;
    std::string tls_key_file;
    // TLS to the workers: PEM roots that sign their certificates; empty:
    // plain text to workers.
    std::string worker_tls_ca_file;
    // API keys (see api_keys.h); none: no check.
    std::vector<std::string> api_keys;
    std::string api_key_file;
    WorkerRegistry::Options registry;
    PolicyOptions policy;
    Router::Options router;
    OpenAiHttpServer::Options http;  // the address is taken from above
  };

  static absl::StatusOr<std::unique_ptr<RouterServer>> Create(const Options& options);
  ~RouterServer();
  RouterServer(const RouterServer&) = delete;
  RouterServer& operator=(const RouterServer&) = delete;

  // Stops accepting (gRPC UNAVAILABLE, HTTP 503, health NOT_SERVING), lets
  // accepted requests (queued and running) finish until `timeout`, cancels
  // the rest, then stops the servers. OK when every request finished.
  absl::Status Drain(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Cancels every request and stops the servers.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  int port() const { return port_; }
  int http_port() const { return http_ ? http_->port() : 0; }
  int metrics_port() const { return metrics_server_ ? metrics_server_->port() : 0; }
  Router& router() { return *router_; }
  WorkerRegistry& registry() { return *registry_; }
  prometheus::Registry& metrics_registry() { return *metrics_registry_; }

 private:
  RouterServer() = default;
  void Stop(absl::Time grpc_deadline) ABSL_LOCKS_EXCLUDED(mu_);

  std::unique_ptr<MetricsServer> metrics_server_;
  std::shared_ptr<prometheus::Registry> metrics_registry_;
  std::unique_ptr<ServingMetrics> serving_metrics_;
  std::unique_ptr<RouterMetrics> router_metrics_;
  std::unique_ptr<ApiKeys> keys_;
  std::atomic<Router*> router_for_registry_{nullptr};
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<RouterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<OpenAiHttpServer> http_;
  int port_ = 0;

  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_ROUTER_SERVER_H_
