// The serving metrics of DESIGN.md section 6, exported by the worker and by
// the router under the same names (the Grafana dashboards in deploy/ query
// exactly these). Declared here, once; the registry is injected.
//
//   memshare_requests_total{status}              counter  requests ended, by gRPC status
//                                                         ("ok", "cancelled", "invalid_argument",
//                                                         ...)
//   memshare_prompt_tokens_total                 counter  prompt tokens of finished requests
//   memshare_generation_tokens_total             counter  generated tokens
//   memshare_time_to_first_token_seconds         histogram
//   memshare_inter_token_latency_seconds         histogram per generated token after the first
//   memshare_e2e_request_latency_seconds         histogram
//   memshare_requests_running                    gauge    in the engine's running batch
//   memshare_requests_waiting                    gauge    queued in the engine
//   memshare_kv_blocks_total                     gauge    physical blocks of the pool
//   memshare_kv_blocks_used                      gauge    physical blocks in use
//   memshare_kv_blocks_shared                    gauge    physical blocks with more than one user
//   memshare_kv_blocks_logical                   gauge    block-table entries of live requests
//   memshare_kv_usage_ratio                      gauge    used / total
//   memshare_kv_bytes_saved                      gauge    bytes saved now by MemShare sharing
//   memshare_dedup_candidates_total              counter  block pairs proposed (lexical stage)
//   memshare_dedup_verified_total                counter  pairs whose K/V distance was computed
//   memshare_dedup_rejected_total                counter  verified pairs over the threshold
//   memshare_dedup_remapped_blocks_total         counter  blocks remapped onto an earlier block
//   memshare_prefix_cache_queries_total          counter  prompt blocks looked up
//   memshare_prefix_cache_hits_total             counter  of those, found
//   memshare_preemptions_total                   counter
//   memshare_step_duration_seconds{phase}        histogram schedule, prefill, decode, sample, dedup
//
// Request and latency metrics are observed by the process itself (the router
// measures what its clients see). The engine-side ones come from
// v1::LoadReport snapshots through UpdateLoad: a worker feeds its own report,
// the router feeds each worker's report and exports the sums.
//
// Thread-safe.
#ifndef MEMSHARE_COMMON_SERVING_METRICS_H_
#define MEMSHARE_COMMON_SERVING_METRICS_H_

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "proto/memshare/v1/inference.pb.h"

namespace memshare {

class ServingMetrics {
 public:
  // Bucket upper bounds (seconds) of the step-time histograms; a
  // v1::PhaseHistogram with other bounds is not merged.
  static const std::vector<double>& StepTimeBuckets();
  // The phases of memshare_step_duration_seconds, in order.
  static const std::vector<std::string>& StepPhases();
  // Names of every metric family declared here (for tests and docs).
  static const std::vector<std::string>& MetricNames();

  // Registers the families in `registry`, which must outlive this object.
  explicit ServingMetrics(prometheus::Registry& registry);
  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  // A request ended with `code` (OK for a normal end, abort included).
  void RecordRequestEnd(absl::StatusCode code);
  void RecordTokens(int64_t prompt_tokens, int64_t generation_tokens);
  void ObserveTimeToFirstToken(absl::Duration d);
  // `tokens` tokens arrived together `d` after the previous ones: observes
  // d / tokens, `tokens` times.
  void ObserveInterTokenLatency(absl::Duration d, int tokens);
  void ObserveEndToEnd(absl::Duration d);

  // The latest report of `source` (a worker address, or "local"). Gauges
  // export the sum over sources; counters and histograms advance by the
  // increase since the source's previous report (a source whose counters went
  // down restarted: its new values count in full).
  void UpdateLoad(std::string_view source, const v1::LoadReport& report) ABSL_LOCKS_EXCLUDED(mu_);
  // The source is gone: its gauges leave the sums.
  void RemoveLoadSource(std::string_view source) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  prometheus::Counter& StatusCounter(absl::StatusCode code);
  void PublishGaugesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& inter_token_;
  prometheus::Histogram& e2e_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Gauge& blocks_total_;
  prometheus::Gauge& blocks_used_;
  prometheus::Gauge& blocks_shared_;
  prometheus::Gauge& blocks_logical_;
  prometheus::Gauge& usage_ratio_;
  prometheus::Gauge& bytes_saved_;
  prometheus::Counter& dedup_candidates_;
  prometheus::Counter& dedup_verified_;
  prometheus::Counter& dedup_rejected_;
  prometheus::Counter& dedup_remapped_;
  prometheus::Counter& prefix_queries_;
  prometheus::Counter& prefix_hits_;
  prometheus::Counter& preemptions_;
  std::map<std::string, prometheus::Histogram*> step_time_;  // by phase; fixed after construction

  absl::Mutex mu_;
  // The last report of each source.
  std::map<std::string, v1::LoadReport, std::less<>> sources_ ABSL_GUARDED_BY(mu_);
};

}  // namespace memshare

#endif  // MEMSHARE_COMMON_SERVING_METRICS_H_
