// An in-process cluster for the router's RPC-boundary tests: N fake-engine
// workers (WorkerServer over FakeInferenceEngine) and one RouterServer, all
// on loopback ports chosen by the OS, plus a client of the public API.
#ifndef MEMSHARE_ROUTER_TESTING_LOCAL_CLUSTER_H_
#define MEMSHARE_ROUTER_TESTING_LOCAL_CLUSTER_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/server/testing/fake_inference_engine.h"
#include "engine/server/worker_server.h"
#include "proto/memshare/v1/inference.grpc.pb.h"
#include "router/router_server.h"

namespace memshare::router::testing {

struct StreamResult {
  std::vector<int32_t> tokens;
  std::string text;
  int chunks = 0;
  bool has_result = false;
  v1::GenerateResult result;
  grpc::Status status;
};

class LocalCluster {
 public:
  struct Options {
    int workers = 2;
    engine::FakeInferenceEngine::Options engine;
    // Ports, metrics and fast polling are set by the cluster; the rest is
    // used as given.
    RouterServer::Options router;
    bool http = false;
    bool router_metrics_endpoint = false;
  };

  explicit LocalCluster(Options options);
  ~LocalCluster();

  // Reads the whole stream of a Generate call through the router.
  StreamResult Generate(const v1::GenerateRequest& request, grpc::ClientContext* context = nullptr);
  // The same, on worker `i` directly (WorkerService).
  StreamResult GenerateOnWorker(int i, const v1::GenerateRequest& request);

  // Stops worker i at once (its open streams fail), keeping its port.
  void StopWorker(int i);
  // Starts worker i again on its old port.
  void RestartWorker(int i);

  std::string worker_address(int i) const;
  engine::FakeInferenceEngine& engine(int i) { return *engines_[i]; }
  engine::WorkerServer& worker(int i) { return *workers_[i]; }
  RouterServer& router() { return *router_; }
  v1::InferenceService::Stub& stub() { return *stub_; }
  std::string router_address() const;
  // Waits until worker i's KV blocks, streams and engine queue are idle.
  bool WorkerIdle(int i);

 private:
  void StartWorker(int i, int port);

  Options options_;
  std::vector<std::unique_ptr<engine::WorkerServer>> workers_;
  std::vector<engine::FakeInferenceEngine*> engines_;
  std::vector<int> ports_;
  std::unique_ptr<RouterServer> router_;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
};

v1::GenerateRequest TextRequest(const std::string& text, int max_tokens,
                                const std::string& id = "");

// Waits until `predicate` holds, polling, up to `timeout`.
template <typename F>
bool Eventually(F predicate, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return predicate();
}

}  // namespace memshare::router::testing

#endif  // MEMSHARE_ROUTER_TESTING_LOCAL_CLUSTER_H_
