// The checks every backend runs on a StepPlan before it computes anything
// (backend.h: INVALID_ARGUMENT, nothing written), written once so the CPU
// and CUDA backends refuse the same plans with the same messages:
//  - every chunk has tokens, start_pos >= 0, positions below the backend's
//    limit (and the model's sliding window, which no backend implements),
//    token ids inside the vocabulary; a fed chunk (fed_row >= 0) has one
//    token and names a row of the previous step that can be fed; only a
//    fed chunk counts its fed token in its penalties;
//  - one block table per layer group, covering every position of the chunk,
//    with ids inside the pool;
//  - MemShare shifted views (step_plan.h): block_tables_hi / block_shifts
//    empty, or one entry per layer group, each empty or as long as the
//    group's block table; shifts in [0, block_size); hi inside the pool
//    where the shift is > 0; no token of the chunk written into a view;
//  - no two tokens of the step write one slot.
// Backend-specific limits (batch size, sampling values) stay with the
// backend. Messages name the sequence ("sequence i (seq_id n)") and field.
//
// Pure function; thread-safe.
#ifndef MEMSHARE_ENGINE_PLAN_VALIDATION_H_
#define MEMSHARE_ENGINE_PLAN_VALIDATION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/backend.h"
#include "engine/step_plan.h"

namespace memshare::engine {

struct PlanLimits {
  // Tokens of the model's vocabulary: ids in [0, vocab_size).
  int64_t vocab_size = 0;
  // Positions must stay below this (the end of a chunk at most this).
  int64_t max_positions = 0;
  // What max_positions is, for messages ("max_model_len").
  std::string max_positions_name = "max_position_embeddings";
  // The model's sliding window (0: none): longer sequences are refused,
  // since no backend implements the window.
  int64_t sliding_window = 0;
  // For the sliding-window message ("the CPU backend").
  std::string backend_name = "the backend";
  // Pipelined decode (SequenceChunk::fed_row): per output row of the
  // previous step, whether its token was sampled on the device and can be
  // fed; null or empty: no chunk may set fed_row.
  const std::vector<bool>* feedable_rows = nullptr;
};

// OK, or INVALID_ARGUMENT naming the first problem found.
absl::Status ValidatePlan(const StepPlan& plan, const KvCacheSpec& spec, const PlanLimits& limits);

// The checks of Backend::ComputeDistanceSums' arguments (backend.h), the
// same on every backend: a layer group of the spec, one result per pair,
// blocks inside the pool (reference_next too where shift > 0), shifts in
// [0, block_size). OK, or INVALID_ARGUMENT naming the first bad pair.
absl::Status ValidateDistancePairs(const KvCacheSpec& spec, int layer_group,
                                   absl::Span<const kvmanager::BlockPair> pairs, size_t results);

// "sequence i (seq_id n)": how messages about a plan name a chunk.
std::string PlanSequenceName(size_t i, const SequenceChunk& s);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PLAN_VALIDATION_H_
