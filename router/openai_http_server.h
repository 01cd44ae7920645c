// The router's OpenAI-compatible HTTP API on CivetWeb:
//   POST /v1/completions, POST /v1/chat/completions  (stream: SSE over a
//        chunked response, "data: [DONE]" last; usage per stream_options)
//   GET  /v1/models
//   GET  /health     200 {"status":"ok"} when serving with a healthy worker,
//                    503 otherwise (draining, no worker)
// Errors use OpenAI's JSON error shape with the HTTP status of their code
// (openai_api.h). A streamed request sends its headers with its first
// message, so a request refused before any token still gets a plain HTTP
// error status.
//
// Each request holds one of `threads` HTTP threads while it runs (the
// handler waits on its Router::Call; the router's threads never wait on
// HTTP). Thread-safe.
//
// Plain HTTP only: Debian's CivetWeb 1.15 loads OpenSSL dynamically and,
// with OpenSSL 3, calls a null function on the first HTTPS connection. Put
// TLS in front (ingress, sidecar); the gRPC API serves TLS itself.
#ifndef MEMSHARE_ROUTER_OPENAI_HTTP_SERVER_H_
#define MEMSHARE_ROUTER_OPENAI_HTTP_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/serving_metrics.h"
#include "router/api_keys.h"
#include "router/router.h"
#include "router/router_metrics.h"
#include "router/worker_registry.h"

struct mg_connection;
struct mg_context;

namespace memshare::router {

class OpenAiHttpServer {
 public:
  struct Options {
    // host:port; port 0 lets the OS choose (see port()).
    std::string address = "0.0.0.0:8000";
    // HTTP threads: the most requests served at once.
    int threads = 64;
    // Largest request body, in bytes (413 beyond).
    int64_t max_body_bytes = 8 << 20;
    // Deadline of each request (none when zero).
    absl::Duration request_timeout = absl::ZeroDuration();
  };

  // Everything passed must outlive the server; metrics may be null.
  static absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> Create(
      const Options& options, Router* router, WorkerRegistry* registry, const ApiKeys* keys,
      ServingMetrics* serving_metrics, RouterMetrics* router_metrics);
  // Stops listening and waits for the running handlers (end their calls
  // first, e.g. Router::CancelAll).
  ~OpenAiHttpServer();
  OpenAiHttpServer(const OpenAiHttpServer&) = delete;
  OpenAiHttpServer& operator=(const OpenAiHttpServer&) = delete;

  int port() const { return port_; }
  // New requests get 503 from now on; running ones go on.
  void StartDrain() { draining_.store(true); }

 private:
  OpenAiHttpServer(const Options& options, Router* router, WorkerRegistry* registry,
                   const ApiKeys* keys, ServingMetrics* serving_metrics,
                   RouterMetrics* router_metrics);
  static int HandleRequest(mg_connection* conn, void* self);
  int Handle(mg_connection* conn);
  int HandleGenerate(mg_connection* conn, bool chat);

  const Options options_;
  Router* const router_;
  WorkerRegistry* const registry_;
  const ApiKeys* const keys_;
  ServingMetrics* const serving_metrics_;
  RouterMetrics* const router_metrics_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{0};
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_OPENAI_HTTP_SERVER_H_
