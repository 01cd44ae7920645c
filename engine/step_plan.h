// What one engine step runs (DESIGN.md §2, §5). Built by the scheduler on
// rank 0, executed by the backend of every rank (broadcast under tensor
// parallelism, so it stays plain data: ids, positions, block tables).
#ifndef MEMSHARE_ENGINE_STEP_PLAN_H_
#define MEMSHARE_ENGINE_STEP_PLAN_H_

#include <cstdint>
#include <optional>
#include <vector>

namespace memshare::engine {

// How a backend that samples on the device (Backend::SamplesOnDevice())
// picks a sequence's next token: the semantics of the CPU sampler
// (engine/sampler): penalties, then greedy argmax (lowest id on ties) when
// temperature <= 0, else temperature, top-k, top-p, min-p and one draw by
// inverse CDF with `uniform`. Plain data, so it travels with the plan.
struct DeviceSampling {
  float temperature = 0.f;         // <= 0: greedy
  int32_t top_k = 0;               // <= 0: off
  float top_p = 1.f;               // >= 1: off
  float min_p = 0.f;               // <= 0: off
  float repetition_penalty = 1.f;  // 1: off
  float presence_penalty = 0.f;    // 0: off
  float frequency_penalty = 0.f;   // 0: off
  // The sequence's random draw for this step, in [0, 1): taken by the
  // scheduler from the sequence's own seeded stream, so a seeded sequence
  // samples the same tokens whatever else is in the batch.
  float uniform = 0.f;
  // Tokens the penalties act on, each once: every token of the prompt and
  // of the output, with penalty_counts[i] = its count in the generated
  // output (0: prompt only). Repetition acts on all of them, presence and
  // frequency on those with a count > 0. Empty when no penalty is set.
  std::vector<int32_t> penalty_token_ids;
  std::vector<int32_t> penalty_counts;
  // With a fed chunk (SequenceChunk::fed_row) and penalty lists: the fed
  // token, sampled by the step before and so missing from the lists, counts
  // as one more occurrence in the generated output (the lists are a step
  // behind). Only for fed chunks.
  bool count_fed_token = false;
  // Also return the sampled token's logprob (log-softmax of the raw logits,
  // before penalties and temperature).
  bool return_logprob = false;
  // Also return this row's logits (e.g. for top-n alternatives).
  bool return_logits = false;
};

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
  // Pipelined decode (Backend::SupportsPipelining()): >= 0 makes this
  // chunk's one token the one the previous step (the step submitted just
  // before this one) sampled on the device for its output row `fed_row`,
  // without its trip through the host; token_ids then holds one
  // placeholder, which is not read. -1: token_ids are the tokens.
  int32_t fed_row = -1;
  // Whether the step returns logits for the last token of token_ids (false
  // for prefill chunks that do not end the prompt).
  bool compute_logits = true;
  // With compute_logits: sample the next token on the device (only read by
  // a backend whose SamplesOnDevice() is true; others return logits and the
  // caller samples). Unset: the row's logits are returned.
  std::optional<DeviceSampling> sampling;
};

struct StepPlan {
  std::vector<SequenceChunk> sequences;

  int64_t NumTokens() const {
    int64_t n = 0;
    for (const auto& s : sequences) n += static_cast<int64_t>(s.token_ids.size());
    return n;
  }
};

// Output of a step: one row per sequence with compute_logits set, in the
// order of StepPlan::sequences.
//
// Device sampling contract (Backend::SamplesOnDevice() true): for a row
// whose chunk has `sampling` set, sampled_token_ids[i] is the sampled token
// (sampled_logprobs[i] its logprob when asked, else NaN); for rows without
// it, -1 and NaN. Both vectors are empty when no row was sampled on the
// device. `logits` holds the rows that have no `sampling` or ask
// return_logits, and is empty when there are none (the point: 64 rows x
// 152k fp32 logits would cross PCIe every step). It holds every row in order
// ([rows.size()][vocab_size]) when logits_index is empty; otherwise only
// the rows asked for, packed: row i's at logits_index[i] * vocab_size, -1
// for a row whose logits were not returned (a backend may return more rows
// than asked for, never fewer). Backends without device sampling ignore
// `sampling` and always fill `logits` for every row, as before.
struct StepOutput {
  int32_t vocab_size = 0;
  std::vector<int32_t> rows;               // index into StepPlan::sequences of each row
  std::vector<float> logits;               // see above
  std::vector<int32_t> logits_index;       // [rows.size()] or empty (see above)
  std::vector<int32_t> sampled_token_ids;  // [rows.size()] or empty
  std::vector<float> sampled_logprobs;     // [rows.size()] or empty

  // Whether row i's logits were returned, and where they are.
  bool HasRow(size_t i) const {
    return !logits.empty() && (logits_index.empty() || logits_index[i] >= 0);
  }
  const float* Row(size_t i) const {
    return logits.data() + size_t(logits_index.empty() ? int64_t(i) : logits_index[i]) * vocab_size;
  }
  // Empties every field but vocab_size, keeping the allocations.
  void Clear() {
    rows.clear();
    logits.clear();
    logits_index.clear();
    sampled_token_ids.clear();
    sampled_logprobs.clear();
  }
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_STEP_PLAN_H_
