#include "router/testing/local_cluster.h"

#include "gtest/gtest.h"
#include "proto/memshare/v1/worker.grpc.pb.h"

namespace memshare::router::testing {

v1::GenerateRequest TextRequest(const std::string& text, int max_tokens, const std::string& id) {
  v1::GenerateRequest r;
  r.set_request_id(id);
  r.set_text(text);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

LocalCluster::LocalCluster(Options options) : options_(std::move(options)) {
  workers_.resize(options_.workers);
  engines_.resize(options_.workers);
  ports_.resize(options_.workers);
  for (int i = 0; i < options_.workers; ++i) StartWorker(i, 0);
  RouterServer::Options r = options_.router;
  r.address = "127.0.0.1:0";
  r.http_address = options_.http ? "127.0.0.1:0" : "";
  r.metrics_address = options_.router_metrics_endpoint ? "127.0.0.1:0" : "";
  r.max_message_bytes = 256 << 10;
  r.registry.static_workers.clear();
  for (int i = 0; i < options_.workers; ++i) r.registry.static_workers.push_back(worker_address(i));
  r.registry.poll_interval = absl::Milliseconds(20);
  r.registry.poll_timeout = absl::Milliseconds(500);
  r.registry.unhealthy_after = 1;
  auto router = RouterServer::Create(r);
  EXPECT_TRUE(router.ok()) << router.status();
  if (!router.ok()) return;
  router_ = *std::move(router);
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(1 << 20);
  stub_ = v1::InferenceService::NewStub(
      grpc::CreateCustomChannel(router_address(), grpc::InsecureChannelCredentials(), args));
}

LocalCluster::~LocalCluster() {
  router_.reset();
  workers_.clear();
}

void LocalCluster::StartWorker(int i, int port) {
  auto engine = engine::FakeInferenceEngine::Create(options_.engine);
  EXPECT_TRUE(engine.ok()) << engine.status();
  engines_[i] = engine->get();
  engine::WorkerServer::Options o;
  o.address = "127.0.0.1:" + std::to_string(port);
  o.metrics_address = "";
  o.max_message_bytes = 256 << 10;
  o.metrics_refresh = absl::Milliseconds(50);
  auto server = engine::WorkerServer::Create(o, *std::move(engine));
  EXPECT_TRUE(server.ok()) << server.status();
  workers_[i] = *std::move(server);
  ports_[i] = workers_[i]->port();
}

void LocalCluster::StopWorker(int i) {
  workers_[i]->Shutdown();
  workers_[i].reset();
  engines_[i] = nullptr;
}

void LocalCluster::RestartWorker(int i) { StartWorker(i, ports_[i]); }

std::string LocalCluster::worker_address(int i) const {
  return "127.0.0.1:" + std::to_string(ports_[i]);
}

std::string LocalCluster::router_address() const {
  return "127.0.0.1:" + std::to_string(router_->port());
}

namespace {

template <typename Reader>
StreamResult ReadAll(Reader& reader) {
  StreamResult s;
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

}  // namespace

StreamResult LocalCluster::Generate(const v1::GenerateRequest& request,
                                    grpc::ClientContext* context) {
  grpc::ClientContext local;
  if (context == nullptr) context = &local;
  auto reader = stub_->Generate(context, request);
  return ReadAll(reader);
}

StreamResult LocalCluster::GenerateOnWorker(int i, const v1::GenerateRequest& request) {
  auto stub = v1::WorkerService::NewStub(
      grpc::CreateChannel(worker_address(i), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  return ReadAll(reader);
}

bool LocalCluster::WorkerIdle(int i) {
  return Eventually([&] {
    const v1::LoadReport load = workers_[i]->service().BuildLoadReport();
    return load.kv_blocks_used() == 0 && load.active_streams() == 0 &&
           load.running_requests() == 0 && load.waiting_requests() == 0;
  });
}

}  // namespace memshare::router::testing
