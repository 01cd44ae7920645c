#include "bench/loadgen/load_generator.h"

#include "gtest/gtest.h"
#include "router/testing/local_cluster.h"

namespace memshare::bench {
namespace {

using router::testing::LocalCluster;

TEST(SummarizeTest, NearestRankPercentiles) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);
  const Percentiles p = Summarize(samples);
  EXPECT_EQ(p.count, 100);
  EXPECT_DOUBLE_EQ(p.mean, 50.5);
  EXPECT_EQ(p.p50, 50);
  EXPECT_EQ(p.p90, 90);
  EXPECT_EQ(p.p99, 99);
  EXPECT_EQ(p.max, 100);
  EXPECT_EQ(Summarize({}).count, 0);
  EXPECT_EQ(Summarize({7}).p99, 7);
}

TEST(RunLoadTest, RefusesBadOptions) {
  LoadOptions o;
  EXPECT_EQ(RunLoad(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.target = "127.0.0.1:1";
  o.mode = "bursty";
  EXPECT_EQ(RunLoad(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RunLoadTest, ClosedLoopThroughTheRouterAndDirectToAWorker) {
  LocalCluster cluster({});
  LoadOptions o;
  o.target = cluster.router_address();
  o.requests = 200;
  o.concurrency = 16;
  o.max_tokens = 8;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ok, 200);
  EXPECT_EQ(r->failed, 0);
  EXPECT_EQ(r->completion_tokens, 200 * 8);
  EXPECT_EQ(r->ttft.count, 200);
  EXPECT_EQ(r->inter_token.count, 200 * 7);
  EXPECT_EQ(r->e2e.count, 200);
  EXPECT_LE(r->ttft.p50, r->e2e.p50);
  EXPECT_GT(r->requests_per_second, 0);
  EXPECT_NE(FormatReport(o, *r).find("ok 200, failed 0"), std::string::npos);
  EXPECT_NE(ToJson(o, *r).find("\"failed\":0"), std::string::npos);

  o.target = cluster.worker_address(0);
  o.api = "worker";
  o.requests = 50;
  r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ok, 50);
}

TEST(RunLoadTest, PoissonArrivalsAndFailuresAreCounted) {
  LocalCluster cluster({});
  LoadOptions o;
  o.target = cluster.router_address();
  o.mode = "poisson";
  o.rate = 500;
  o.requests = 60;
  o.max_tokens = 4;
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ok, 60);
  // Every request refused by both workers: counted as failures, not an error.
  cluster.engine(0).SetSubmitError(absl::InvalidArgumentError("text: refused by the test"));
  cluster.engine(1).SetSubmitError(absl::InvalidArgumentError("text: refused by the test"));
  o.requests = 10;
  r = RunLoad(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->failed, 10);
  EXPECT_EQ(r->failures.size(), 1u);
}

}  // namespace
}  // namespace memshare::bench
