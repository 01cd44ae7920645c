// The offline workload through LlmEngine over a backend the caller keeps:
// `prompts` random prompts of `prompt_len` tokens, `gen_len` tokens each,
// greedy, EOS ignored, MemShare off. Shared by bench/cuda_backend_bench (one
// GPU) and bench/tp_bench (rank 0 of a tensor-parallel group).
#ifndef MEMSHARE_BENCH_ENGINE_THROUGHPUT_H_
#define MEMSHARE_BENCH_ENGINE_THROUGHPUT_H_

#include <cstdint>

#include "engine/backend.h"

namespace memshare::bench {

struct EngineResult {
  double seconds = 0;
  int64_t output_tokens = 0;
  int64_t steps = 0;
  int64_t decode_steps = 0;
  int64_t device_sampled_tokens = 0;
  double schedule_seconds = 0;
  double prefill_seconds = 0;  // forward of steps with prompt tokens
  double decode_seconds = 0;   // forward of pure decode steps
  double sample_seconds = 0;
};

// Runs the workload (the same prompts for the same seed) with a token
// budget of `budget` a step; `device_sampling` false makes the scheduler
// sample on the host from the downloaded logits; `pipeline` false runs its
// steps one by one (Scheduler::Options::pipeline_steps). Exits the process
// on a failure.
EngineResult RunEngineThroughput(engine::Backend& b, int prompts, int prompt_len, int gen_len,
                                 int budget, bool device_sampling, bool pipeline, uint64_t seed);

}  // namespace memshare::bench

#endif  // MEMSHARE_BENCH_ENGINE_THROUGHPUT_H_
