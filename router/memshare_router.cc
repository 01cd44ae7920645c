// memshare_router: the public front of MemShare. Serves InferenceService
// (gRPC) and the OpenAI-compatible HTTP API, routes each request to a worker
// group, exports /metrics, drains on SIGTERM.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/process_main.h"
#include "router/router_server.h"

ABSL_FLAG(std::string, address, "0.0.0.0:50050",
          "host:port of the public gRPC server (memshare.v1.InferenceService, "
          "grpc.health.v1.Health, server reflection). Port 0 lets the OS choose; the ports are "
          "printed at start.");
ABSL_FLAG(std::string, http_address, "0.0.0.0:8000",
          "host:port of the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
          "/v1/models, /health), plain HTTP (put TLS in front of it). Empty disables it.");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9400",
          "host:port of the Prometheus endpoint GET /metrics. Empty disables it.");
ABSL_FLAG(std::string, workers, "",
          "Comma-separated host:port of the worker groups (rank 0 of each).");
ABSL_FLAG(std::string, workers_dns, "",
          "A DNS name and port whose addresses are workers, e.g. the Kubernetes headless "
          "service 'memshare-workers.default.svc.cluster.local:50051'; re-resolved every "
          "--dns_refresh. May be combined with --workers.");
ABSL_FLAG(absl::Duration, dns_refresh, absl::Seconds(5), "How often --workers_dns is resolved.");
ABSL_FLAG(absl::Duration, poll_interval, absl::Milliseconds(500),
          "How often each worker's health and load are polled.");
ABSL_FLAG(absl::Duration, poll_timeout, absl::Seconds(1), "Deadline of one health/load poll.");
ABSL_FLAG(int32_t, unhealthy_after, 2,
          "Failed polls in a row before a worker is marked down (a failed call marks it down "
          "at once; one good poll brings it back).");
ABSL_FLAG(std::string, policy, "least-load",
          "Routing policy: 'least-load' (KV usage, queued tokens, requests in flight), "
          "'session' (consistent hash of session_id) or 'prefix' (consistent hash of the "
          "prompt's first KV blocks).");
ABSL_FLAG(int32_t, prefix_blocks, 8,
          "prefix policy: KV blocks of the prompt that make its key (8: its first 64 tokens at the "
          "workers' default --block_size=8).");
ABSL_FLAG(int32_t, max_queue, 1024,
          "Requests that may wait in the router for a worker; beyond, RESOURCE_EXHAUSTED "
          "(HTTP 429).");
ABSL_FLAG(int32_t, max_in_flight_per_worker, 256,
          "Requests the router keeps on one worker at once; more wait in the router's queue.");
ABSL_FLAG(int32_t, max_attempts, 3,
          "Attempts per request: a request is retried on another worker only while no token "
          "has reached the client.");
ABSL_FLAG(absl::Duration, queue_timeout, absl::Seconds(30),
          "Longest wait in the router's queue before UNAVAILABLE (no healthy worker) or "
          "RESOURCE_EXHAUSTED (all busy).");
ABSL_FLAG(int32_t, max_message_bytes, 16 << 20,
          "Largest gRPC message, in bytes (clients and workers); larger requests get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the gRPC server; with --tls_key serves TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key matching --tls_cert.");
ABSL_FLAG(std::string, worker_tls_ca, "",
          "PEM root certificates of the workers' TLS certificates: talk TLS to workers.");
ABSL_FLAG(std::string, api_keys, "",
          "Comma-separated API keys; when any is set (here or in --api_key_file), clients must "
          "send 'authorization: Bearer <key>'. Prefer --api_key_file (argv is visible to "
          "other users).");
ABSL_FLAG(std::string, api_key_file, "", "File of API keys, one per line ('#' comments).");
ABSL_FLAG(int32_t, http_threads, 64, "HTTP threads: the most HTTP requests served at once.");
ABSL_FLAG(int64_t, http_max_body_bytes, 8 << 20, "Largest HTTP request body (413 beyond).");
ABSL_FLAG(absl::Duration, http_request_timeout, absl::ZeroDuration(),
          "Deadline of each HTTP request (0: none). gRPC clients set their own deadline.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(60),
          "On SIGTERM: how long accepted requests may take to finish before they are "
          "cancelled.");

int main(int argc, char** argv) {
  memshare::BlockTerminationSignals();
  memshare::ParseFlags(argc, argv,
                       "the MemShare router: public gRPC and OpenAI-compatible HTTP API in front "
                       "of memshare_worker groups.\n"
                       "Usage: memshare_router --workers=HOST:PORT,... | "
                       "--workers_dns=NAME:PORT [flags]");
  memshare::router::RouterServer::Options o;
  o.address = absl::GetFlag(FLAGS_address);
  o.http_address = absl::GetFlag(FLAGS_http_address);
  o.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  o.worker_tls_ca_file = absl::GetFlag(FLAGS_worker_tls_ca);
  for (absl::string_view key :
       absl::StrSplit(absl::GetFlag(FLAGS_api_keys), ',', absl::SkipWhitespace())) {
    o.api_keys.emplace_back(key);
  }
  o.api_key_file = absl::GetFlag(FLAGS_api_key_file);
  for (absl::string_view w :
       absl::StrSplit(absl::GetFlag(FLAGS_workers), ',', absl::SkipWhitespace())) {
    o.registry.static_workers.emplace_back(w);
  }
  o.registry.dns_target = absl::GetFlag(FLAGS_workers_dns);
  o.registry.dns_refresh = absl::GetFlag(FLAGS_dns_refresh);
  o.registry.poll_interval = absl::GetFlag(FLAGS_poll_interval);
  o.registry.poll_timeout = absl::GetFlag(FLAGS_poll_timeout);
  o.registry.unhealthy_after = absl::GetFlag(FLAGS_unhealthy_after);
  o.policy.name = absl::GetFlag(FLAGS_policy);
  o.router.prefix_blocks = absl::GetFlag(FLAGS_prefix_blocks);
  o.router.max_queue = absl::GetFlag(FLAGS_max_queue);
  o.router.max_in_flight_per_worker = absl::GetFlag(FLAGS_max_in_flight_per_worker);
  o.router.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  o.router.queue_timeout = absl::GetFlag(FLAGS_queue_timeout);
  o.http.threads = absl::GetFlag(FLAGS_http_threads);
  o.http.max_body_bytes = absl::GetFlag(FLAGS_http_max_body_bytes);
  o.http.request_timeout = absl::GetFlag(FLAGS_http_request_timeout);

  auto server = memshare::router::RouterServer::Create(o);
  if (!server.ok()) {
    std::fprintf(stderr, "memshare_router: cannot start: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("memshare_router: serving on port %d, http on port %d, metrics on port %d\n",
              (*server)->port(), (*server)->http_port(), (*server)->metrics_port());
  std::fflush(stdout);
  const int signal = memshare::WaitForTerminationSignal();
  const absl::Duration timeout = absl::GetFlag(FLAGS_drain_timeout);
  std::fprintf(stderr, "memshare_router: signal %d: draining %d requests (up to %s)\n", signal,
               (*server)->router().live(), absl::FormatDuration(timeout).c_str());
  const absl::Status drained = (*server)->Drain(timeout);
  std::fprintf(stderr, "memshare_router: drained: %s\n", drained.ToString().c_str());
  server->reset();
  return 0;
}
