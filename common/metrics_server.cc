#include "common/metrics_server.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/listener_wakeup.h"

namespace memshare {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Create(const Options& options) {
  if (options.threads < 1) {
    return absl::InvalidArgumentError("metrics server: threads must be >= 1");
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  // prometheus-cpp (civetweb) reports a failed bind by throwing; this is the
  // one place where that exception is turned into a status.
  try {
    exposer = std::make_unique<prometheus::Exposer>(options.bind_address, options.threads);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics server: cannot listen on ", options.bind_address, ": ", e.what()));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("metrics server: no listening port for ", options.bind_address));
  }
  auto registry = std::make_shared<prometheus::Registry>();
  exposer->RegisterCollectable(registry);
  auto server = std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), std::move(registry), ports.front()));
  server->bind_address_ = options.bind_address;
  return server;
}

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer,
                             std::shared_ptr<prometheus::Registry> registry, int port)
    : exposer_(std::move(exposer)), registry_(std::move(registry)), port_(port) {}

MetricsServer::~MetricsServer() {
  // Without the wake-up the exposer takes two seconds to stop.
  StopAndWake(bind_address_, port_, [this] { exposer_.reset(); });
}

}  // namespace memshare
