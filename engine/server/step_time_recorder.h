// Cumulative step-time histograms per phase, fed by the engine's step
// observer and copied into the worker's v1::LoadReport (from which the
// worker's /metrics and the router's take them).
//
// Thread-safe.
#ifndef MEMSHARE_ENGINE_SERVER_STEP_TIME_RECORDER_H_
#define MEMSHARE_ENGINE_SERVER_STEP_TIME_RECORDER_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "engine/inference_engine.h"
#include "proto/memshare/v1/inference.pb.h"

namespace memshare::engine {

class StepTimeRecorder {
 public:
  StepTimeRecorder();
  StepTimeRecorder(const StepTimeRecorder&) = delete;
  StepTimeRecorder& operator=(const StepTimeRecorder&) = delete;

  void Observe(StepPhase phase, double seconds) ABSL_LOCKS_EXCLUDED(mu_);
  // Adds one PhaseHistogram per phase to report.step_time.
  void FillReport(v1::LoadReport* report) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Phase {
    std::vector<uint64_t> counts;  // bounds.size() + 1 buckets, not cumulative
    double sum = 0;
  };
  const std::vector<double>& bounds_;
  mutable absl::Mutex mu_;
  std::vector<Phase> phases_ ABSL_GUARDED_BY(mu_);  // indexed by StepPhase
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_STEP_TIME_RECORDER_H_
