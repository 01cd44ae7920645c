// End-to-end: the real memshare_router and two worker processes on loopback
// (ports chosen by the OS), driven through the public gRPC and HTTP APIs.
//
// The worker binary and its arguments come from the environment, so the
// same tests run with any engine:
//   MEMSHARE_E2E_WORKER       worker binary, relative to the runfiles root
//                             (default engine/server/testing/fake_worker)
//   MEMSHARE_E2E_WORKER_ARGS  extra arguments, space-separated (default for
//                             the fake: a small batch so requests queue)
// The assertions hold for any engine: greedy decoding is deterministic, and
// the statements about queued and streamed requests are checked against
// what each stream actually received.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/loadgen/load_generator.h"
#include "common/serving_metrics.h"
#include "common/testing/http_client.h"
#include "common/testing/prometheus_text.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/memshare/v1/inference.grpc.pb.h"
#include "proto/memshare/v1/worker.grpc.pb.h"
#include "router/router_metrics.h"
#include "tests/e2e/child_process.h"

namespace memshare::e2e {
namespace {

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace, "/", path);
}

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

struct Stream {
  std::vector<int32_t> tokens;
  std::string text;
  bool has_result = false;
  v1::GenerateResult result;
  grpc::Status status;
};

template <typename Reader>
Stream ReadAll(Reader& reader, std::atomic<int>* tokens_seen = nullptr) {
  Stream s;
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
    if (r.has_chunk()) {
      s.tokens.insert(s.tokens.end(), r.chunk().token_ids().begin(), r.chunk().token_ids().end());
      s.text += r.chunk().text();
      if (tokens_seen != nullptr) tokens_seen->store(static_cast<int>(s.tokens.size()));
    } else if (r.has_result()) {
      s.has_result = true;
      s.result = r.result();
    }
  }
  s.status = reader->Finish();
  return s;
}

template <typename F>
bool Eventually(F predicate, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return predicate();
}

// A greedy request (deterministic on any engine).
v1::GenerateRequest Greedy(const std::string& text, int max_tokens, const std::string& id = "") {
  v1::GenerateRequest r;
  r.set_request_id(id);
  r.set_text(text);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_seed(1);
  r.mutable_stop()->set_ignore_eos(true);
  return r;
}

class Worker {
 public:
  static std::unique_ptr<Worker> Start(int port = 0) {
    auto w = std::make_unique<Worker>();
    ChildProcess::Options o;
    o.binary = Runfile(Env("MEMSHARE_E2E_WORKER", "engine/server/testing/fake_worker"));
    o.args = {absl::StrCat("--address=127.0.0.1:", port), "--metrics_address=127.0.0.1:0",
              "--drain_timeout=30s"};
    for (absl::string_view a : absl::StrSplit(
             Env("MEMSHARE_E2E_WORKER_ARGS", "--fake_max_running=4 --fake_step_interval=2ms"), ' ',
             absl::SkipEmpty())) {
      o.args.emplace_back(a);
    }
    o.ready_prefix = "memshare_worker: serving";
    o.ready_timeout = absl::Seconds(300);  // a real model loads first
    auto process = ChildProcess::Start(o);
    EXPECT_TRUE(process.ok()) << process.status();
    if (!process.ok()) return nullptr;
    w->process = *std::move(process);
    const auto ports = ParsePorts(w->process->ready_line());
    w->port = ports.at("serving");
    w->metrics_port = ports.at("metrics");
    w->stub = v1::WorkerService::NewStub(
        grpc::CreateChannel(w->address(), grpc::InsecureChannelCredentials()));
    return w;
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port); }
  v1::LoadReport Load() {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::LoadReport load;
    EXPECT_TRUE(stub->GetLoad(&c, {}, &load).ok());
    return load;
  }

  std::unique_ptr<ChildProcess> process;
  int port = 0;
  int metrics_port = 0;
  std::unique_ptr<v1::WorkerService::Stub> stub;
};

class ServingE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    workers_.push_back(Worker::Start());
    workers_.push_back(Worker::Start());
    ASSERT_NE(workers_[0], nullptr);
    ASSERT_NE(workers_[1], nullptr);
    StartRouter();
    idle_blocks_ = workers_[0]->Load().kv_blocks_used();
    max_model_len_ = ModelInfo().max_model_len();
  }

  void StartRouter() {
    ChildProcess::Options o;
    o.binary = Runfile("router/memshare_router");
    o.args = {"--address=127.0.0.1:0",
              "--http_address=127.0.0.1:0",
              "--metrics_address=127.0.0.1:0",
              absl::StrCat("--workers=", workers_[0]->address(), ",", workers_[1]->address()),
              "--poll_interval=50ms",
              "--unhealthy_after=1",
              "--drain_timeout=30s"};
    o.ready_prefix = "memshare_router: serving";
    auto process = ChildProcess::Start(o);
    ASSERT_TRUE(process.ok()) << process.status();
    router_ = *std::move(process);
    const auto ports = ParsePorts(router_->ready_line());
    router_port_ = ports.at("serving");
    http_port_ = ports.at("http");
    router_metrics_port_ = ports.at("metrics");
    stub_ = v1::InferenceService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", router_port_), grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(Eventually([&] { return HealthyWorkers() == 2; }));
  }

  v1::ServerInfo ServerInfo() {
    grpc::ClientContext c;
    v1::ServerInfo info;
    EXPECT_TRUE(stub_->GetServerInfo(&c, {}, &info).ok());
    return info;
  }
  int HealthyWorkers() {
    int n = 0;
    const v1::ServerInfo info = ServerInfo();
    for (const auto& w : info.workers()) n += w.healthy() ? 1 : 0;
    return n;
  }
  v1::ModelInfo ModelInfo() {
    grpc::ClientContext c;
    v1::ModelInfo info;
    EXPECT_TRUE(stub_->GetModelInfo(&c, {}, &info).ok());
    return info;
  }
  Stream Generate(const v1::GenerateRequest& r, std::atomic<int>* tokens_seen = nullptr) {
    grpc::ClientContext c;
    auto reader = stub_->Generate(&c, r);
    return ReadAll(reader, tokens_seen);
  }
  bool WorkersIdle() {
    return Eventually([&] {
      for (auto& w : workers_) {
        const v1::LoadReport l = w->Load();
        if (l.kv_blocks_used() != idle_blocks_ || l.active_streams() != 0) return false;
      }
      return true;
    });
  }
  // A generation long enough to be interrupted.
  int LongTokens() const { return std::min(4000, max_model_len_ - 64); }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<ChildProcess> router_;
  int router_port_ = 0, http_port_ = 0, router_metrics_port_ = 0;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
  int64_t idle_blocks_ = 0;
  int max_model_len_ = 0;
};

TEST_F(ServingE2eTest, StreamingThroughTheRouterGivesTheEngineTokens) {
  for (int i = 0; i < 3; ++i) {
    const v1::GenerateRequest r = Greedy(absl::StrCat("The capital of France is ", i), 24);
    const Stream routed = Generate(r);
    grpc::ClientContext c;
    auto reader = workers_[i % 2]->stub->Generate(&c, r);
    const Stream direct = ReadAll(reader);
    ASSERT_TRUE(routed.status.ok()) << routed.status.error_message();
    ASSERT_TRUE(direct.status.ok()) << direct.status.error_message();
    EXPECT_EQ(routed.tokens.size(), 24u);
    EXPECT_EQ(routed.tokens, direct.tokens);
    EXPECT_EQ(routed.text, direct.text);
    ASSERT_TRUE(routed.has_result);
    EXPECT_EQ(routed.result.usage().completion_tokens(), 24);
  }
}

TEST_F(ServingE2eTest, AbortAndClientDisconnectReturnKvBlocksToIdle) {
  // Abort through the router.
  {
    grpc::ClientContext c;
    auto reader = stub_->Generate(&c, Greedy("abort me", LongTokens(), "e2e-abort"));
    v1::GenerateResponse first;
    ASSERT_TRUE(reader->Read(&first));
    grpc::ClientContext ac;
    v1::AbortRequest abort;
    abort.set_request_id("e2e-abort");
    v1::AbortResponse ar;
    ASSERT_TRUE(stub_->Abort(&ac, abort, &ar).ok());
    const Stream rest = ReadAll(reader);
    EXPECT_TRUE(rest.status.ok()) << rest.status.error_message();
    ASSERT_TRUE(rest.has_result);
    EXPECT_EQ(rest.result.finish_reason(), v1::FINISH_REASON_ABORT);
    EXPECT_TRUE(WorkersIdle());
  }
  // gRPC client cancels.
  {
    grpc::ClientContext c;
    auto reader = stub_->Generate(&c, Greedy("cancel me", LongTokens()));
    v1::GenerateResponse first;
    ASSERT_TRUE(reader->Read(&first));
    c.TryCancel();
    EXPECT_EQ(ReadAll(reader).status.error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_TRUE(WorkersIdle());
  }
  // HTTP client closes its connection mid-stream.
  {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(http_port_));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string body = absl::StrCat(R"({"prompt": "disconnect me", "stream": true,
        "temperature": 0, "ignore_eos": true, "max_tokens": )",
                                          LongTokens(), "}");
    const std::string request = absl::StrCat(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: ",
        body.size(), "\r\n\r\n", body);
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    char buffer[512];
    std::string got;
    while (got.find("data: ") == std::string::npos) {
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      ASSERT_GT(n, 0);
      got.append(buffer, static_cast<size_t>(n));
    }
    close(fd);
    EXPECT_TRUE(WorkersIdle());
  }
}

TEST_F(ServingE2eTest, KilledWorkerQueuedRequestsMoveInFlightOnesFailAndItComesBack) {
  constexpr int kRequests = 20;
  const int tokens = std::min(200, max_model_len_ - 64);
  std::vector<std::atomic<int>> seen(kRequests);
  std::vector<Stream> results(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back(
        [&, i] { results[i] = Generate(Greedy(absl::StrCat("request ", i), tokens), &seen[i]); });
  }
  // Worker 0 holds streams that have tokens and requests still queued.
  ASSERT_TRUE(Eventually([&] {
    const v1::LoadReport l = workers_[0]->Load();
    int streaming = 0;
    for (auto& s : seen) streaming += s.load() > 0 ? 1 : 0;
    return l.waiting_requests() > 0 && l.running_requests() > 0 && streaming >= 2;
  }));
  workers_[0]->process->Signal(SIGKILL);
  for (auto& t : clients) t.join();
  int unavailable = 0, ok = 0;
  for (int i = 0; i < kRequests; ++i) {
    const Stream& s = results[i];
    if (s.status.ok()) {
      ++ok;
      EXPECT_EQ(static_cast<int>(s.tokens.size()), tokens) << i;
    } else {
      EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNAVAILABLE) << s.status.error_message();
      // Only a stream that had already sent tokens may fail.
      EXPECT_GT(s.tokens.size(), 0u) << i << ": " << s.status.error_message();
      ++unavailable;
    }
  }
  EXPECT_GE(unavailable, 1);
  EXPECT_GE(ok, 2);
  // Marked down, then up again once it is back on its port.
  ASSERT_TRUE(Eventually([&] { return HealthyWorkers() == 1; }));
  const int port = workers_[0]->port;
  workers_[0] = Worker::Start(port);
  ASSERT_NE(workers_[0], nullptr);
  ASSERT_TRUE(Eventually([&] { return HealthyWorkers() == 2; }));
  EXPECT_TRUE(Generate(Greedy("after the restart", 8)).status.ok());
}

TEST_F(ServingE2eTest, SigtermDrainsAWorkerWithoutLosingAcceptedRequests) {
  constexpr int kRequests = 8;
  std::vector<Stream> results(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] { results[i] = Generate(Greedy(absl::StrCat("drain ", i), 100)); });
  }
  ASSERT_TRUE(Eventually([&] { return workers_[1]->Load().active_streams() > 0; }));
  workers_[1]->process->Signal(SIGTERM);
  // New requests keep working (on the other worker) while it drains.
  std::vector<Stream> late(4);
  std::vector<std::thread> late_clients;
  for (int i = 0; i < 4; ++i) {
    late_clients.emplace_back([&, i] { late[i] = Generate(Greedy(absl::StrCat("late ", i), 20)); });
  }
  for (auto& t : clients) t.join();
  for (auto& t : late_clients) t.join();
  for (const Stream& s : results) {
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.tokens.size(), 100u);
  }
  for (const Stream& s : late) EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  auto code = workers_[1]->process->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST_F(ServingE2eTest, SigtermDrainsTheRouterWithoutLosingAcceptedRequests) {
  constexpr int kRequests = 10;
  std::vector<std::atomic<int>> seen(kRequests);
  std::vector<Stream> results(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back(
        [&, i] { results[i] = Generate(Greedy(absl::StrCat("router drain ", i), 120), &seen[i]); });
  }
  ASSERT_TRUE(Eventually([&] {
    grpc::ClientContext c;
    v1::ServerInfo info;
    return stub_->GetServerInfo(&c, {}, &info).ok() &&
           info.router_in_flight() + info.router_queued() == kRequests;
  }));
  router_->Signal(SIGTERM);
  for (auto& t : clients) t.join();
  for (const Stream& s : results) {
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.tokens.size(), 120u);
  }
  auto code = router_->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST_F(ServingE2eTest, BadInputGetsClearErrorsAndEveryProcessKeepsServing) {
  struct Case {
    v1::GenerateRequest request;
    grpc::StatusCode code;
  };
  std::vector<Case> cases;
  cases.push_back({Greedy("", 5), grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({v1::GenerateRequest(), grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({Greedy("x", 1 << 30), grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({Greedy("bad \xc3\x28 utf8", 5), grpc::StatusCode::INVALID_ARGUMENT});
  {
    v1::GenerateRequest r = Greedy("", 5);
    for (int i = 0; i < max_model_len_ + 10; ++i) r.mutable_token_ids()->add_ids(1);
    cases.push_back({r, grpc::StatusCode::INVALID_ARGUMENT});  // prompt over the limit
  }
  cases.push_back({Greedy(std::string(17 << 20, 'x'), 5), grpc::StatusCode::RESOURCE_EXHAUSTED});
  for (const Case& c : cases) {
    const Stream s = Generate(c.request);
    EXPECT_EQ(s.status.error_code(), c.code) << s.status.error_message();
    EXPECT_FALSE(s.status.error_message().empty());
  }
  auto post = [&](const std::string& body) {
    auto r = memshare::testing::HttpRequest("127.0.0.1", http_port_, "POST", "/v1/completions",
                                            body, {{"Content-Type", "application/json"}});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : memshare::testing::HttpResponse();
  };
  for (const std::string& body :
       {std::string(R"({"prompt": ""})"), std::string(R"({"prompt": "x", "unknown": 1})"),
        std::string(R"({"prompt": "x", "max_tokens": "many"})"),
        std::string(R"({"prompt": "x", "max_tokens": 2000000000})"), std::string("{oops"),
        std::string("{\"prompt\": \"\xc3\x28\"}")}) {
    const auto r = post(body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    const auto j = nlohmann::json::parse(r.body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("error") && j["error"].contains("message")) << r.body;
  }
  EXPECT_EQ(post("{\"prompt\": \"" + std::string(9 << 20, 'x') + "\"}").status, 413);
  // Everything still serves.
  EXPECT_TRUE(Generate(Greedy("still fine", 4)).status.ok());
  EXPECT_EQ(post(R"({"prompt": "still fine", "max_tokens": 4})").status, 200);
  for (auto& w : workers_) {
    grpc::ClientContext c;
    auto reader = w->stub->Generate(&c, Greedy("direct", 4));
    EXPECT_TRUE(ReadAll(reader).status.ok());
  }
}

TEST_F(ServingE2eTest, MetricsOfEveryProcessParseAndHaveEveryMetric) {
  ASSERT_TRUE(Generate(Greedy("count me", 8)).status.ok());
  std::vector<std::pair<std::string, int>> pages = {{"router", router_metrics_port_},
                                                    {"worker0", workers_[0]->metrics_port},
                                                    {"worker1", workers_[1]->metrics_port}};
  for (const auto& [name, port] : pages) {
    auto page = memshare::testing::HttpRequest("127.0.0.1", port, "GET", "/metrics");
    ASSERT_TRUE(page.ok()) << name << ": " << page.status();
    auto parsed = memshare::testing::ParsePrometheusText(page->body);
    ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
    for (const std::string& metric : ServingMetrics::MetricNames()) {
      EXPECT_TRUE(parsed->families.contains(metric)) << name << ": " << metric;
    }
    if (name == "router") {
      for (const std::string& metric : router::RouterMetrics::MetricNames()) {
        EXPECT_TRUE(parsed->families.contains(metric)) << metric;
      }
      EXPECT_GE(*parsed->Value("memshare_requests_total", {{"status", "ok"}}), 1);
    }
  }
}

TEST_F(ServingE2eTest, ThousandRequestsThroughTheRouterWithoutAFailure) {
  bench::LoadOptions o;
  o.target = absl::StrCat("127.0.0.1:", router_port_);
  o.requests = 1000;
  o.concurrency = 32;
  o.max_tokens = 16;
  o.prompt_bytes = 64;
  auto r = bench::RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->failed, 0) << bench::FormatReport(o, *r);
  EXPECT_EQ(r->ok, 1000);
  std::fprintf(stderr, "%s", bench::FormatReport(o, *r).c_str());
}

}  // namespace
}  // namespace memshare::e2e
