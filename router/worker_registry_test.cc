#include "router/worker_registry.h"

#include <atomic>

#include "engine/server/testing/fake_inference_engine.h"
#include "engine/server/worker_server.h"
#include "gtest/gtest.h"

namespace memshare::router {
namespace {

using engine::FakeInferenceEngine;
using engine::WorkerServer;

std::unique_ptr<WorkerServer> StartWorker(int port = 0) {
  auto engine = FakeInferenceEngine::Create({});
  EXPECT_TRUE(engine.ok());
  WorkerServer::Options o;
  o.address = "127.0.0.1:" + std::to_string(port);
  o.metrics_address = "";
  auto server = WorkerServer::Create(o, *std::move(engine));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::string Address(const WorkerServer& w) { return "127.0.0.1:" + std::to_string(w.port()); }

WorkerRegistry::Options FastOptions() {
  WorkerRegistry::Options o;
  o.poll_interval = absl::Milliseconds(20);
  o.poll_timeout = absl::Milliseconds(500);
  o.unhealthy_after = 1;
  o.dns_refresh = absl::Milliseconds(20);
  return o;
}

// Waits until `predicate` holds (polling), up to 10 s.
template <typename F>
bool Eventually(F predicate) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return predicate();
}

TEST(WorkerRegistryTest, RefusesBadOptions) {
  EXPECT_EQ(WorkerRegistry::Create({}, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  WorkerRegistry::Options o = FastOptions();
  o.static_workers = {"no-port"};
  EXPECT_EQ(WorkerRegistry::Create(o, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.static_workers = {"host:99999"};
  EXPECT_EQ(WorkerRegistry::Create(o, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WorkerRegistryTest, StaticWorkersAreUpWithLoadAndModelInfo) {
  auto a = StartWorker();
  auto b = StartWorker();
  WorkerRegistry::Options o = FastOptions();
  o.static_workers = {Address(*a), Address(*b), Address(*a)};  // duplicates collapse
  auto registry = WorkerRegistry::Create(o, nullptr, nullptr);
  ASSERT_TRUE(registry.ok()) << registry.status();
  auto workers = (*registry)->workers();
  ASSERT_EQ(workers.size(), 2u);
  for (const WorkerPtr& w : workers) {
    EXPECT_TRUE(w->up());
    EXPECT_TRUE(w->eligible());
    EXPECT_EQ(w->load().kv_blocks_total(), 4096);
  }
  ASSERT_TRUE((*registry)->model_info().has_value());
  EXPECT_EQ((*registry)->model_info()->model_id(), "fake-model");
}

TEST(WorkerRegistryTest, WorkerGoesDownAndComesBackOnTheSamePort) {
  auto a = StartWorker();
  const int port = a->port();
  std::atomic<int> changes{0};
  WorkerRegistry::Options o = FastOptions();
  o.static_workers = {Address(*a)};
  o.on_change = [&] { ++changes; };
  auto registry = WorkerRegistry::Create(o, nullptr, nullptr);
  ASSERT_TRUE(registry.ok());
  WorkerPtr w = (*registry)->workers()[0];
  ASSERT_TRUE(w->eligible());
  a.reset();  // the worker stops
  ASSERT_TRUE(Eventually([&] { return !w->up(); }));
  EXPECT_FALSE(w->eligible());
  a = StartWorker(port);  // and comes back
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(Eventually([&] { return w->eligible(); }));
  EXPECT_GE(changes.load(), 2);
}

TEST(WorkerRegistryTest, DrainingWorkerIsUpButNotEligible) {
  auto a = StartWorker();
  WorkerRegistry::Options o = FastOptions();
  o.static_workers = {Address(*a)};
  auto registry = WorkerRegistry::Create(o, nullptr, nullptr);
  ASSERT_TRUE(registry.ok());
  WorkerPtr w = (*registry)->workers()[0];
  a->service().StartDrain();
  ASSERT_TRUE(Eventually([&] { return !w->eligible(); }));
  EXPECT_TRUE(w->up());
  EXPECT_TRUE(w->load().draining());
}

TEST(WorkerRegistryTest, ReportedFailureMarksDownUntilTheNextGoodPoll) {
  auto a = StartWorker();
  WorkerRegistry::Options o = FastOptions();
  o.static_workers = {Address(*a)};
  o.poll_interval = absl::Hours(1);  // only explicit polls
  auto registry = WorkerRegistry::Create(o, nullptr, nullptr);
  ASSERT_TRUE(registry.ok());
  WorkerPtr w = (*registry)->workers()[0];
  ASSERT_TRUE(w->eligible());
  (*registry)->ReportFailure(w);
  EXPECT_FALSE(w->up());
  (*registry)->PollNow();
  EXPECT_TRUE(w->eligible());
}

TEST(WorkerRegistryTest, DnsWorkersJoinAndLeaveWithTheResolvedSet) {
  auto a = StartWorker();
  auto b = StartWorker();
  absl::Mutex mu;
  std::vector<std::string> resolved = {Address(*a)};
  bool fail = false;
  WorkerRegistry::Options o = FastOptions();
  o.dns_target = "workers.test:50051";
  o.resolver = [&](const std::string& target) -> absl::StatusOr<std::vector<std::string>> {
    EXPECT_EQ(target, "workers.test:50051");
    absl::MutexLock lock(&mu);
    if (fail) return absl::UnavailableError("dns down");
    return resolved;
  };
  auto registry = WorkerRegistry::Create(o, nullptr, nullptr);
  ASSERT_TRUE(registry.ok());
  EXPECT_EQ((*registry)->workers().size(), 1u);
  {
    absl::MutexLock lock(&mu);
    resolved = {Address(*a), Address(*b)};
  }
  ASSERT_TRUE(Eventually([&] {
    auto ws = (*registry)->workers();
    return ws.size() == 2 && ws[0]->eligible() && ws[1]->eligible();
  }));
  // A failed resolution keeps the last known set.
  {
    absl::MutexLock lock(&mu);
    fail = true;
  }
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ((*registry)->workers().size(), 2u);
  // b leaves the service; a call that holds it keeps it alive, not eligible.
  WorkerPtr held;
  for (const WorkerPtr& w : (*registry)->workers()) {
    if (w->address() == Address(*b)) held = w;
  }
  {
    absl::MutexLock lock(&mu);
    fail = false;
    resolved = {Address(*a)};
  }
  ASSERT_TRUE(Eventually([&] { return (*registry)->workers().size() == 1; }));
  EXPECT_EQ((*registry)->workers()[0]->address(), Address(*a));
  ASSERT_NE(held, nullptr);
  EXPECT_FALSE(held->eligible());
}

TEST(WorkerRegistryTest, ResolvesLocalhost) {
  auto addresses = WorkerRegistry::ResolveDns("localhost:4321");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  ASSERT_FALSE(addresses->empty());
  bool v4 = false;
  for (const std::string& a : *addresses) v4 = v4 || a == "127.0.0.1:4321";
  EXPECT_TRUE(v4);
  EXPECT_FALSE(WorkerRegistry::ResolveDns("no-such-host.invalid:1").ok());
  EXPECT_EQ(WorkerRegistry::ResolveDns("localhost").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::router
