// The Prometheus endpoint of a process: an HTTP server answering GET /metrics
// in the Prometheus text format, and the registry that components register
// their metric families in (injected into them; there is no global registry).
//
// Thread-safe: the registry may be used from any thread once Create returns.
#ifndef MEMSHARE_COMMON_METRICS_SERVER_H_
#define MEMSHARE_COMMON_METRICS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace memshare {

class MetricsServer {
 public:
  struct Options {
    // host:port to listen on. Port 0 lets the OS choose (see port()).
    std::string bind_address = "0.0.0.0:9400";
    // Worker threads of the HTTP server.
    int threads = 1;
  };

  // UNAVAILABLE when the address cannot be bound (in use, bad host).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Create(const Options& options);

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  ~MetricsServer();

  prometheus::Registry& registry() { return *registry_; }
  const std::shared_ptr<prometheus::Registry>& shared_registry() const { return registry_; }
  // The port actually bound.
  int port() const { return port_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer,
                std::shared_ptr<prometheus::Registry> registry, int port);

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
  int port_;
  std::string bind_address_;
};

}  // namespace memshare

#endif  // MEMSHARE_COMMON_METRICS_SERVER_H_
