#include "common/serving_metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"

namespace memshare {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const std::vector<double>& TtftBuckets() {
  static const auto* b = new std::vector<double>{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                 0.5,   1,     2.5,  5,     10,   30,  60};
  return *b;
}
const std::vector<double>& InterTokenBuckets() {
  static const auto* b =
      new std::vector<double>{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
  return *b;
}
const std::vector<double>& E2eBuckets() {
  static const auto* b =
      new std::vector<double>{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return *b;
}

prometheus::Counter& MakeCounter(prometheus::Registry& r, const std::string& name,
                                 const std::string& help) {
  return BuildCounter().Name(name).Help(help).Register(r).Add({});
}
prometheus::Gauge& MakeGauge(prometheus::Registry& r, const std::string& name,
                             const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(r).Add({});
}
prometheus::Histogram& MakeHistogram(prometheus::Registry& r, const std::string& name,
                                     const std::string& help, const std::vector<double>& buckets) {
  return BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
}

// Increase of a cumulative value; a value that went down means its source
// restarted from zero, so the new value counts in full.
double Increase(double now, double before) { return now >= before ? now - before : now; }

// Status label of a code: "ok", "invalid_argument", ...
std::string StatusLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace

const std::vector<double>& ServingMetrics::StepTimeBuckets() {
  static const auto* b = new std::vector<double>{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  return *b;
}

const std::vector<std::string>& ServingMetrics::StepPhases() {
  static const auto* p =
      new std::vector<std::string>{"schedule", "prefill", "decode", "sample", "dedup"};
  return *p;
}

const std::vector<std::string>& ServingMetrics::MetricNames() {
  static const auto* names = new std::vector<std::string>{
      "memshare_requests_total",
      "memshare_prompt_tokens_total",
      "memshare_generation_tokens_total",
      "memshare_time_to_first_token_seconds",
      "memshare_inter_token_latency_seconds",
      "memshare_e2e_request_latency_seconds",
      "memshare_requests_running",
      "memshare_requests_waiting",
      "memshare_kv_blocks_total",
      "memshare_kv_blocks_used",
      "memshare_kv_blocks_shared",
      "memshare_kv_blocks_logical",
      "memshare_kv_usage_ratio",
      "memshare_kv_bytes_saved",
      "memshare_dedup_candidates_total",
      "memshare_dedup_verified_total",
      "memshare_dedup_rejected_total",
      "memshare_dedup_remapped_blocks_total",
      "memshare_prefix_cache_queries_total",
      "memshare_prefix_cache_hits_total",
      "memshare_preemptions_total",
      "memshare_step_duration_seconds",
  };
  return *names;
}

ServingMetrics::ServingMetrics(prometheus::Registry& r)
    : requests_(BuildCounter()
                    .Name("memshare_requests_total")
                    .Help("Requests ended, by gRPC status")
                    .Register(r)),
      prompt_tokens_(
          MakeCounter(r, "memshare_prompt_tokens_total", "Prompt tokens of finished requests")),
      generation_tokens_(MakeCounter(r, "memshare_generation_tokens_total", "Generated tokens")),
      ttft_(MakeHistogram(r, "memshare_time_to_first_token_seconds",
                          "Time from request arrival to its first token", TtftBuckets())),
      inter_token_(MakeHistogram(r, "memshare_inter_token_latency_seconds",
                                 "Time between consecutive generated tokens", InterTokenBuckets())),
      e2e_(MakeHistogram(r, "memshare_e2e_request_latency_seconds",
                         "Time from request arrival to the end of its stream", E2eBuckets())),
      running_(MakeGauge(r, "memshare_requests_running", "Requests in the running batch")),
      waiting_(MakeGauge(r, "memshare_requests_waiting", "Requests queued in the engine")),
      blocks_total_(MakeGauge(r, "memshare_kv_blocks_total", "Physical KV blocks of the pool")),
      blocks_used_(MakeGauge(r, "memshare_kv_blocks_used", "Physical KV blocks in use")),
      blocks_shared_(MakeGauge(r, "memshare_kv_blocks_shared",
                               "Physical KV blocks referenced by more than one table entry")),
      blocks_logical_(
          MakeGauge(r, "memshare_kv_blocks_logical", "Block-table entries of live requests")),
      usage_ratio_(MakeGauge(r, "memshare_kv_usage_ratio", "Physical KV blocks used / total")),
      bytes_saved_(MakeGauge(r, "memshare_kv_bytes_saved",
                             "Bytes of KV memory saved now by MemShare sharing")),
      dedup_candidates_(MakeCounter(r, "memshare_dedup_candidates_total",
                                    "Block pairs proposed by the lexical stage")),
      dedup_verified_(MakeCounter(r, "memshare_dedup_verified_total",
                                  "Block pairs whose K/V distance was computed")),
      dedup_rejected_(MakeCounter(r, "memshare_dedup_rejected_total",
                                  "Verified block pairs over the distance threshold")),
      dedup_remapped_(MakeCounter(r, "memshare_dedup_remapped_blocks_total",
                                  "Logical blocks remapped onto an earlier physical block")),
      prefix_queries_(MakeCounter(r, "memshare_prefix_cache_queries_total",
                                  "Prompt blocks looked up in the prefix cache")),
      prefix_hits_(MakeCounter(r, "memshare_prefix_cache_hits_total",
                               "Prompt blocks found in the prefix cache")),
      preemptions_(
          MakeCounter(r, "memshare_preemptions_total", "Requests preempted (recomputed later)")) {
  auto& steps = BuildHistogram()
                    .Name("memshare_step_duration_seconds")
                    .Help("Duration of one phase of an engine step")
                    .Register(r);
  for (const std::string& phase : StepPhases()) {
    step_time_[phase] = &steps.Add({{"phase", phase}}, StepTimeBuckets());
  }
  // The usual outcomes exist from the start, so dashboards see zeros.
  for (absl::StatusCode code :
       {absl::StatusCode::kOk, absl::StatusCode::kCancelled, absl::StatusCode::kInvalidArgument,
        absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kResourceExhausted,
        absl::StatusCode::kUnavailable, absl::StatusCode::kInternal}) {
    StatusCounter(code);
  }
}

prometheus::Counter& ServingMetrics::StatusCounter(absl::StatusCode code) {
  return requests_.Add({{"status", StatusLabel(code)}});
}

void ServingMetrics::RecordRequestEnd(absl::StatusCode code) { StatusCounter(code).Increment(); }

void ServingMetrics::RecordTokens(int64_t prompt_tokens, int64_t generation_tokens) {
  if (prompt_tokens > 0) prompt_tokens_.Increment(static_cast<double>(prompt_tokens));
  if (generation_tokens > 0) generation_tokens_.Increment(static_cast<double>(generation_tokens));
}

void ServingMetrics::ObserveTimeToFirstToken(absl::Duration d) {
  ttft_.Observe(absl::ToDoubleSeconds(d));
}

void ServingMetrics::ObserveInterTokenLatency(absl::Duration d, int tokens) {
  if (tokens <= 0) return;
  const double per_token = absl::ToDoubleSeconds(d) / tokens;
  for (int i = 0; i < tokens; ++i) inter_token_.Observe(per_token);
}

void ServingMetrics::ObserveEndToEnd(absl::Duration d) { e2e_.Observe(absl::ToDoubleSeconds(d)); }

void ServingMetrics::UpdateLoad(std::string_view source, const v1::LoadReport& report) {
  absl::MutexLock lock(&mu_);
  auto it = sources_.find(source);
  const v1::LoadReport before = it == sources_.end() ? v1::LoadReport() : it->second;
  auto advance = [](prometheus::Counter& c, int64_t now, int64_t prev) {
    c.Increment(Increase(static_cast<double>(now), static_cast<double>(prev)));
  };
  advance(dedup_candidates_, report.dedup_candidates(), before.dedup_candidates());
  advance(dedup_verified_, report.dedup_verified(), before.dedup_verified());
  advance(dedup_rejected_, report.dedup_rejected(), before.dedup_rejected());
  advance(dedup_remapped_, report.dedup_remapped(), before.dedup_remapped());
  advance(prefix_queries_, report.prefix_cache_queries(), before.prefix_cache_queries());
  advance(prefix_hits_, report.prefix_cache_hits(), before.prefix_cache_hits());
  advance(preemptions_, report.preemptions(), before.preemptions());

  const std::vector<double>& bounds = StepTimeBuckets();
  for (const v1::PhaseHistogram& h : report.step_time()) {
    auto target = step_time_.find(h.phase());
    if (target == step_time_.end()) continue;
    if (!std::equal(bounds.begin(), bounds.end(), h.bucket_upper_bounds().begin(),
                    h.bucket_upper_bounds().end()) ||
        h.bucket_counts_size() != static_cast<int>(bounds.size()) + 1) {
      continue;  // another binary's buckets: cannot be merged
    }
    const v1::PhaseHistogram* prev = nullptr;
    for (const v1::PhaseHistogram& p : before.step_time()) {
      if (p.phase() == h.phase() && p.bucket_counts_size() == h.bucket_counts_size()) prev = &p;
    }
    bool restarted = prev == nullptr || h.sum_seconds() < prev->sum_seconds();
    for (int i = 0; prev != nullptr && i < h.bucket_counts_size(); ++i) {
      if (h.bucket_counts(i) < prev->bucket_counts(i)) restarted = true;
    }
    std::vector<double> increments(h.bucket_counts_size());
    bool any = false;
    for (int i = 0; i < h.bucket_counts_size(); ++i) {
      increments[i] = static_cast<double>(h.bucket_counts(i)) -
                      (restarted ? 0.0 : static_cast<double>(prev->bucket_counts(i)));
      any = any || increments[i] > 0;
    }
    if (!any) continue;
    const double sum = h.sum_seconds() - (restarted ? 0.0 : prev->sum_seconds());
    target->second->ObserveMultiple(increments, sum);
  }
  sources_.insert_or_assign(std::string(source), report);
  PublishGaugesLocked();
}

void ServingMetrics::RemoveLoadSource(std::string_view source) {
  absl::MutexLock lock(&mu_);
  auto it = sources_.find(source);
  if (it == sources_.end()) return;
  sources_.erase(it);
  PublishGaugesLocked();
}

void ServingMetrics::PublishGaugesLocked() {
  double running = 0, waiting = 0, total = 0, used = 0, shared = 0, logical = 0, saved = 0;
  for (const auto& [name, r] : sources_) {
    running += r.running_requests();
    waiting += r.waiting_requests();
    total += static_cast<double>(r.kv_blocks_total());
    used += static_cast<double>(r.kv_blocks_used());
    shared += static_cast<double>(r.kv_blocks_shared());
    logical += static_cast<double>(r.kv_blocks_logical());
    saved += static_cast<double>(r.bytes_saved());
  }
  running_.Set(running);
  waiting_.Set(waiting);
  blocks_total_.Set(total);
  blocks_used_.Set(used);
  blocks_shared_.Set(shared);
  blocks_logical_.Set(logical);
  usage_ratio_.Set(total > 0 ? used / total : 0.0);
  bytes_saved_.Set(saved);
}

}  // namespace memshare
