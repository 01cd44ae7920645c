#include "engine/server/step_time_recorder.h"

#include <algorithm>
#include <iterator>

#include "common/serving_metrics.h"

namespace memshare::engine {

StepTimeRecorder::StepTimeRecorder() : bounds_(ServingMetrics::StepTimeBuckets()) {
  absl::MutexLock lock(&mu_);
  phases_.resize(std::size(kAllStepPhases));
  for (Phase& p : phases_) p.counts.assign(bounds_.size() + 1, 0);
}

void StepTimeRecorder::Observe(StepPhase phase, double seconds) {
  const size_t index = static_cast<size_t>(phase);
  // The bucket of the first bound >= seconds (Prometheus' `le`), else +Inf.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin());
  absl::MutexLock lock(&mu_);
  if (index >= phases_.size()) return;
  ++phases_[index].counts[bucket];
  phases_[index].sum += seconds;
}

void StepTimeRecorder::FillReport(v1::LoadReport* report) const {
  absl::MutexLock lock(&mu_);
  for (StepPhase phase : kAllStepPhases) {
    const Phase& p = phases_[static_cast<size_t>(phase)];
    v1::PhaseHistogram* h = report->add_step_time();
    h->set_phase(StepPhaseName(phase));
    for (double b : bounds_) h->add_bucket_upper_bounds(b);
    for (uint64_t c : p.counts) h->add_bucket_counts(c);
    h->set_sum_seconds(p.sum);
  }
}

}  // namespace memshare::engine
