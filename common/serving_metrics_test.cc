#include "common/serving_metrics.h"

#include <sstream>

#include "common/testing/prometheus_text.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace memshare {
namespace {

using testing::ParsePrometheusText;
using testing::PromPage;

PromPage Scrape(prometheus::Registry& registry) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry.Collect());
  auto page = ParsePrometheusText(out.str());
  EXPECT_TRUE(page.ok()) << page.status() << "\n" << out.str();
  return page.ok() ? *page : PromPage();
}

v1::LoadReport Report(int64_t used, int64_t total, int64_t remapped) {
  v1::LoadReport r;
  r.set_running_requests(2);
  r.set_waiting_requests(1);
  r.set_kv_blocks_total(total);
  r.set_kv_blocks_used(used);
  r.set_kv_blocks_logical(used + remapped);
  r.set_kv_blocks_shared(remapped);
  r.set_bytes_saved(remapped * 1024);
  r.set_dedup_remapped(remapped);
  r.set_dedup_candidates(10 * remapped);
  r.set_preemptions(remapped);
  return r;
}

TEST(ServingMetricsTest, EveryDeclaredFamilyIsExportedFromTheStart) {
  prometheus::Registry registry;
  ServingMetrics metrics(registry);
  const PromPage page = Scrape(registry);
  for (const std::string& name : ServingMetrics::MetricNames()) {
    EXPECT_TRUE(page.families.contains(name)) << name;
  }
  for (const std::string& phase : ServingMetrics::StepPhases()) {
    EXPECT_EQ(*page.Value("memshare_step_duration_seconds_count", {{"phase", phase}}), 0);
  }
  EXPECT_EQ(*page.Value("memshare_requests_total", {{"status", "ok"}}), 0);
}

TEST(ServingMetricsTest, RecordsRequestsTokensAndLatencies) {
  prometheus::Registry registry;
  ServingMetrics metrics(registry);
  metrics.RecordRequestEnd(absl::StatusCode::kOk);
  metrics.RecordRequestEnd(absl::StatusCode::kOk);
  metrics.RecordRequestEnd(absl::StatusCode::kInvalidArgument);
  metrics.RecordRequestEnd(absl::StatusCode::kNotFound);
  metrics.RecordTokens(7, 3);
  metrics.ObserveTimeToFirstToken(absl::Milliseconds(20));
  metrics.ObserveInterTokenLatency(absl::Milliseconds(30), 3);
  metrics.ObserveEndToEnd(absl::Seconds(2));
  const PromPage page = Scrape(registry);
  EXPECT_EQ(*page.Value("memshare_requests_total", {{"status", "ok"}}), 2);
  EXPECT_EQ(*page.Value("memshare_requests_total", {{"status", "invalid_argument"}}), 1);
  EXPECT_EQ(*page.Value("memshare_requests_total", {{"status", "not_found"}}), 1);
  EXPECT_EQ(*page.Value("memshare_prompt_tokens_total"), 7);
  EXPECT_EQ(*page.Value("memshare_generation_tokens_total"), 3);
  EXPECT_EQ(*page.Value("memshare_inter_token_latency_seconds_count"), 3);
  EXPECT_NEAR(*page.Value("memshare_inter_token_latency_seconds_sum"), 0.030, 1e-9);
  EXPECT_EQ(*page.Value("memshare_e2e_request_latency_seconds_bucket", {{"le", "1"}}), 0);
  EXPECT_EQ(*page.Value("memshare_e2e_request_latency_seconds_count"), 1);
}

TEST(ServingMetricsTest, SumsGaugesOverSourcesAndAdvancesCountersByIncrease) {
  prometheus::Registry registry;
  ServingMetrics metrics(registry);
  metrics.UpdateLoad("w1", Report(10, 100, 4));
  metrics.UpdateLoad("w2", Report(30, 100, 3));
  PromPage page = Scrape(registry);
  EXPECT_EQ(*page.Value("memshare_kv_blocks_used"), 40);
  EXPECT_EQ(*page.Value("memshare_kv_blocks_total"), 200);
  EXPECT_DOUBLE_EQ(*page.Value("memshare_kv_usage_ratio"), 0.2);
  EXPECT_EQ(*page.Value("memshare_kv_blocks_shared"), 7);
  EXPECT_EQ(*page.Value("memshare_kv_bytes_saved"), 7 * 1024);
  EXPECT_EQ(*page.Value("memshare_requests_running"), 4);
  EXPECT_EQ(*page.Value("memshare_dedup_remapped_blocks_total"), 7);
  EXPECT_EQ(*page.Value("memshare_dedup_candidates_total"), 70);

  // w1 advances: counters add only the increase.
  metrics.UpdateLoad("w1", Report(12, 100, 6));
  page = Scrape(registry);
  EXPECT_EQ(*page.Value("memshare_dedup_remapped_blocks_total"), 9);
  EXPECT_EQ(*page.Value("memshare_preemptions_total"), 9);
  // w2 restarted (counters went down): its new values count in full.
  metrics.UpdateLoad("w2", Report(0, 100, 2));
  page = Scrape(registry);
  EXPECT_EQ(*page.Value("memshare_dedup_remapped_blocks_total"), 11);
  EXPECT_EQ(*page.Value("memshare_kv_blocks_used"), 12);
  // w1 leaves: its gauges leave the sums, the counters stay.
  metrics.RemoveLoadSource("w1");
  page = Scrape(registry);
  EXPECT_EQ(*page.Value("memshare_kv_blocks_used"), 0);
  EXPECT_EQ(*page.Value("memshare_kv_blocks_total"), 100);
  EXPECT_EQ(*page.Value("memshare_dedup_remapped_blocks_total"), 11);
}

TEST(ServingMetricsTest, MergesStepTimeHistogramsByIncrease) {
  prometheus::Registry registry;
  ServingMetrics metrics(registry);
  const auto& bounds = ServingMetrics::StepTimeBuckets();
  auto report = [&](uint64_t in_first, uint64_t in_inf, double sum) {
    v1::LoadReport r;
    v1::PhaseHistogram* h = r.add_step_time();
    h->set_phase("decode");
    for (double b : bounds) h->add_bucket_upper_bounds(b);
    for (size_t i = 0; i <= bounds.size(); ++i) {
      h->add_bucket_counts(i == 0 ? in_first : i == bounds.size() ? in_inf : 0);
    }
    h->set_sum_seconds(sum);
    return r;
  };
  metrics.UpdateLoad("w", report(2, 1, 10.0));
  metrics.UpdateLoad("w", report(5, 1, 10.5));
  PromPage page = Scrape(registry);
  EXPECT_EQ(*page.Value("memshare_step_duration_seconds_count", {{"phase", "decode"}}), 6);
  EXPECT_NEAR(*page.Value("memshare_step_duration_seconds_sum", {{"phase", "decode"}}), 10.5, 1e-9);
  EXPECT_EQ(*page.Value("memshare_step_duration_seconds_count", {{"phase", "prefill"}}), 0);

  // Different bucket bounds are not merged.
  v1::LoadReport other = report(100, 0, 1.0);
  other.mutable_step_time(0)->set_bucket_upper_bounds(0, 42.0);
  metrics.UpdateLoad("x", other);
  page = Scrape(registry);
  EXPECT_EQ(*page.Value("memshare_step_duration_seconds_count", {{"phase", "decode"}}), 6);
}

}  // namespace
}  // namespace memshare
