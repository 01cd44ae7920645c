// End to end on two GPUs (tagged gpu, multigpu): a tensor-parallel worker
// group of two memshare_worker processes (rank 1 started with the dashed
// flag spelling), a second worker on the CPU, and memshare_router in front.
// The group serves; then rank 1 is killed: rank 0 must report NOT_SERVING
// within a bounded time and exit with status 3, the router must mark it down
// and serve every later request from the other worker.
//
// Binaries: $MEMSHARE_TP_E2E_BIN_DIR/{memshare_worker,memshare_router} when
// set (the device bundle), else the runfiles. Model: the golden checkpoint
// qwen2_bias ($MEMSHARE_GOLDEN_DIR or tests/data/golden). Every process
// inherits NCCL_NVLS_ENABLE=0.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/memshare/v1/inference.grpc.pb.h"
#include "proto/memshare/v1/worker.grpc.pb.h"
#include "tests/e2e/child_process.h"

namespace memshare::e2e {
namespace {

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

std::string Binary(const std::string& runfile, const std::string& name) {
  const std::string dir = Env("MEMSHARE_TP_E2E_BIN_DIR", "");
  if (!dir.empty()) return dir + "/" + name;
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return runfile;
  return absl::StrCat(srcdir, "/", workspace, "/", runfile);
}

std::string Model() { return Env("MEMSHARE_GOLDEN_DIR", "tests/data/golden") + "/qwen2_bias"; }

// A port nobody listens on now (bound, read back, released).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

template <typename F>
bool Eventually(F predicate, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return predicate();
}

// SERVING, NOT_SERVING, or UNKNOWN when the process does not answer.
grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& address) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext c;
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  grpc::health::v1::HealthCheckResponse r;
  if (!stub->Check(&c, {}, &r).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return r.status();
}

v1::GenerateRequest Greedy(const std::string& ids, int max_tokens) {
  v1::GenerateRequest r;
  r.set_text(ids);  // the golden checkpoints' text is token ids
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_stop()->set_ignore_eos(true);
  return r;
}

template <typename Reader>
std::pair<grpc::Status, int> Drain(Reader& reader) {
  int tokens = 0;
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
    if (r.has_chunk()) tokens += r.chunk().token_ids_size();
  }
  return {reader->Finish(), tokens};
}

std::vector<std::string> EngineFlags() {
  return {"--model=" + Model(),
          "--device=cuda",
          "--num_blocks=256",
          "--max_model_len=256",
          "--max_num_seqs=8",
          "--max_batched_tokens=256",
          "--collective_timeout=3s",
          "--heartbeat_interval=500ms",
          "--memshare=on"};
}

TEST(TpGroupE2eTest, AGroupServesAndADeadRankTakesItOutOfTheRouter) {
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  const std::string worker = Binary("engine/server/memshare_worker", "memshare_worker");
  const std::string router_bin = Binary("router/memshare_router", "memshare_router");
  const int port_a = FreePort();
  const std::string address_a = absl::StrCat("127.0.0.1:", port_a);

  // Rank 0: its first line gives the rendezvous port; it serves once the
  // group is up.
  ChildProcess::Options r0;
  r0.binary = worker;
  r0.args = EngineFlags();
  for (const std::string& a :
       {std::string("--world_size=2"), std::string("--group_address=127.0.0.1:0"),
        "--address=" + address_a, std::string("--metrics_address=127.0.0.1:0"),
        std::string("--unhealthy_exit_delay=2s")}) {
    r0.args.push_back(a);
  }
  r0.ready_prefix = "memshare_worker: group rendezvous on port";
  absl::StatusOr<std::unique_ptr<ChildProcess>> rank0 = ChildProcess::Start(r0);
  ASSERT_TRUE(rank0.ok()) << rank0.status();
  const std::string line = (*rank0)->ready_line();
  const int group_port = std::atoi(line.substr(line.find("port ") + 5).c_str());
  ASSERT_GT(group_port, 0) << line;

  ChildProcess::Options r1;
  r1.binary = worker;
  r1.args = EngineFlags();
  for (const std::string& a : {std::string("--world-size=2"), std::string("--rank=1"),
                               absl::StrCat("--group-leader=127.0.0.1:", group_port)}) {
    r1.args.push_back(a);
  }
  r1.ready_prefix = "memshare_worker: rank 1 of 2 following";
  r1.ready_timeout = absl::Seconds(120);
  absl::StatusOr<std::unique_ptr<ChildProcess>> rank1 = ChildProcess::Start(r1);
  ASSERT_TRUE(rank1.ok()) << rank1.status();
  ASSERT_TRUE(Eventually(
      [&] { return Health(address_a) == grpc::health::v1::HealthCheckResponse::SERVING; },
      absl::Seconds(120)))
      << "rank 0 never served";

  // The group serves, directly.
  auto stub_a = v1::WorkerService::NewStub(
      grpc::CreateChannel(address_a, grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext c;
    v1::ModelInfo info;
    ASSERT_TRUE(stub_a->GetModelInfo(&c, {}, &info).ok());
    EXPECT_EQ(info.tensor_parallel_size(), 2);
    EXPECT_EQ(info.device(), "cuda");
  }
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext c;
    auto reader = stub_a->Generate(&c, Greedy(absl::StrCat("3 14 15 92 ", 60 + i), 16));
    const auto [status, tokens] = Drain(reader);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(tokens, 16);
  }

  // A second worker (CPU) and the router.
  ChildProcess::Options wb;
  wb.binary = worker;
  wb.args = {"--model=" + Model(), "--device=cpu", "--address=127.0.0.1:0",
             "--metrics_address=127.0.0.1:0", "--kv_cache_mib=16"};
  wb.ready_prefix = "memshare_worker: serving";
  absl::StatusOr<std::unique_ptr<ChildProcess>> worker_b = ChildProcess::Start(wb);
  ASSERT_TRUE(worker_b.ok()) << worker_b.status();
  const int port_b = ParsePorts((*worker_b)->ready_line()).at("serving");
  ChildProcess::Options ro;
  ro.binary = router_bin;
  ro.args = {
      "--address=127.0.0.1:0",         "--http_address=127.0.0.1:0",
      "--metrics_address=127.0.0.1:0", absl::StrCat("--workers=", address_a, ",127.0.0.1:", port_b),
      "--poll_interval=50ms",          "--unhealthy_after=1"};
  ro.ready_prefix = "memshare_router: serving";
  absl::StatusOr<std::unique_ptr<ChildProcess>> router = ChildProcess::Start(ro);
  ASSERT_TRUE(router.ok()) << router.status();
  auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", ParsePorts((*router)->ready_line()).at("serving")),
      grpc::InsecureChannelCredentials()));
  auto healthy_workers = [&] {
    grpc::ClientContext c;
    v1::ServerInfo info;
    if (!stub->GetServerInfo(&c, {}, &info).ok()) return -1;
    int n = 0;
    for (const auto& w : info.workers()) n += w.healthy() ? 1 : 0;
    return n;
  };
  ASSERT_TRUE(Eventually([&] { return healthy_workers() == 2; }, absl::Seconds(20)));

  // Rank 1 dies.
  (*rank1)->Signal(SIGKILL);
  const absl::Time kill = absl::Now();
  ASSERT_TRUE(Eventually(
      [&] { return Health(address_a) != grpc::health::v1::HealthCheckResponse::SERVING; },
      absl::Seconds(15)))
      << "rank 0 still SERVING 15 s after rank 1 died";
  const absl::Duration unhealthy = absl::Now() - kill;
  EXPECT_LT(unhealthy, absl::Seconds(8));
  ASSERT_TRUE(Eventually([&] { return healthy_workers() == 1; }, absl::Seconds(15)));
  const absl::Duration routed_away = absl::Now() - kill;
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext c;
    auto reader = stub->Generate(&c, Greedy(absl::StrCat("2 71 82 ", 10 + i), 8));
    const auto [status, tokens] = Drain(reader);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(tokens, 8);
  }
  absl::StatusOr<int> code = (*rank0)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << "rank 0 did not exit after its group broke";
  EXPECT_EQ(*code, 3);
  std::printf(
      "rank 1 killed: rank 0 NOT_SERVING after %s, router down to the other worker after "
      "%s, rank 0 exited with status %d after %s\n",
      absl::FormatDuration(unhealthy).c_str(), absl::FormatDuration(routed_away).c_str(), *code,
      absl::FormatDuration(absl::Now() - kill).c_str());
}

}  // namespace
}  // namespace memshare::e2e
