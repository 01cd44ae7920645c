#include "common/metrics_server.h"

#include "common/testing/http_client.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"

namespace memshare {
namespace {

TEST(MetricsServerTest, ScrapesRegisteredMetricsOverHttp) {
  auto server = MetricsServer::Create({.bind_address = "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  auto& requests = prometheus::BuildCounter()
                       .Name("memshare_test_requests_total")
                       .Help("Requests seen by the test.")
                       .Register((*server)->registry());
  requests.Add({{"status", "ok"}}).Increment(3);
  auto& usage = prometheus::BuildGauge()
                    .Name("memshare_test_kv_usage_ratio")
                    .Help("A gauge.")
                    .Register((*server)->registry());
  usage.Add({}).Set(0.25);

  auto response = testing::HttpRequest("127.0.0.1", (*server)->port(), "GET", "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_NE(response->headers["content-type"].find("text/plain"), std::string::npos);
  EXPECT_NE(response->body.find("# TYPE memshare_test_requests_total counter"), std::string::npos)
      << response->body;
  EXPECT_NE(response->body.find("memshare_test_requests_total{status=\"ok\"} 3"),
            std::string::npos)
      << response->body;
  EXPECT_NE(response->body.find("memshare_test_kv_usage_ratio 0.25"), std::string::npos)
      << response->body;
}

TEST(MetricsServerTest, BusyPortIsAStatusNotACrash) {
  auto first = MetricsServer::Create({.bind_address = "127.0.0.1:0"});
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::Create(
      {.bind_address = "127.0.0.1:" + std::to_string((*first)->port())});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

}  // namespace
}  // namespace memshare
