// A process with a large static TLS segment (memshare_worker links cuBLASLt,
// 94 KiB of TLS) still starts the /metrics server: CivetWeb's fixed 100 KiB
// thread stacks would not hold it (civetweb_thread_stack.cc).
#include "common/metrics_server.h"
#include "common/testing/http_client.h"
#include "gtest/gtest.h"

namespace memshare {
namespace {

// Static TLS of this executable (initial-exec), like a linked library's.
thread_local char big_tls[192 << 10];

TEST(MetricsServerStaticTlsTest, StartsAndServesWithLargeStaticTls) {
  big_tls[0] = 1;
  auto server = MetricsServer::Create({.bind_address = "127.0.0.1:0"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto response = testing::HttpRequest("127.0.0.1", (*server)->port(), "GET", "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(big_tls[0], 1);
}

}  // namespace
}  // namespace memshare
