#include "router/router_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memshare::router {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Create(const Options& options) {
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls: give both the certificate and the key, or neither");
  }
  auto server = std::unique_ptr<RouterServer>(new RouterServer());
  if (!options.metrics_address.empty()) {
    auto metrics_server = MetricsServer::Create({.bind_address = options.metrics_address});
    if (!metrics_server.ok()) return metrics_server.status();
    server->metrics_server_ = *std::move(metrics_server);
    server->metrics_registry_ = server->metrics_server_->shared_registry();
  } else {
    server->metrics_registry_ = std::make_shared<prometheus::Registry>();
  }
  server->serving_metrics_ = std::make_unique<ServingMetrics>(*server->metrics_registry_);
  server->router_metrics_ = std::make_unique<RouterMetrics>(*server->metrics_registry_);

  absl::StatusOr<ApiKeys> keys = ApiKeys::Create(options.api_keys, options.api_key_file);
  if (!keys.ok()) return keys.status();
  server->keys_ = std::make_unique<ApiKeys>(*std::move(keys));

  WorkerRegistry::Options registry_options = options.registry;
  registry_options.max_message_bytes = options.max_message_bytes;
  if (!options.worker_tls_ca_file.empty()) {
    absl::StatusOr<std::string> roots = ReadFile(options.worker_tls_ca_file);
    if (!roots.ok()) return roots.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *roots;
    registry_options.credentials = grpc::SslCredentials(ssl);
  }
  RouterServer* self = server.get();
  registry_options.on_change = [self] {
    if (Router* router = self->router_for_registry_.load()) router->Pump();
  };
  auto registry = WorkerRegistry::Create(registry_options, server->serving_metrics_.get(),
                                         server->router_metrics_.get());
  if (!registry.ok()) return registry.status();
  server->registry_ = *std::move(registry);

  auto policy = CreateRoutingPolicy(options.policy);
  if (!policy.ok()) return policy.status();
  auto router = Router::Create(options.router, server->registry_.get(), *std::move(policy),
                               server->serving_metrics_.get(), server->router_metrics_.get());
  if (!router.ok()) return router.status();
  server->router_ = *std::move(router);
  server->router_for_registry_.store(server->router_.get());

  server->service_ = std::make_unique<RouterService>(
      server->router_.get(), server->registry_.get(), server->keys_.get(),
      server->router_metrics_.get(), server->serving_metrics_.get());
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(options.tls_cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(options.tls_key_file);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
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
    return absl::UnavailableError(absl::StrCat("router: cannot listen on ", options.address));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);

  if (!options.http_address.empty()) {
    OpenAiHttpServer::Options http = options.http;
    http.address = options.http_address;
    auto http_server = OpenAiHttpServer::Create(
        http, server->router_.get(), server->registry_.get(), server->keys_.get(),
        server->serving_metrics_.get(), server->router_metrics_.get());
    if (!http_server.ok()) return http_server.status();
    server->http_ = *std::move(http_server);
  }
  return server;
}

absl::Status RouterServer::Drain(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return absl::OkStatus();
  }
  const absl::Time deadline = absl::Now() + timeout;
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (http_) http_->StartDrain();
  router_->StartDrain();
  absl::Status status;
  if (!router_->WaitIdle(deadline)) {
    status =
        absl::DeadlineExceededError(absl::StrCat(router_->live(), " requests still running after ",
                                                 absl::FormatDuration(timeout), "; cancelled"));
  }
  Stop(absl::Now() + absl::Seconds(1));
  return status;
}

void RouterServer::Shutdown() { Stop(absl::Now()); }

void RouterServer::Stop(absl::Time grpc_deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  if (http_) http_->StartDrain();
  router_->CancelAll();
  server_->Shutdown(absl::ToChronoTime(grpc_deadline));
  // Handlers end once their calls have (CancelAll); then the HTTP server
  // stops.
  http_.reset();
}

RouterServer::~RouterServer() {
  if (server_ != nullptr) {
    Stop(absl::Now());
    server_->Wait();
  }
  http_.reset();
  server_.reset();
  service_.reset();
  router_for_registry_.store(nullptr);
  if (registry_) registry_->StopPolling();
  router_.reset();
  registry_.reset();
}

}  // namespace memshare::router
