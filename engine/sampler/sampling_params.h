// Validation of the sampling parameters of a request (engine/request.h).
// Every check names the field and the value it got, e.g.
//   "temperature: must be >= 0, got -1"
// so that a client sees what to fix (DESIGN.md §6: INVALID_ARGUMENT naming
// the field). NaN is rejected wherever a float is expected.
#ifndef MEMSHARE_ENGINE_SAMPLER_SAMPLING_PARAMS_H_
#define MEMSHARE_ENGINE_SAMPLER_SAMPLING_PARAMS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "engine/request.h"

namespace memshare::engine {

// Bounds that depend on the model and on the server.
struct SamplingLimits {
  // Size of the model's vocabulary; stop_token_ids must lie in [0, vocab_size).
  int32_t vocab_size = 0;
  // Largest top-n logprobs a request may ask for.
  int32_t max_logprobs = 20;
  // Largest number of stop strings and of stop token ids per request.
  int32_t max_stop_strings = 16;
  int32_t max_stop_token_ids = 64;
  // Longest stop string, in bytes.
  int32_t max_stop_string_bytes = 256;
  // Largest max_tokens accepted (the scheduler also caps generation at the
  // model's length).
  int32_t max_tokens_limit = 1 << 20;
};

// OK or INVALID_ARGUMENT naming the first offending field.
absl::Status ValidateSamplingParams(const SamplingParams& params, const SamplingLimits& limits);

// Whether `params` asks for greedy decoding (temperature 0).
inline bool IsGreedy(const SamplingParams& params) { return params.temperature == 0.0f; }

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SAMPLER_SAMPLING_PARAMS_H_
