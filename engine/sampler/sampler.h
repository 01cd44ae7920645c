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
// Sampling on a device (engine/step_plan.h, DeviceSampling): a backend
// that samples on the GPU needs, per step, the sequence's penalties as
// lists and one draw of its stream; the scheduler then records the token
// the device picked. NextUniform, Record and the penalty lists (with
// Options::keep_penalty_lists) serve that path; SampleRow is the same
// pipeline as Sample with the penalties and the draw given, the reference a
// device sampler follows.
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
    // Keep penalty_token_ids() / penalty_counts() up to date (the sequence
    // is sampled on a device). Off: they stay empty and cost nothing.
    bool keep_penalty_lists = false;
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

  // The draw of this sequence's stream that Sample makes for a token that
  // is not greedy, as a float in [0, 1): the top 24 bits of the same 64-bit
  // value, so the stream advances exactly as one such Sample advances it.
  // SampleRow with it picks what Sample would have picked, unless the draw
  // falls within 2^-24 (relative) of a boundary between two tokens. Not
  // called for greedy sequences (Sample draws nothing for them either).
  float NextUniform();

  // Records `token_id`, chosen elsewhere (on the device), as generated: it
  // counts for the penalties of the next tokens, as a sampled one does.
  void Record(int32_t token_id);
  // Record, and the token with its logprob and the top-n alternatives
  // (params.logprobs > 0) from `logits`, the raw row it was sampled from,
  // as Sample reports them. INVALID_ARGUMENT if the row has the wrong length
  // or the token is outside it.
  absl::StatusOr<TokenLogprob> RecordWithLogprobs(absl::Span<const float> logits, int32_t token_id,
                                                  SamplerWorkspace* workspace);

  // The tokens the penalties act on, each once, in the order first seen,
  // with penalty_counts()[i] = the count of penalty_token_ids()[i] in the
  // generated output (0: prompt only); DeviceSampling's form. Prompt tokens
  // are listed only when the repetition penalty is set (presence and
  // frequency ignore them). Empty unless keep_penalty_lists is set and some
  // penalty is; kept up to date incrementally by Sample and Record.
  const std::vector<int32_t>& penalty_token_ids() const { return penalty_ids_; }
  const std::vector<int32_t>& penalty_counts() const { return penalty_counts_; }

  // Sample's pipeline on one row with the penalties given as lists (the
  // form above) and the draw given (`uniform` in [0, 1), unused when
  // greedy): what a device sampler computes. Returns the token, or -1 when
  // the row leaves nothing to sample. `logits` must hold a value per token
  // of the vocabulary; listed ids outside it are ignored.
  static int32_t SampleRow(absl::Span<const float> logits, const SamplingParams& params,
                           absl::Span<const int32_t> penalty_token_ids,
                           absl::Span<const int32_t> penalty_counts, double uniform,
                           SamplerWorkspace* workspace);

  // The logprob Sample reports for `token_id` (log-softmax of the raw row).
  static float Logprob(absl::Span<const float> logits, int32_t token_id);

  // Tokens sampled (or recorded) so far.
  int64_t num_generated() const { return num_generated_; }
  const SamplingParams& params() const { return options_.params; }

 private:
  Sampler(const Options& options, uint64_t seed);

  void ApplyPenalties(std::vector<float>& values) const;
  int32_t Draw(std::vector<float>& values, std::vector<int32_t>& ids);
  void FillLogprobs(absl::Span<const float> logits, SamplerWorkspace* workspace,
                    TokenLogprob* out) const;
  // Counts a generated token (penalties, lists).
  void Note(int32_t token_id);
  // Adds `count` to token_id's entry of the penalty lists (a new entry if
  // it has none).
  void AddToPenaltyLists(int32_t token_id, int32_t count);

  const Options options_;
  std::mt19937_64 rng_;
  absl::flat_hash_set<int32_t> prompt_tokens_;  // only when repetition_penalty != 1
  absl::flat_hash_map<int32_t, int32_t> output_counts_;
  int64_t num_generated_ = 0;
  // With keep_penalty_lists and a penalty set: the lists, and the index of
  // each listed token in them.
  bool keep_lists_ = false;
  std::vector<int32_t> penalty_ids_;
  std::vector<int32_t> penalty_counts_;
  absl::flat_hash_map<int32_t, int32_t> penalty_index_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SAMPLER_SAMPLER_H_
