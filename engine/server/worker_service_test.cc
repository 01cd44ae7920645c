// WorkerService and WorkerServer over loopback with the fake engine: the RPC
// boundary of the worker.
#include "engine/server/worker_service.h"

#include <grpcpp/grpcpp.h>

#include <string>
#include <thread>
#include <vector>

#include "common/grpc_status.h"
#include "common/testing/grpc_reflection.h"
#include "common/testing/http_client.h"
#include "common/testing/prometheus_text.h"
#include "engine/server/testing/fake_inference_engine.h"
#include "engine/server/worker_server.h"
#include "gtest/gtest.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"

namespace memshare::engine {
namespace {

struct Stream {
  std::vector<int32_t> tokens;
  std::string text;
  int chunks = 0;
  bool has_result = false;
  v1::GenerateResult result;
  grpc::Status status;
};

class WorkerServiceTest : public ::testing::Test {
 protected:
  // Without a /metrics endpoint unless asked (its HTTP server takes seconds
  // to stop).
  void Start(FakeInferenceEngine::Options engine_options = {}, bool with_metrics = false,
             WorkerServer::Options options = {}) {
    auto engine = FakeInferenceEngine::Create(engine_options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->get();
    options.address = "127.0.0.1:0";
    options.metrics_address = with_metrics ? "127.0.0.1:0" : "";
    options.max_message_bytes = 64 << 10;
    options.service.max_prompt_bytes = 32 << 10;
    auto server = WorkerServer::Create(options, *std::move(engine));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(1 << 20);
    channel_ = grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
    stub_ = v1::WorkerService::NewStub(channel_);
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }

  Stream Generate(const v1::GenerateRequest& request, grpc::ClientContext* context = nullptr) {
    grpc::ClientContext local;
    if (context == nullptr) context = &local;
    Stream s;
    auto reader = stub_->Generate(context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_chunk()) {
        ++s.chunks;
        s.tokens.insert(s.tokens.end(), response.chunk().token_ids().begin(),
                        response.chunk().token_ids().end());
        s.text += response.chunk().text();
      } else if (response.has_result()) {
        s.has_result = true;
        s.result = response.result();
      }
    }
    s.status = reader->Finish();
    return s;
  }

  v1::LoadReport Load() {
    grpc::ClientContext context;
    v1::LoadReport load;
    EXPECT_TRUE(stub_->GetLoad(&context, {}, &load).ok());
    return load;
  }

  // Waits until the worker's used KV blocks and open streams are back to 0.
  void ExpectIdle() {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    v1::LoadReport load;
    while (absl::Now() < deadline) {
      load = Load();
      if (load.kv_blocks_used() == 0 && load.active_streams() == 0 &&
          load.running_requests() == 0 && load.waiting_requests() == 0) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    ADD_FAILURE() << "worker not idle: " << load.ShortDebugString();
  }

  FakeInferenceEngine* engine_ = nullptr;
  std::unique_ptr<WorkerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

v1::GenerateRequest Text(const std::string& text, int max_tokens, const std::string& id = "") {
  v1::GenerateRequest r;
  r.set_request_id(id);
  r.set_text(text);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

TEST_F(WorkerServiceTest, StreamsTheEngineTokensThenTheResult) {
  Start();
  const Stream s = Generate(Text("hello", 24, "r1"));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_EQ(s.tokens.size(), 24u);
  const std::vector<int32_t> prompt = {'h', 'e', 'l', 'l', 'o'};
  for (int i = 0; i < 24; ++i) EXPECT_EQ(s.tokens[i], FakeInferenceEngine::TokenAt(prompt, 0, i));
  EXPECT_EQ(s.text.size(), 24u);
  ASSERT_TRUE(s.has_result);
  EXPECT_EQ(s.result.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(s.result.usage().prompt_tokens(), 5);
  EXPECT_EQ(s.result.usage().completion_tokens(), 24);
  ExpectIdle();
}

TEST_F(WorkerServiceTest, AssignsRequestIdsAndServesConcurrentStreams) {
  Start();
  std::vector<std::thread> threads;
  std::vector<Stream> streams(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { streams[i] = Generate(Text("p" + std::to_string(i), 10)); });
  }
  for (auto& t : threads) t.join();
  for (const Stream& s : streams) {
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.tokens.size(), 10u);
  }
  ExpectIdle();
}

TEST_F(WorkerServiceTest, BadInputGetsInvalidArgumentAndTheServerKeepsServing) {
  Start();
  struct Case {
    v1::GenerateRequest request;
    std::string field;
  };
  std::vector<Case> cases;
  cases.push_back({Text("", 5), "text"});
  cases.push_back({v1::GenerateRequest(), "input"});
  cases.push_back({Text("x", 1 << 30), "sampling.max_tokens"});
  {
    v1::GenerateRequest r;
    for (int i = 0; i < 5000; ++i) r.mutable_token_ids()->add_ids(1);
    cases.push_back({r, "token_ids.ids"});  // over max_model_len
  }
  {
    v1::GenerateRequest r = Text("x", 5);
    r.mutable_sampling()->set_top_p(7);
    cases.push_back({r, "sampling.top_p"});
  }
  {
    v1::GenerateRequest r = Text("x", 5);
    r.mutable_memshare()->set_tau_kv(0.9f);  // over the fake's bound 0.5
    cases.push_back({r, "memshare.tau_kv"});
  }
  cases.push_back({Text(std::string(40 << 10, 'x'), 5), "text"});  // over max_prompt_bytes
  for (const Case& c : cases) {
    const Stream s = Generate(c.request);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_EQ(s.status.error_message().substr(0, c.field.size() + 1), c.field + ":")
        << s.status.error_message();
    EXPECT_FALSE(s.has_result);
  }
  // Oversized message: refused by gRPC before the service sees it.
  const Stream big = Generate(Text(std::string(100 << 10, 'x'), 5));
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << big.status.error_message();
  // Invalid UTF-8.
  const Stream utf8 = Generate(Text("bad \xc3\x28 text", 5));
  EXPECT_EQ(utf8.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(utf8.status.error_message(), "text: not valid UTF-8");
  EXPECT_EQ(engine_->submitted(), 1);  // only tau_kv reached the engine (it checks bounds)
  // Still serving.
  const Stream ok = Generate(Text("fine", 3));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  ExpectIdle();
}

TEST_F(WorkerServiceTest, DuplicateLiveRequestIdIsRefused) {
  Start({.start_paused = true});
  grpc::ClientContext first_context;
  auto first = stub_->Generate(&first_context, Text("a", 5, "same"));
  // Wait until the first is in the engine.
  while (Load().waiting_requests() == 0) absl::SleepFor(absl::Milliseconds(2));
  const Stream second = Generate(Text("b", 5, "same"));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  engine_->Resume();
  v1::GenerateResponse r;
  while (first->Read(&r)) {
  }
  EXPECT_TRUE(first->Finish().ok());
}

TEST_F(WorkerServiceTest, ClientCancellationAbortsTheEngineRequestAndFreesBlocks) {
  Start({.step_interval = absl::Milliseconds(2)});
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, Text(std::string(200, 'p'), 3000, "c1"));
  v1::GenerateResponse r;
  ASSERT_TRUE(reader->Read(&r));  // streaming
  EXPECT_GT(Load().kv_blocks_used(), 0);
  context.TryCancel();
  while (reader->Read(&r)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectIdle();
  EXPECT_EQ(engine_->aborted(), 1);
}

TEST_F(WorkerServiceTest, DeadlinePropagatesToTheEngine) {
  Start({.start_paused = true});
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  const Stream s = Generate(Text("slow", 5), &context);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ExpectIdle();
}

TEST_F(WorkerServiceTest, AbortRpcEndsTheStreamWithAbort) {
  Start({.start_paused = true});
  Stream s;
  std::thread t([&] { s = Generate(Text("x", 5, "to-abort")); });
  while (Load().waiting_requests() == 0) absl::SleepFor(absl::Milliseconds(2));
  grpc::ClientContext context;
  v1::AbortRequest abort;
  abort.set_request_id("to-abort");
  v1::AbortResponse response;
  EXPECT_TRUE(stub_->Abort(&context, abort, &response).ok());
  t.join();
  EXPECT_TRUE(s.status.ok());
  ASSERT_TRUE(s.has_result);
  EXPECT_EQ(s.result.finish_reason(), v1::FINISH_REASON_ABORT);
  grpc::ClientContext again;
  EXPECT_EQ(stub_->Abort(&again, abort, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectIdle();
}

TEST_F(WorkerServiceTest, EngineRefusalsMapToStatuses) {
  Start({.max_waiting = 1, .start_paused = true});
  engine_->SetSubmitError(absl::ResourceExhaustedError("engine queue is full"));
  EXPECT_EQ(Generate(Text("x", 5)).status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  engine_->SetSubmitError(absl::OkStatus());
  ExpectIdle();
}

TEST_F(WorkerServiceTest, DrainRefusesNewRequestsAndFinishesOpenOnes) {
  Start({.step_interval = absl::Milliseconds(2), .start_paused = true});
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto check = [&] {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(health->Check(&context, {}, &response).ok());
    return response.status();
  };
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::SERVING);
  Stream open;
  std::thread t([&] { open = Generate(Text("in flight", 20, "open")); });
  while (Load().waiting_requests() == 0) absl::SleepFor(absl::Milliseconds(2));

  // A Drain call that waits answers once the open stream is done.
  grpc::ClientContext drain_context;
  v1::DrainRequest drain;
  drain.set_wait(true);
  v1::DrainResponse drained;
  grpc::Status drain_status;
  std::thread waiter([&] { drain_status = stub_->Drain(&drain_context, drain, &drained); });
  while (!server_->service().draining()) absl::SleepFor(absl::Milliseconds(2));
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  grpc::ClientContext refused_context;
  const Stream refused = Generate(Text("new", 5), &refused_context);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // The router tells a draining worker from a failed one by this marker.
  const auto& trailers = refused_context.GetServerTrailingMetadata();
  const auto marker = trailers.find(kDrainingMetadataKey);
  ASSERT_NE(marker, trailers.end());
  EXPECT_EQ(std::string(marker->second.data(), marker->second.size()), "1");
  EXPECT_TRUE(Load().draining());

  engine_->Resume();
  t.join();
  waiter.join();
  EXPECT_TRUE(open.status.ok());
  EXPECT_EQ(open.tokens.size(), 20u);
  EXPECT_TRUE(drain_status.ok()) << drain_status.error_message();
  EXPECT_EQ(drained.active_streams(), 0);
  EXPECT_TRUE(server_->Drain(absl::Seconds(5)).ok());
}

TEST_F(WorkerServiceTest, AFailedEngineIsReportedNotServing) {
  Start();
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto check = [&] {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(health->Check(&context, {}, &response).ok());
    return response.status();
  };
  server_->RefreshMetrics();
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::SERVING);
  engine_->SetHealth(absl::UnavailableError("tensor-parallel group failed: rank 1 timed out"));
  server_->RefreshMetrics();  // also runs every metrics_refresh
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

TEST_F(WorkerServiceTest, DrainDeadlineAbortsWhatIsLeft) {
  Start({.start_paused = true});
  Stream open;
  std::thread t([&] { open = Generate(Text("stuck", 20, "stuck")); });
  while (Load().waiting_requests() == 0) absl::SleepFor(absl::Milliseconds(2));
  const absl::Status drained = server_->Drain(absl::Milliseconds(100));
  EXPECT_EQ(drained.code(), absl::StatusCode::kDeadlineExceeded) << drained;
  t.join();
  EXPECT_TRUE(open.status.ok()) << open.status.error_message();
  EXPECT_EQ(open.result.finish_reason(), v1::FINISH_REASON_ABORT);
}

TEST_F(WorkerServiceTest, ServesReflectionAndHealth) {
  Start();
  auto services = testing::ListServicesByReflection(channel_);
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_NE(std::find(services->begin(), services->end(), "memshare.v1.WorkerService"),
            services->end());
  EXPECT_NE(std::find(services->begin(), services->end(), "grpc.health.v1.Health"),
            services->end());
}

TEST_F(WorkerServiceTest, ModelInfoAndMetricsPage) {
  Start({}, /*with_metrics=*/true);
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_id(), "fake-model");
  EXPECT_EQ(info.max_model_len(), 4096);

  ASSERT_TRUE(Generate(Text("metrics", 40)).status.ok());
  EXPECT_EQ(Generate(Text("", 4)).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  server_->RefreshMetrics();
  auto page = testing::HttpRequest("127.0.0.1", server_->metrics_port(), "GET", "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->status, 200);
  auto parsed = testing::ParsePrometheusText(page->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  for (const std::string& name : ServingMetrics::MetricNames()) {
    EXPECT_TRUE(parsed->families.contains(name)) << name;
  }
  EXPECT_EQ(*parsed->Value("memshare_requests_total", {{"status", "ok"}}), 1);
  EXPECT_EQ(*parsed->Value("memshare_requests_total", {{"status", "invalid_argument"}}), 1);
  EXPECT_EQ(*parsed->Value("memshare_generation_tokens_total"), 40);
  EXPECT_EQ(*parsed->Value("memshare_prompt_tokens_total"), 7);
  EXPECT_EQ(*parsed->Value("memshare_time_to_first_token_seconds_count"), 1);
  EXPECT_EQ(*parsed->Value("memshare_inter_token_latency_seconds_count"), 39);
  EXPECT_EQ(*parsed->Value("memshare_kv_blocks_total"), 4096);
  EXPECT_GT(*parsed->Value("memshare_step_duration_seconds_count", {{"phase", "schedule"}}), 0);
}

}  // namespace
}  // namespace memshare::engine
