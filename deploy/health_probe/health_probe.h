// One grpc.health.v1.Health/Check call, as a container health check makes it
// (Docker HEALTHCHECK runs memshare_health_probe; Kubernetes has its own gRPC
// probes). memshare_worker and memshare_router serve the health service and
// answer NOT_SERVING while they drain.
//
// Thread-safe (no shared state).
#ifndef MEMSHARE_DEPLOY_HEALTH_PROBE_HEALTH_PROBE_H_
#define MEMSHARE_DEPLOY_HEALTH_PROBE_HEALTH_PROBE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace memshare::deploy {

struct HealthProbeOptions {
  // host:port of the server.
  std::string address = "127.0.0.1:50051";
  // Service name to ask about; empty asks about the server as a whole.
  std::string service;
  // Deadline of the call (connection included).
  absl::Duration timeout = absl::Seconds(2);
  // PEM root certificates: talk TLS and verify the server against them.
  // Empty: plain text.
  std::string tls_ca_file;
  // With TLS: the name the certificate must carry, when it is not the host of
  // `address` (a probe on 127.0.0.1 of a server certified for a DNS name).
  std::string tls_server_name;
};

// OK when the server answers SERVING. UNAVAILABLE when it answers
// NOT_SERVING or UNKNOWN or cannot be reached, NOT_FOUND for a service it
// does not know, DEADLINE_EXCEEDED when it does not answer in time,
// INVALID_ARGUMENT for bad options (an unreadable CA file).
absl::Status CheckHealth(const HealthProbeOptions& options);

}  // namespace memshare::deploy

#endif  // MEMSHARE_DEPLOY_HEALTH_PROBE_HEALTH_PROBE_H_
