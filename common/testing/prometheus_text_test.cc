#include "common/testing/prometheus_text.h"

#include <cmath>

#include "gtest/gtest.h"

namespace memshare::testing {
namespace {

TEST(PrometheusTextTest, ParsesCountersGaugesAndHistograms) {
  const std::string text =
      "# HELP a_total Things.\n"
      "# TYPE a_total counter\n"
      "a_total{status=\"ok\",path=\"x\\\"y\"} 3\n"
      "a_total{status=\"bad\"} 1 1700000000000\n"
      "# TYPE g gauge\n"
      "g 0.25\n"
      "# TYPE h histogram\n"
      "h_bucket{le=\"0.1\"} 1\n"
      "h_bucket{le=\"+Inf\"} 2\n"
      "h_sum 0.3\n"
      "h_count 2\n";
  auto page = ParsePrometheusText(text);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->families.at("a_total").type, "counter");
  EXPECT_EQ(page->families.at("a_total").help, "Things.");
  EXPECT_EQ(*page->Value("a_total", {{"status", "ok"}}), 3);
  EXPECT_EQ(page->families.at("a_total").samples[0].labels.at("path"), "x\"y");
  EXPECT_EQ(*page->Value("g"), 0.25);
  EXPECT_TRUE(std::isinf(*page->Value("h_bucket", {{"le", "+Inf"}})) == false);
  EXPECT_EQ(*page->Value("h_count"), 2);
  EXPECT_FALSE(page->Value("nope").ok());
}

TEST(PrometheusTextTest, RejectsMalformedPages) {
  for (const std::string bad : {
           "x 1\n",                                       // no TYPE
           "# TYPE x counter\nx{a=\"1\" 1\n",             // unterminated labels
           "# TYPE x counter\nx{a=1} 1\n",                // unquoted value
           "# TYPE x counter\nx one\n",                   // bad value
           "# TYPE x counter\n# TYPE x gauge\nx 1\n",     // second TYPE
           "# TYPE x wibble\nx 1\n",                      // unknown type
           "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n",  // no +Inf
           "# TYPE h histogram\nh_bucket 1\n",            // no le
           "# TYPE 9x counter\n",                         // bad name
           "# TYPE x counter\nx{a=\"\\q\"} 1\n",          // bad escape
       }) {
    EXPECT_FALSE(ParsePrometheusText(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace memshare::testing
