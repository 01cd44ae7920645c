// Chooses the next token of one sequence from a row of logits.
//
// Pipeline, in vLLM's order:
//   1. penalties over the tokens seen so far, as vLLM and Hugging Face define
//      them: repetition (prompt and generated tokens: a positive logit is
//      divided by the penalty, a negative one multiplied), then frequency
//      (minus penalty × count) and presence (minus penalty if present), both
//      over generated tokens only;
//   2. temperature 0: argmax (the lowest id among equal logits);
//   3. otherwise divide by the temperature, keep the top-k logits, keep the
//      smallest set of most likely tokens whose mass reaches top_p (the
//      most likely token always stays), drop tokens whose probability is
//      below min_p × the largest probability, and draw from what is left.
//
// Randomness comes from a per-sequence stream seeded by `params.seed` (or
// from the OS when unset): with a seed, the same logits give the same tokens
// whatever else runs in the batch, and a sequence that is preempted and
// recomputed keeps its stream, so its output does not change.
//
// Logprobs (when params.logprobs > 0) are those of the model's own
// distribution: log-softmax of the raw logits, before penalties and
// temperature (what vLLM returns by default).
//
// Thread-compatible. One Sampler per sequence; a SamplerWorkspace may be
// shared by every sampler that one thread drives.
#ifndef MEMSHARE_ENGINE_SAMPLER_SAMPLER_H_
#define MEMSHARE_ENGINE_SAMPLER_SAMPLER_H_

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/request.h"

namespace memshare::engine {

// Scratch buffers reused across calls, so that a step does not allocate a
// vocabulary-sized array per sequence.
struct SamplerWorkspace {
  std::vector<float> values;
  std::vector<int32_t> ids;
};

class Sampler {
 public:
  struct Options {
    // Must pass ValidateSamplingParams (Create checks it again).
    SamplingParams params;
    // Length of every logits row.
    int32_t vocab_size = 0;
  };

  // `prompt_token_ids` feeds the repetition penalty.
  static absl::StatusOr<std::unique_ptr<Sampler>> Create(
      const Options& options, absl::Span<const int32_t> prompt_token_ids);

  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Samples a token from `logits` (vocab_size values, not modified) and
  // records it as generated. The result carries the token id, and its
  // logprob and the top-n alternatives when params.logprobs > 0.
  // INVALID_ARGUMENT if the row has the wrong length, INTERNAL if it holds
  // no finite value.
  absl::StatusOr<TokenLogprob> Sample(absl::Span<const float> logits, SamplerWorkspace* workspace);

  // Tokens sampled so far.
  int64_t num_generated() const { return num_generated_; }
  const SamplingParams& params() const { return options_.params; }

 private:
  Sampler(const Options& options, uint64_t seed);

  void ApplyPenalties(std::vector<float>& values) const;
  int32_t Draw(std::vector<float>& values, std::vector<int32_t>& ids);
  void FillLogprobs(absl::Span<const float> logits, SamplerWorkspace* workspace,
                    TokenLogprob* out) const;

  const Options options_;
  std::mt19937_64 rng_;
  absl::flat_hash_set<int32_t> prompt_tokens_;  // only when repetition_penalty != 1
  absl::flat_hash_map<int32_t, int32_t> output_counts_;
  int64_t num_generated_ = 0;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SAMPLER_SAMPLER_H_
