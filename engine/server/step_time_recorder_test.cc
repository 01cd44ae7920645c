#include "engine/server/step_time_recorder.h"

#include "common/serving_metrics.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

TEST(StepTimeRecorderTest, BucketsLikePrometheusAndReportsEveryPhase) {
  StepTimeRecorder recorder;
  const auto& bounds = ServingMetrics::StepTimeBuckets();
  recorder.Observe(StepPhase::kDecode, bounds[0]);        // on the bound: that bucket
  recorder.Observe(StepPhase::kDecode, bounds[0] * 1.5);  // next bucket
  recorder.Observe(StepPhase::kDecode, 1e6);              // +Inf
  recorder.Observe(StepPhase::kDedup, 0.0);
  v1::LoadReport report;
  recorder.FillReport(&report);
  ASSERT_EQ(report.step_time_size(), 5);
  // Phase names are the ones ServingMetrics exports.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(report.step_time(i).phase(), ServingMetrics::StepPhases()[i]);
    EXPECT_EQ(report.step_time(i).bucket_counts_size(), static_cast<int>(bounds.size()) + 1);
  }
  const v1::PhaseHistogram& decode = report.step_time(static_cast<int>(StepPhase::kDecode));
  EXPECT_EQ(decode.phase(), "decode");
  EXPECT_EQ(decode.bucket_counts(0), 1u);
  EXPECT_EQ(decode.bucket_counts(1), 1u);
  EXPECT_EQ(decode.bucket_counts(bounds.size()), 1u);
  EXPECT_NEAR(decode.sum_seconds(), bounds[0] * 2.5 + 1e6, 1e-6);
  EXPECT_EQ(report.step_time(static_cast<int>(StepPhase::kDedup)).bucket_counts(0), 1u);

  // Fed to ServingMetrics, the histogram counts what was observed.
  prometheus::Registry registry;
  ServingMetrics metrics(registry);
  metrics.UpdateLoad("local", report);
  bool found = false;
  for (const auto& family : registry.Collect()) {
    if (family.name != "memshare_step_duration_seconds") continue;
    for (const auto& m : family.metric) {
      if (m.label[0].value == "decode") {
        EXPECT_EQ(m.histogram.sample_count, 3u);
        found = true;
      }
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace memshare::engine
