// Token sampling on the GPU, one row of logits per sequence:
//   penalties (repetition, presence, frequency) -> greedy argmax when
//   temperature <= 0, else temperature -> top-k -> top-p -> min-p -> one
//   draw by inverse CDF from the kept tokens, in vocabulary order.
// Semantics follow Hugging Face's logits processors: top-k keeps every token
// whose logit is at least the k-th largest (ties kept); top-p keeps the
// smallest set of most likely tokens (among the top-k) whose probability
// reaches top_p, the token that crosses it included; min-p keeps tokens
// with probability >= min_p * the largest. Tokens whose probability is
// below e^-87 of the largest (zero in fp32) are never kept.
#ifndef MEMSHARE_KERNELS_SAMPLING_H_
#define MEMSHARE_KERNELS_SAMPLING_H_

#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>

#include "absl/status/status.h"

namespace memshare::kernels {

// Per-row parameters (a device array, built on the host each step).
struct SamplingRow {
  float temperature = 1.f;         // <= 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;               // <= 0 or >= vocab: off
  float top_p = 1.f;               // >= 1: off
  float min_p = 0.f;               // <= 0: off
  float repetition_penalty = 1.f;  // 1: off; > 0
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  float uniform = 0.f;             // the row's random draw, in [0, 1)
  // LaunchCountFedTokens: >= 0, the feed row of a token that counts once
  // more in this row's penalty lists; -1: none.
  int32_t fed_row = -1;
};

// Pipelined steps (engine/step_plan.h, DeviceSampling::count_fed_token): a
// row's penalty lists are a step behind its fed token, which the host has
// not seen. For each row whose params give fed_row >= 0, the token
// t = feed[fed_row] is counted once more in the row's CSR lists (layout as
// LaunchSample's): its count goes up by one where t is listed, else t takes
// the row's last entry, which the host leaves as a placeholder (token -1,
// count 0; skipped by LaunchSample while it stays one). Run before the step
// overwrites `feed`. On a vocabulary shard (tensor parallelism) the lists
// hold ids less `vocab_begin`, and a fed token outside [vocab_begin,
// vocab_end) is another shard's: the placeholder stays.
absl::Status LaunchCountFedTokens(const SamplingRow* params, int rows,
                                  const int32_t* penalty_offsets, int32_t* penalty_tokens,
                                  int32_t* penalty_counts, const int32_t* feed, cudaStream_t stream,
                                  int32_t vocab_begin = 0, int32_t vocab_end = INT32_MAX);

// logits: fp32 [rows][logits_stride] (first `vocab` used), overwritten with
//   the penalized logits.
// params: [rows], device.
// Penalty tokens, CSR, device, or all null: row r's tokens are
//   penalty_tokens[penalty_offsets[r] .. penalty_offsets[r + 1]), each at
//   most once, with penalty_counts = its count in the generated output (0:
//   it appears in the prompt only). Repetition applies to every listed
//   token (logit / p if positive, * p otherwise); presence and frequency
//   subtract presence * (count > 0) + frequency * count.
// out_tokens: int32 [rows], device.
absl::Status LaunchSample(float* logits, int64_t logits_stride, int rows, int vocab,
                          const SamplingRow* params, const int32_t* penalty_offsets,
                          const int32_t* penalty_tokens, const int32_t* penalty_counts,
                          int32_t* out_tokens, cudaStream_t stream);

// Greedy tokens from per-part candidates (kernels/greedy_candidate.h), as
// an LM-head GEMM leaves them (kernels/skinny_gemm.h, argmax_out): out[r] =
// the token of the largest of candidates[r * parts .. r * parts + parts), the
// argmax of row r's logits with the lowest id on ties, as LaunchSample's
// greedy rows without penalties. out: int32 [rows], device (or pinned host
// memory, which the device reaches through unified addressing); out_copy:
// null, or a second such buffer that gets the same tokens; out_offset:
// null, or a device int read when the kernel runs, the row of out where
// row 0's token goes (out then has room for it), e.g. to pick one of
// several result buffers from a captured graph.
absl::Status LaunchGreedyFromCandidates(const uint64_t* candidates, int parts, int rows,
                                        int32_t* out, cudaStream_t stream,
                                        int32_t* out_copy = nullptr,
                                        const int32_t* out_offset = nullptr);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_SAMPLING_H_
