#include "engine/server/worker_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memshare::engine {

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Create(
    const Options& options, std::unique_ptr<InferenceEngine> engine) {
  if (engine == nullptr) return absl::InvalidArgumentError("engine must not be null");
  if (options.max_message_bytes < 1024) {
    return absl::InvalidArgumentError("max_message_bytes must be >= 1024");
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls: give both the certificate and the key, or neither");
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFileToString(options.tls_cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFileToString(options.tls_key_file);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }

  auto server = std::unique_ptr<WorkerServer>(new WorkerServer());
  server->refresh_interval_ = options.metrics_refresh;
  if (!options.metrics_address.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> metrics_server =
        MetricsServer::Create({.bind_address = options.metrics_address});
    if (!metrics_server.ok()) return metrics_server.status();
    server->metrics_server_ = *std::move(metrics_server);
    server->registry_ = server->metrics_server_->shared_registry();
  } else {
    server->registry_ = std::make_shared<prometheus::Registry>();
  }
  server->metrics_ = std::make_unique<ServingMetrics>(*server->registry_);
  server->engine_ = std::move(engine);

  WorkerService::Options service_options = options.service;
  WorkerServer* self = server.get();
  auto user_on_drain = service_options.on_drain;
  service_options.on_drain = [self, user_on_drain] {
    if (self->server_) self->server_->GetHealthCheckService()->SetServingStatus(false);
    if (user_on_drain) user_on_drain();
  };
  absl::StatusOr<std::unique_ptr<WorkerService>> service =
      WorkerService::Create(service_options, server->engine_.get(), server->metrics_.get());
  if (!service.ok()) return service.status();
  server->service_ = *std::move(service);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->server_.reset();
    return absl::UnavailableError(absl::StrCat("worker: cannot listen on ", options.address));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  server->RefreshMetrics();
  server->refresher_ = std::thread([self] {
    absl::MutexLock lock(&self->mu_);
    auto stop = [self]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) { return self->refresher_stop_; };
    while (!self->mu_.AwaitWithTimeout(absl::Condition(&stop), self->refresh_interval_)) {
      self->mu_.Unlock();
      self->RefreshMetrics();
      self->mu_.Lock();
    }
  });
  return server;
}

void WorkerServer::RefreshMetrics() {
  metrics_->UpdateLoad("local", service_->BuildLoadReport());
  // An engine that failed for good (a broken tensor-parallel group) is
  // reported NOT_SERVING, so the router stops sending it requests.
  if (!engine_->health().ok() && !reported_unhealthy_.exchange(true) && server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
  }
}

absl::Status WorkerServer::Drain(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  service_->StartDrain();
  absl::Status status;
  if (!service_->WaitForStreams(deadline)) {
    const int left = service_->active_streams();
    status = absl::DeadlineExceededError(absl::StrCat(left, " streams still open after ",
                                                      absl::FormatDuration(timeout), "; aborted"));
    service_->AbortAll();
    service_->WaitForStreams(absl::Now() + absl::Seconds(5));
  }
  StopServer(absl::Now() + absl::Seconds(1));
  return status;
}

void WorkerServer::Shutdown() { StopServer(absl::Now()); }

void WorkerServer::StopServer(absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    refresher_stop_ = true;
  }
  if (refresher_.joinable()) refresher_.join();
  server_->Shutdown(absl::ToChronoTime(deadline));
}

WorkerServer::~WorkerServer() {
  if (server_ != nullptr) {
    StopServer(absl::Now());
    server_->Wait();
  }
  {
    absl::MutexLock lock(&mu_);
    refresher_stop_ = true;
  }
  if (refresher_.joinable()) refresher_.join();
  // The engine ends its live requests, whose streams use the service: the
  // engine goes first, then the service.
  server_.reset();
  engine_.reset();
  service_.reset();
}

}  // namespace memshare::engine
