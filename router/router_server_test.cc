// The router's public gRPC API over loopback, in front of fake-engine
// workers: routing, retries before the first token, worker failure mid-stream,
// cancellation and deadlines reaching the worker, the bounded queue, bad
// input, abort, API keys, drain and /metrics.
#include "router/router_server.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/testing/grpc_reflection.h"
#include "common/testing/http_client.h"
#include "common/testing/prometheus_text.h"
#include "gtest/gtest.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "router/testing/local_cluster.h"

namespace memshare::router {
namespace {

using engine::FakeInferenceEngine;
using testing::Eventually;
using testing::LocalCluster;
using testing::StreamResult;
using testing::TextRequest;

LocalCluster::Options Paused(int workers = 2) {
  LocalCluster::Options o;
  o.workers = workers;
  o.engine.start_paused = true;
  return o;
}

// Requests waiting or running in worker i's engine.
int InEngine(LocalCluster& c, int i) {
  const auto load = c.engine(i).GetLoad();
  return load.waiting_requests + load.running_requests;
}

TEST(RouterServerTest, StreamsTheSameTokensAsTheWorkerDirectly) {
  LocalCluster cluster({});
  for (int i = 0; i < 4; ++i) {
    v1::GenerateRequest r = TextRequest("prompt " + std::to_string(i), 30);
    r.mutable_sampling()->set_seed(11);
    const StreamResult routed = cluster.Generate(r);
    const StreamResult direct = cluster.GenerateOnWorker(i % 2, r);
    ASSERT_TRUE(routed.status.ok()) << routed.status.error_message();
    ASSERT_TRUE(direct.status.ok()) << direct.status.error_message();
    EXPECT_EQ(routed.tokens.size(), 30u);
    EXPECT_EQ(routed.tokens, direct.tokens);
    EXPECT_EQ(routed.text, direct.text);
    ASSERT_TRUE(routed.has_result);
    EXPECT_EQ(routed.result.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(routed.result.usage().completion_tokens(), 30);
  }
}

TEST(RouterServerTest, LeastLoadSpreadsConcurrentRequests) {
  LocalCluster cluster(Paused());
  std::vector<std::thread> clients;
  std::vector<StreamResult> results(6);
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] { results[i] = cluster.Generate(TextRequest("x", 5)); });
  }
  ASSERT_TRUE(Eventually([&] { return InEngine(cluster, 0) + InEngine(cluster, 1) == 6; }));
  EXPECT_EQ(InEngine(cluster, 0), 3);
  EXPECT_EQ(InEngine(cluster, 1), 3);
  cluster.engine(0).Resume();
  cluster.engine(1).Resume();
  for (auto& t : clients) t.join();
  for (const StreamResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status.error_message();
}

TEST(RouterServerTest, RetriesOnAnotherWorkerBeforeTheFirstToken) {
  LocalCluster cluster({});
  cluster.engine(0).SetSubmitError(absl::UnavailableError("engine unavailable"));
  cluster.engine(1).SetSubmitError(absl::ResourceExhaustedError("engine queue is full"));
  // Both refuse: the client sees the last refusal after both were tried.
  const StreamResult refused = cluster.Generate(TextRequest("x", 5));
  EXPECT_TRUE(refused.status.error_code() == grpc::StatusCode::UNAVAILABLE ||
              refused.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();
  EXPECT_EQ(cluster.engine(0).submitted() + cluster.engine(1).submitted(), 2);
  // One refuses: every request succeeds on the other.
  ASSERT_TRUE(Eventually([&] { return cluster.router().registry().workers()[0]->eligible(); }));
  cluster.engine(1).SetSubmitError(absl::OkStatus());
  for (int i = 0; i < 6; ++i) {
    const StreamResult r = cluster.Generate(TextRequest("retry me", 8));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens.size(), 8u);
  }
  // Invalid requests are not retried.
  const int64_t before = cluster.engine(0).submitted() + cluster.engine(1).submitted();
  const StreamResult bad = cluster.Generate(TextRequest("x", 1 << 30));
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad.status.error_message().substr(0, 19), "sampling.max_tokens");
  EXPECT_EQ(cluster.engine(0).submitted() + cluster.engine(1).submitted(), before);
}

TEST(RouterServerTest, QueuedRequestsMoveToTheOtherWorkerWhenOneStops) {
  LocalCluster cluster(Paused());
  std::vector<std::thread> clients;
  std::vector<StreamResult> results(4);
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back(
        [&, i] { results[i] = cluster.Generate(TextRequest("q" + std::to_string(i), 6)); });
  }
  ASSERT_TRUE(Eventually([&] { return InEngine(cluster, 0) == 2 && InEngine(cluster, 1) == 2; }));
  cluster.StopWorker(0);  // its two requests have no token yet
  ASSERT_TRUE(Eventually([&] { return InEngine(cluster, 1) == 4; }));
  cluster.engine(1).Resume();
  for (auto& t : clients) t.join();
  for (const StreamResult& r : results) {
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens.size(), 6u);
  }
  // The stopped worker is marked down, and up again when it returns.
  WorkerPtr w0 = cluster.router().registry().workers()[0];
  ASSERT_TRUE(Eventually([&] { return !w0->up(); }));
  cluster.RestartWorker(0);
  ASSERT_TRUE(Eventually([&] { return w0->eligible(); }));
}

TEST(RouterServerTest, WorkerStoppedMidStreamEndsTheStreamWithUnavailable) {
  LocalCluster::Options o;
  o.engine.step_interval = absl::Milliseconds(5);
  LocalCluster cluster(o);
  grpc::ClientContext context;
  auto reader = cluster.stub().Generate(&context, TextRequest("long", 2000));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));  // streaming has begun
  const int busy = cluster.worker(0).service().active_streams() == 1 ? 0 : 1;
  cluster.StopWorker(busy);
  while (reader->Read(&response)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  // The router keeps serving on the other worker.
  const StreamResult after = cluster.Generate(TextRequest("after", 5));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

TEST(RouterServerTest, ClientCancellationAbortsTheRequestOnTheWorker) {
  LocalCluster::Options o;
  o.workers = 1;
  o.engine.step_interval = absl::Milliseconds(5);
  LocalCluster cluster(o);
  grpc::ClientContext context;
  auto reader = cluster.stub().Generate(&context, TextRequest(std::string(300, 'p'), 3000));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_GT(cluster.engine(0).GetLoad().kv_blocks_used, 0);
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(cluster.WorkerIdle(0));
  EXPECT_EQ(cluster.engine(0).aborted(), 1);
  EXPECT_TRUE(Eventually([&] { return cluster.router().router().live() == 0; }));
}

TEST(RouterServerTest, DeadlinePropagatesToTheWorker) {
  LocalCluster cluster(Paused(1));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(150));
  const StreamResult r = cluster.Generate(TextRequest("slow", 5), &context);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(cluster.WorkerIdle(0));
}

// The router cancels its worker call (the client's deadline passed) at the
// moment that call's own deadline ends its read: the attempt may end on one
// thread while the cancel runs on another. Many such calls at once make the
// race likely; the router must neither crash nor leak an attempt.
TEST(RouterServerTest, DeadlinesRacingTheWorkerCallsEndThemCleanly) {
  LocalCluster::Options o = Paused(1);
  LocalCluster cluster(o);
  constexpr int kCalls = 64;
  std::vector<std::thread> clients;
  std::vector<StreamResult> results(kCalls);
  const auto start = std::chrono::system_clock::now();
  for (int i = 0; i < kCalls; ++i) {
    clients.emplace_back([&, i] {
      grpc::ClientContext context;
      context.set_deadline(start + std::chrono::milliseconds(200 + 3 * i));
      results[i] = cluster.Generate(TextRequest("late " + std::to_string(i), 5), &context);
    });
  }
  for (auto& t : clients) t.join();
  for (const StreamResult& r : results) {
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << r.status.error_message();
  }
  EXPECT_TRUE(Eventually([&] { return cluster.router().router().in_flight() == 0; }));
  EXPECT_TRUE(Eventually([&] { return cluster.router().router().live() == 0; }));
  EXPECT_TRUE(cluster.WorkerIdle(0));
}

// Clients that cancel while tokens stream: the router's cancel races the
// worker's next message (and its write to the client).
TEST(RouterServerTest, CancelsRacingTheStreamEndThemCleanly) {
  LocalCluster::Options o;
  o.workers = 1;
  o.engine.step_interval = absl::Milliseconds(1);
  LocalCluster cluster(o);
  constexpr int kCalls = 32;
  std::vector<std::thread> clients;
  std::vector<grpc::StatusCode> codes(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    clients.emplace_back([&, i] {
      grpc::ClientContext context;
      auto reader = cluster.stub().Generate(&context, TextRequest("c" + std::to_string(i), 3000));
      v1::GenerateResponse response;
      for (int k = 0; k < 1 + i % 5 && reader->Read(&response); ++k) {
      }
      context.TryCancel();
      while (reader->Read(&response)) {
      }
      codes[i] = reader->Finish().error_code();
    });
  }
  for (auto& t : clients) t.join();
  for (grpc::StatusCode code : codes) EXPECT_EQ(code, grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return cluster.router().router().in_flight() == 0; }));
  EXPECT_TRUE(Eventually([&] { return cluster.router().router().live() == 0; }));
  EXPECT_TRUE(cluster.WorkerIdle(0));
}

// A sink whose SinkWrite blocks until the test lets it return (a write the
// router decided on a gRPC thread, not yet handed to the client's stream),
// and whose writes complete when the test calls OnSinkWriteDone. It records
// a SinkFinish that came while a SinkWrite was still running.
class BlockingSink final : public ResponseSink {
 public:
  void SinkWrite(const v1::GenerateResponse& /*message*/) override {
    absl::MutexLock lock(&mu_);
    in_write_ = true;
    ++writes_;
    mu_.Await(absl::Condition(&unblocked_));
    in_write_ = false;
  }
  void SinkFinish(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    finished_during_write_ = in_write_;
    finish_ = status;
  }
  void Unblock() {
    absl::MutexLock lock(&mu_);
    unblocked_ = true;
  }
  bool writing() const {
    absl::MutexLock lock(&mu_);
    return in_write_;
  }
  int writes() const {
    absl::MutexLock lock(&mu_);
    return writes_;
  }
  std::optional<grpc::Status> finish() const {
    absl::MutexLock lock(&mu_);
    return finish_;
  }
  bool finished_during_write() const {
    absl::MutexLock lock(&mu_);
    return finished_during_write_;
  }

 private:
  mutable absl::Mutex mu_;
  bool unblocked_ ABSL_GUARDED_BY(mu_) = false;
  bool in_write_ ABSL_GUARDED_BY(mu_) = false;
  int writes_ ABSL_GUARDED_BY(mu_) = 0;
  bool finished_during_write_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
};

// A client's cancel that comes while the router is handing it a message
// must not finish the client's stream under that write: a finished gRPC
// stream (or HTTP response) may be freed at once. The finish waits for the
// write's OnSinkWriteDone.
TEST(RouterServerTest, CancelDuringASinkWriteFinishesAfterTheWrite) {
  LocalCluster::Options o;
  o.workers = 1;
  o.engine.step_interval = absl::Milliseconds(5);
  LocalCluster cluster(o);
  ASSERT_TRUE(Eventually([&] { return cluster.router().registry().workers()[0]->eligible(); }));
  BlockingSink sink;
  Router::CallPtr call =
      cluster.router().router().Start(TextRequest("slow", 1000), absl::InfiniteFuture(), &sink);
  ASSERT_TRUE(Eventually([&] { return sink.writing(); }));
  call->Cancel();
  EXPECT_FALSE(sink.finish().has_value());
  sink.Unblock();
  ASSERT_TRUE(Eventually([&] { return !sink.writing(); }));
  EXPECT_FALSE(sink.finish().has_value());
  call->OnSinkWriteDone(true);
  ASSERT_TRUE(sink.finish().has_value());
  EXPECT_EQ(sink.finish()->error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(sink.finished_during_write());
  EXPECT_EQ(sink.writes(), 1);
  EXPECT_TRUE(Eventually([&] { return cluster.router().router().live() == 0; }));
  EXPECT_TRUE(Eventually([&] { return cluster.router().router().in_flight() == 0; }));
  EXPECT_TRUE(cluster.WorkerIdle(0));
  EXPECT_EQ(cluster.engine(0).aborted(), 1);
}

TEST(RouterServerTest, FullQueueAnswersResourceExhausted) {
  LocalCluster::Options o = Paused();
  o.router.router.max_in_flight_per_worker = 1;
  o.router.router.max_queue = 2;
  LocalCluster cluster(o);
  std::vector<std::thread> clients;
  std::vector<StreamResult> results(4);
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] { results[i] = cluster.Generate(TextRequest("x", 3)); });
    // Two on the workers, then two in the router's queue.
    ASSERT_TRUE(Eventually([&] { return cluster.router().router().live() == i + 1; }));
  }
  EXPECT_EQ(cluster.router().router().queued(), 2);
  const StreamResult refused = cluster.Generate(TextRequest("one too many", 3));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  cluster.engine(0).Resume();
  cluster.engine(1).Resume();
  for (auto& t : clients) t.join();
  for (const StreamResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status.error_message();
}

TEST(RouterServerTest, BadInputGetsClearStatusesAndServingGoesOn) {
  LocalCluster cluster({});
  EXPECT_EQ(cluster.Generate(TextRequest("", 5)).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(cluster.Generate(v1::GenerateRequest()).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  const StreamResult utf8 = cluster.Generate(TextRequest("\xff\xfe", 5));
  EXPECT_EQ(utf8.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(utf8.status.error_message(), "text: not valid UTF-8");
  v1::GenerateRequest long_prompt;
  for (int i = 0; i < 5000; ++i) long_prompt.mutable_token_ids()->add_ids(1);
  EXPECT_EQ(cluster.Generate(long_prompt).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const StreamResult big = cluster.Generate(TextRequest(std::string(300 << 10, 'x'), 5));
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(cluster.Generate(TextRequest("fine", 4)).status.ok());
}

TEST(RouterServerTest, AbortEndsQueuedAndRunningRequests) {
  LocalCluster::Options o = Paused(1);
  o.router.router.max_in_flight_per_worker = 1;
  LocalCluster cluster(o);
  StreamResult running, queued;
  std::thread t1([&] { running = cluster.Generate(TextRequest("a", 5, "running")); });
  ASSERT_TRUE(Eventually([&] { return InEngine(cluster, 0) == 1; }));
  std::thread t2([&] { queued = cluster.Generate(TextRequest("b", 5, "queued")); });
  ASSERT_TRUE(Eventually([&] { return cluster.router().router().queued() == 1; }));
  for (const char* id : {"queued", "running"}) {
    grpc::ClientContext context;
    v1::AbortRequest abort;
    abort.set_request_id(id);
    v1::AbortResponse response;
    const grpc::Status s = cluster.stub().Abort(&context, abort, &response);
    EXPECT_TRUE(s.ok()) << id << ": " << s.error_message();
  }
  t1.join();
  t2.join();
  for (const StreamResult* r : {&running, &queued}) {
    EXPECT_TRUE(r->status.ok()) << r->status.error_message();
    ASSERT_TRUE(r->has_result);
    EXPECT_EQ(r->result.finish_reason(), v1::FINISH_REASON_ABORT);
  }
  grpc::ClientContext context;
  v1::AbortRequest abort;
  abort.set_request_id("nobody");
  v1::AbortResponse response;
  EXPECT_EQ(cluster.stub().Abort(&context, abort, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(cluster.WorkerIdle(0));
}

TEST(RouterServerTest, ApiKeysAreChecked) {
  LocalCluster::Options o;
  o.router.api_keys = {"sk-test"};
  LocalCluster cluster(o);
  EXPECT_EQ(cluster.Generate(TextRequest("x", 3)).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext wrong;
  wrong.AddMetadata("authorization", "Bearer sk-wrong");
  EXPECT_EQ(cluster.Generate(TextRequest("x", 3), &wrong).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext right;
  right.AddMetadata("authorization", "Bearer sk-test");
  EXPECT_TRUE(cluster.Generate(TextRequest("x", 3), &right).status.ok());
  // Health stays open to probes.
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(cluster.router_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext hc;
  grpc::health::v1::HealthCheckResponse hr;
  EXPECT_TRUE(health->Check(&hc, {}, &hr).ok());
  EXPECT_EQ(hr.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(RouterServerTest, ServesReflection) {
  LocalCluster cluster({});
  auto services = memshare::testing::ListServicesByReflection(
      grpc::CreateChannel(cluster.router_address(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_NE(std::find(services->begin(), services->end(), "memshare.v1.InferenceService"),
            services->end());
}

TEST(RouterServerTest, QueuedRequestsTimeOutWithoutAHealthyWorker) {
  LocalCluster::Options o;
  o.router.router.queue_timeout = absl::Milliseconds(200);
  LocalCluster cluster(o);
  cluster.StopWorker(0);
  cluster.StopWorker(1);
  ASSERT_TRUE(Eventually([&] {
    for (const WorkerPtr& w : cluster.router().registry().workers()) {
      if (w->up()) return false;
    }
    return true;
  }));
  const StreamResult r = cluster.Generate(TextRequest("nobody home", 3));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("no healthy worker"), std::string::npos);
}

TEST(RouterServerTest, ModelAndServerInfo) {
  LocalCluster cluster(Paused());
  grpc::ClientContext mc;
  v1::ModelInfo model;
  ASSERT_TRUE(cluster.stub().GetModelInfo(&mc, {}, &model).ok());
  EXPECT_EQ(model.model_id(), "fake-model");
  StreamResult r;
  std::thread t([&] { r = cluster.Generate(TextRequest(std::string(100, 'x'), 5)); });
  ASSERT_TRUE(Eventually([&] { return InEngine(cluster, 0) + InEngine(cluster, 1) == 1; }));
  v1::ServerInfo info;
  ASSERT_TRUE(Eventually([&] {
    grpc::ClientContext sc;
    EXPECT_TRUE(cluster.stub().GetServerInfo(&sc, {}, &info).ok());
    return info.load().waiting_requests() == 1;
  }));
  EXPECT_EQ(info.workers_size(), 2);
  EXPECT_TRUE(info.workers(0).healthy());
  EXPECT_EQ(info.load().kv_blocks_total(), 2 * 4096);
  EXPECT_EQ(info.load().waiting_tokens(), 100);
  EXPECT_EQ(info.router_in_flight(), 1);
  EXPECT_EQ(info.model().model_id(), "fake-model");
  cluster.engine(0).Resume();
  cluster.engine(1).Resume();
  t.join();
}

TEST(RouterServerTest, DrainFinishesAcceptedRequestsAndRefusesNewOnes) {
  LocalCluster::Options o = Paused();
  o.router.router.max_in_flight_per_worker = 1;
  LocalCluster cluster(o);
  std::vector<std::thread> clients;
  std::vector<StreamResult> results(4);  // two running, two queued in the router
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] { results[i] = cluster.Generate(TextRequest("d", 10)); });
  }
  ASSERT_TRUE(Eventually([&] { return cluster.router().router().live() == 4; }));
  absl::Status drained;
  std::thread drainer([&] { drained = cluster.router().Drain(absl::Seconds(20)); });
  ASSERT_TRUE(Eventually([&] { return cluster.router().router().draining(); }));
  EXPECT_EQ(cluster.Generate(TextRequest("late", 3)).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  cluster.engine(0).Resume();
  cluster.engine(1).Resume();
  for (auto& t : clients) t.join();
  drainer.join();
  EXPECT_TRUE(drained.ok()) << drained;
  for (const StreamResult& r : results) {
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens.size(), 10u);
  }
}

// A worker that refuses with UNAVAILABLE counts as failed unless it sends
// the draining marker (kDrainingMetadataKey); the words of the message do
// not matter (the router used to look for "draining" in them).
TEST(RouterServerTest, OnlyTheDrainingMarkerSparesARefusingWorker) {
  LocalCluster::Options o;
  o.router_metrics_endpoint = true;
  LocalCluster cluster(o);
  cluster.engine(0).SetSubmitError(absl::UnavailableError("engine is draining its queue"));
  for (int i = 0; i < 20 && cluster.engine(0).submitted() == 0; ++i) {
    const StreamResult r = cluster.Generate(TextRequest("retried", 4));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  }
  ASSERT_GE(cluster.engine(0).submitted(), 1) << "no request reached worker 0";
  auto page = memshare::testing::HttpRequest("127.0.0.1", cluster.router().metrics_port(), "GET",
                                             "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  auto parsed = memshare::testing::ParsePrometheusText(page->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_GE(parsed->Value("memshare_router_retries_total", {{"reason", "unavailable"}}).value_or(0),
            1);
  EXPECT_EQ(parsed->Value("memshare_router_retries_total", {{"reason", "draining"}}).value_or(0),
            0);
}

TEST(RouterServerTest, MetricsPageHasEveryServingAndRouterMetric) {
  LocalCluster::Options o;
  o.router_metrics_endpoint = true;
  LocalCluster cluster(o);
  ASSERT_TRUE(cluster.Generate(TextRequest("measure", 12)).status.ok());
  EXPECT_FALSE(cluster.Generate(TextRequest("", 12)).status.ok());
  auto page = memshare::testing::HttpRequest("127.0.0.1", cluster.router().metrics_port(), "GET",
                                             "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  auto parsed = memshare::testing::ParsePrometheusText(page->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  for (const std::string& name : ServingMetrics::MetricNames()) {
    EXPECT_TRUE(parsed->families.contains(name)) << name;
  }
  for (const std::string& name : RouterMetrics::MetricNames()) {
    EXPECT_TRUE(parsed->families.contains(name)) << name;
  }
  EXPECT_EQ(*parsed->Value("memshare_requests_total", {{"status", "ok"}}), 1);
  EXPECT_EQ(*parsed->Value("memshare_requests_total", {{"status", "invalid_argument"}}), 1);
  EXPECT_EQ(*parsed->Value("memshare_generation_tokens_total"), 12);
  EXPECT_EQ(*parsed->Value("memshare_kv_blocks_total"), 2 * 4096);
  EXPECT_EQ(
      *parsed->Value("memshare_router_worker_healthy", {{"worker", cluster.worker_address(0)}}), 1);
  double routed = 0;
  for (int i = 0; i < 2; ++i) {
    routed += parsed
                  ->Value("memshare_router_routed_requests_total",
                          {{"worker", cluster.worker_address(i)}})
                  .value_or(0);
  }
  EXPECT_EQ(routed, 2);
}

}  // namespace
}  // namespace memshare::router

namespace memshare::router {
namespace {

// Runs a shell command; its stdout, or nullopt when it fails.
std::optional<std::string> Shell(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  if (pclose(pipe) != 0) return std::nullopt;
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(RouterServerTlsTest, TlsToClientsAndToWorkers) {
  const std::string dir = ::testing::TempDir();
  const std::string cert = dir + "/cert.pem", key = dir + "/key.pem";
  if (!Shell("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
             key + " -out " + cert + " 2>/dev/null")
           .has_value()) {
    GTEST_SKIP() << "openssl cannot make a test certificate here";
  }
  auto engine = FakeInferenceEngine::Create({});
  ASSERT_TRUE(engine.ok());
  engine::WorkerServer::Options wo;
  wo.address = "127.0.0.1:0";
  wo.metrics_address = "";
  wo.tls_cert_file = cert;
  wo.tls_key_file = key;
  auto worker = engine::WorkerServer::Create(wo, *std::move(engine));
  ASSERT_TRUE(worker.ok()) << worker.status();

  RouterServer::Options o;
  o.address = "127.0.0.1:0";
  o.http_address = "";
  o.metrics_address = "";
  o.tls_cert_file = cert;
  o.tls_key_file = key;
  o.worker_tls_ca_file = cert;
  o.registry.static_workers = {"127.0.0.1:" + std::to_string((*worker)->port())};
  o.registry.poll_interval = absl::Milliseconds(20);
  auto router = RouterServer::Create(o);
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE(Eventually([&] { return (*router)->registry().workers()[0]->eligible(); }));

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadAll(cert);
  auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(
      "localhost:" + std::to_string((*router)->port()), grpc::SslCredentials(ssl)));
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, TextRequest("over tls", 6));
  v1::GenerateResponse r;
  int tokens = 0;
  while (reader->Read(&r)) tokens += r.has_chunk() ? r.chunk().token_ids_size() : 0;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 6);

  // Plain text is refused.
  auto plain = v1::InferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*router)->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext plain_context;
  plain_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::ModelInfo info;
  EXPECT_FALSE(plain->GetModelInfo(&plain_context, {}, &info).ok());
}

}  // namespace
}  // namespace memshare::router
