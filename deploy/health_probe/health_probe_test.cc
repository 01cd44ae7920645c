#include "deploy/health_probe/health_probe.h"

#include <arpa/inet.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace memshare::deploy {
namespace {

// Some service for the server to poll (a server with none does not start).
class NoMethods : public grpc::CallbackGenericService {};

struct Server {
  std::unique_ptr<NoMethods> service = std::make_unique<NoMethods>();
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::string address() const { return absl::StrCat("127.0.0.1:", port); }
  grpc::HealthCheckServiceInterface* health() { return server->GetHealthCheckService(); }
};

Server StartServer(
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials()) {
  grpc::EnableDefaultHealthCheckService(true);
  Server s;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", credentials, &s.port);
  builder.RegisterCallbackGenericService(s.service.get());
  s.server = builder.BuildAndStart();
  return s;
}

HealthProbeOptions Probe(const std::string& address) {
  HealthProbeOptions o;
  o.address = address;
  o.timeout = absl::Seconds(2);
  return o;
}

// A port nobody listens on.
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(HealthProbeTest, ServingNotServingAndUnknownService) {
  Server s = StartServer();
  ASSERT_NE(s.server, nullptr);
  s.health()->SetServingStatus(true);
  EXPECT_TRUE(CheckHealth(Probe(s.address())).ok());

  // Draining servers answer NOT_SERVING.
  s.health()->SetServingStatus(false);
  const absl::Status draining = CheckHealth(Probe(s.address()));
  EXPECT_EQ(draining.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(draining.message().find("NOT_SERVING"), std::string::npos) << draining;

  HealthProbeOptions named = Probe(s.address());
  named.service = "memshare.v1.WorkerService";
  EXPECT_EQ(CheckHealth(named).code(), absl::StatusCode::kNotFound);
  s.health()->SetServingStatus("memshare.v1.WorkerService", true);
  EXPECT_TRUE(CheckHealth(named).ok());
  s.server->Shutdown();
}

TEST(HealthProbeTest, NobodyListening) {
  const absl::Status s = CheckHealth(Probe(absl::StrCat("127.0.0.1:", ClosedPort())));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST(HealthProbeTest, ListenerThatNeverAnswersHitsTheDeadline) {
  // Accepts TCP (the kernel's backlog) but never speaks HTTP/2.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  HealthProbeOptions o = Probe(absl::StrCat("127.0.0.1:", ntohs(addr.sin_port)));
  o.timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  const absl::Status s = CheckHealth(o);
  EXPECT_FALSE(s.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  close(fd);
}

TEST(HealthProbeTest, BadOptions) {
  HealthProbeOptions o = Probe("");
  EXPECT_EQ(CheckHealth(o).code(), absl::StatusCode::kInvalidArgument);
  o = Probe("127.0.0.1:1");
  o.timeout = absl::ZeroDuration();
  EXPECT_EQ(CheckHealth(o).code(), absl::StatusCode::kInvalidArgument);
  o = Probe("127.0.0.1:1");
  o.tls_ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(CheckHealth(o).code(), absl::StatusCode::kInvalidArgument);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(HealthProbeTest, Tls) {
  const std::string dir = ::testing::TempDir();
  const std::string cert = dir + "/probe-cert.pem", key = dir + "/probe-key.pem";
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=memshare-worker "
      "-addext subjectAltName=DNS:memshare-worker -keyout " +
      key + " -out " + cert + " 2>/dev/null";
  if (std::system(command.c_str()) != 0) GTEST_SKIP() << "openssl cannot make a certificate here";
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({ReadAll(key), ReadAll(cert)});
  Server s = StartServer(grpc::SslServerCredentials(ssl));
  ASSERT_NE(s.server, nullptr);
  s.health()->SetServingStatus(true);

  HealthProbeOptions o = Probe(s.address());
  o.tls_ca_file = cert;
  o.tls_server_name = "memshare-worker";
  EXPECT_TRUE(CheckHealth(o).ok());
  // The certificate does not name 127.0.0.1.
  o.tls_server_name = "";
  EXPECT_EQ(CheckHealth(o).code(), absl::StatusCode::kUnavailable);
  // Plain text to a TLS server.
  EXPECT_EQ(CheckHealth(Probe(s.address())).code(), absl::StatusCode::kUnavailable);
  s.server->Shutdown();
}

// The binary's exit code is what Docker's HEALTHCHECK reads.
int RunProbe(const std::string& args) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  const std::string binary =
      absl::StrCat(srcdir, "/", workspace, "/deploy/health_probe/memshare_health_probe");
  const int status = std::system((binary + " " + args + " 2>/dev/null").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(HealthProbeTest, BinaryExitCodes) {
  Server s = StartServer();
  ASSERT_NE(s.server, nullptr);
  s.health()->SetServingStatus(true);
  EXPECT_EQ(RunProbe("--address=" + s.address()), 0);
  s.health()->SetServingStatus(false);
  EXPECT_EQ(RunProbe("--address=" + s.address()), 1);
  EXPECT_EQ(RunProbe(absl::StrCat("--address=127.0.0.1:", ClosedPort(), " --timeout=1s")), 1);
  s.server->Shutdown();
}

}  // namespace
}  // namespace memshare::deploy
