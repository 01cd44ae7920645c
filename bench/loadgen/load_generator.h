// A gRPC load generator for memshare_router (InferenceService) or one
// memshare_worker directly (WorkerService, for the router-overhead
// baseline). Closed loop (a fixed number of requests in flight) or open loop
// (Poisson arrivals at a rate). Measures per request the time to first token,
// the gaps between tokens and the end-to-end latency, and reports throughput
// and percentiles.
//
// Uses the gRPC callback API: one thread issues requests, completions run on
// gRPC's threads. RunLoad is thread-compatible (one run at a time per
// object).
#ifndef MEMSHARE_BENCH_LOADGEN_LOAD_GENERATOR_H_
#define MEMSHARE_BENCH_LOADGEN_LOAD_GENERATOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace memshare::bench {

struct LoadOptions {
  // host:port of the router (api "router") or of a worker (api "worker").
  std::string target;
  // "router": memshare.v1.InferenceService; "worker": memshare.v1.WorkerService.
  std::string api = "router";
  // Requests to send in all.
  int requests = 1000;
  // "closed": `concurrency` requests in flight, a new one when one ends.
  // "poisson": arrivals at `rate` per second, exponential gaps.
  std::string mode = "closed";
  int concurrency = 32;
  double rate = 50;
  // Prompts, used round-robin; empty: synthetic prompts of prompt_bytes.
  std::vector<std::string> prompts;
  int prompt_bytes = 256;
  int max_tokens = 64;
  float temperature = 0;
  // Generate exactly max_tokens (ignore end-of-sequence).
  bool ignore_eos = true;
  // Deadline of each request.
  absl::Duration timeout = absl::Seconds(120);
  // Sent as "authorization: Bearer <key>" when set.
  std::string api_key;
  // Seed of the Poisson arrivals.
  uint64_t seed = 1;
};

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;  // milliseconds
  int64_t count = 0;
};

struct LoadResult {
  int ok = 0;
  int failed = 0;
  std::map<std::string, int> failures;  // "UNAVAILABLE: message" -> count (first 10 kinds)
  double seconds = 0;
  double requests_per_second = 0;
  double output_tokens_per_second = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  Percentiles ttft, inter_token, e2e;
};

// INVALID_ARGUMENT for bad options. A failed request is counted, not an
// error of the run.
absl::StatusOr<LoadResult> RunLoad(const LoadOptions& options);

// Percentiles (nearest rank) of samples in milliseconds.
Percentiles Summarize(std::vector<double> samples_ms);

// A human-readable report, and a one-line JSON of the same numbers.
std::string FormatReport(const LoadOptions& options, const LoadResult& result);
std::string ToJson(const LoadOptions& options, const LoadResult& result);

}  // namespace memshare::bench

#endif  // MEMSHARE_BENCH_LOADGEN_LOAD_GENERATOR_H_
