// What one engine step runs (DESIGN.md §2, §5). Built by the scheduler on
// rank 0, executed by the backend of every rank (broadcast under tensor
// parallelism, so it stays plain data: ids, positions, block tables).
#ifndef MEMSHARE_ENGINE_STEP_PLAN_H_
#define MEMSHARE_ENGINE_STEP_PLAN_H_

#include <cstdint>
#include <vector>

namespace memshare::engine {

// One sequence's share of a step: a prefill chunk or one decode token.
struct SequenceChunk {
  uint64_t seq_id = 0;
  // Tokens of this sequence already in the KV cache: the position of the
  // first token of `token_ids`.
  int32_t start_pos = 0;
  // Tokens to run now; their K and V are written to the cache at positions
  // start_pos .. start_pos + token_ids.size() - 1.
  std::vector<int32_t> token_ids;
  // Physical block ids per layer group ([group][logical block]), covering at
  // least positions [0, start_pos + token_ids.size()). Different logical
  // blocks may name the same physical block (MemShare or prefix sharing);
  // the backend never writes a block that is not the target of a token here.
  std::vector<std::vector<int32_t>> block_tables;
  // MemShare shifted views (kvmanager/block_table.h). Both empty when the
  // sequence has none (the common case; backends then read block_tables
  // only). Otherwise one entry per layer group, each either empty (no view
  // in that group) or dense like block_tables[group]: logical block b with
  // s = block_shifts[group][b] > 0 is a view whose slot j reads physical
  // block block_tables[group][b] (its "lo") slot j + s when j + s <
  // block_size, else block_tables_hi[group][b] slot j + s - block_size.
  // Entries with shift 0 read block_tables only (their hi equals their
  // block, so reading it unconditionally is safe). The RoPE position of
  // slot j of logical block b stays b * block_size + j. A view is full and
  // never written: no token of the chunk has its slot in a view.
  std::vector<std::vector<int32_t>> block_tables_hi;
  std::vector<std::vector<int32_t>> block_shifts;
  // Whether the step returns logits for the last token of token_ids (false
  // for prefill chunks that do not end the prompt).
  bool compute_logits = true;
};

struct StepPlan {
  std::vector<SequenceChunk> sequences;

  int64_t NumTokens() const {
    int64_t n = 0;
    for (const auto& s : sequences) n += static_cast<int64_t>(s.token_ids.size());
    return n;
  }
};

// Output of a step: one row of logits per sequence with compute_logits set,
// in the order of StepPlan::sequences.
struct StepOutput {
  int32_t vocab_size = 0;
  std::vector<int32_t> rows;  // index into StepPlan::sequences of each row
  std::vector<float> logits;  // [rows.size()][vocab_size]

  const float* Row(size_t i) const { return logits.data() + i * vocab_size; }
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_STEP_PLAN_H_
