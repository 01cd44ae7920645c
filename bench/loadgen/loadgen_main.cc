// loadgen: drives memshare_router (or one worker) with generation requests
// and reports throughput, TTFT, inter-token and end-to-end percentiles.
//   loadgen --target=localhost:50050 --requests=1000 --concurrency=32
//   loadgen --target=localhost:50051 --api=worker --mode=poisson --rate=20
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "bench/loadgen/load_generator.h"
#include "common/process_main.h"

ABSL_FLAG(std::string, target, "localhost:50050", "host:port of the router (or of a worker).");
ABSL_FLAG(std::string, api, "router",
          "'router' (memshare.v1.InferenceService) or 'worker' (memshare.v1.WorkerService, a "
          "worker called directly: the baseline of router overhead).");
ABSL_FLAG(int32_t, requests, 1000, "Requests to send in all.");
ABSL_FLAG(std::string, mode, "closed",
          "'closed': --concurrency requests in flight; 'poisson': arrivals at --rate per "
          "second.");
ABSL_FLAG(int32_t, concurrency, 32, "Closed loop: requests in flight.");
ABSL_FLAG(double, rate, 50, "Poisson: mean arrivals per second.");
ABSL_FLAG(std::string, prompts_file, "",
          "File of prompts, one per line, used round-robin. Empty: synthetic prompts.");
ABSL_FLAG(int32_t, prompt_bytes, 256, "Length of the synthetic prompts, in bytes.");
ABSL_FLAG(int32_t, max_tokens, 64, "Tokens to generate per request.");
ABSL_FLAG(double, temperature, 0, "Sampling temperature (0: greedy).");
ABSL_FLAG(bool, ignore_eos, true, "Generate exactly --max_tokens tokens.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(120), "Deadline of each request.");
ABSL_FLAG(std::string, api_key, "", "Sent as 'authorization: Bearer <key>'.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the Poisson arrivals.");
ABSL_FLAG(bool, json, false, "Print one JSON line instead of the table.");

int main(int argc, char** argv) {
  memshare::ParseFlags(argc, argv, "gRPC load generator for memshare_router and memshare_worker.");
  memshare::bench::LoadOptions o;
  o.target = absl::GetFlag(FLAGS_target);
  o.api = absl::GetFlag(FLAGS_api);
  o.requests = absl::GetFlag(FLAGS_requests);
  o.mode = absl::GetFlag(FLAGS_mode);
  o.concurrency = absl::GetFlag(FLAGS_concurrency);
  o.rate = absl::GetFlag(FLAGS_rate);
  o.prompt_bytes = absl::GetFlag(FLAGS_prompt_bytes);
  o.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  o.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  o.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  o.timeout = absl::GetFlag(FLAGS_timeout);
  o.api_key = absl::GetFlag(FLAGS_api_key);
  o.seed = absl::GetFlag(FLAGS_seed);
  if (const std::string file = absl::GetFlag(FLAGS_prompts_file); !file.empty()) {
    std::ifstream in(file);
    if (!in) {
      std::fprintf(stderr, "loadgen: cannot read %s\n", file.c_str());
      return 1;
    }
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) o.prompts.push_back(line);
    }
  }
  auto result = memshare::bench::RunLoad(o);
  if (!result.ok()) {
    std::fprintf(stderr, "loadgen: %s\n", result.status().ToString().c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", memshare::bench::ToJson(o, *result).c_str());
  } else {
    std::printf("%s", memshare::bench::FormatReport(o, *result).c_str());
  }
  return result->failed == 0 ? 0 : 2;
}
