// memshare_health_probe: exits 0 when a gRPC server answers SERVING to
// grpc.health.v1.Health/Check, 1 otherwise (the reason on stderr). The
// container images run it as their HEALTHCHECK.
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "deploy/health_probe/health_probe.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051", "host:port of the gRPC server.");
ABSL_FLAG(std::string, service, "", "Service to ask about; empty: the server as a whole.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(2), "Deadline of the check.");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificates: check over TLS.");
ABSL_FLAG(std::string, tls_server_name, "",
          "With --tls_ca: the name the server's certificate carries, if not the host of "
          "--address.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "exits 0 when the gRPC server at --address answers SERVING to grpc.health.v1.Health/Check, "
      "1 otherwise.\nUsage: memshare_health_probe --address=HOST:PORT [--service=NAME]");
  absl::ParseCommandLine(argc, argv);
  memshare::deploy::HealthProbeOptions o;
  o.address = absl::GetFlag(FLAGS_address);
  o.service = absl::GetFlag(FLAGS_service);
  o.timeout = absl::GetFlag(FLAGS_timeout);
  o.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  o.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  const absl::Status status = memshare::deploy::CheckHealth(o);
  if (!status.ok()) {
    std::fprintf(stderr, "memshare_health_probe: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
