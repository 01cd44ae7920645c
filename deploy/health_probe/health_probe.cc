#include "deploy/health_probe/health_probe.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"

namespace memshare::deploy {

absl::Status CheckHealth(const HealthProbeOptions& options) {
  if (options.address.empty()) return absl::InvalidArgumentError("address: empty");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout: must be positive");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (!options.tls_ca_file.empty()) {
    std::ifstream in(options.tls_ca_file);
    std::stringstream roots;
    roots << in.rdbuf();
    if (!in || roots.str().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls_ca_file: cannot read ", options.tls_ca_file));
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = roots.str();
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  auto channel = grpc::CreateCustomChannel(options.address, credentials, args);
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(options.timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(options.service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  const std::string what =
      options.service.empty() ? options.address
                              : absl::StrCat(options.address, " service \"", options.service, "\"");
  if (!status.ok()) {
    switch (status.error_code()) {
      case grpc::StatusCode::NOT_FOUND:
        return absl::NotFoundError(absl::StrCat(what, ": unknown service"));
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return absl::DeadlineExceededError(
            absl::StrCat(what, ": no answer within ", absl::FormatDuration(options.timeout)));
      default:
        return absl::UnavailableError(absl::StrCat(what, ": ", status.error_message()));
    }
  }
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return absl::OkStatus();
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return absl::UnavailableError(absl::StrCat(what, ": NOT_SERVING"));
    default:
      return absl::UnavailableError(absl::StrCat(
          what, ": ",
          grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
}

}  // namespace memshare::deploy
