// MemShare policy: the server's defaults and bounds, a request's overrides,
// and the decision rule (DESIGN.md §4).
//
// Decision rule: a block pair is accepted in a layer group when
//   RelativeK <= tau_kv  and  RelativeV <= tau_kv
// where RelativeK = ‖K_candidate − K_reference‖ / ‖K_reference‖ over every
// layer of the group, every KV head (all ranks' sums reduced first), slot
// and dimension (block_distance.h); likewise V. A NaN never passes.
//
// Defaults are placeholders until the evaluation tunes them:
//  - tau_lex 0.5: half of the 3-token shingles shared — the step restates
//    much of an earlier one; below that, steps that merely share a topic
//    flood the verifier.
//  - tau_kv 0.2: a relative L2 error of 20% is about a cosine similarity of
//    0.98 between the flattened blocks; well above bf16 noise, below the
//    distance of unrelated text (~1 or more).
// A request may tighten them (raise tau_lex, lower tau_kv) freely and loosen
// them down to min_tau_lex / up to max_tau_kv.
//
// Plain data and pure functions; thread-safe.
#ifndef MEMSHARE_KVMANAGER_DEDUP_POLICY_H_
#define MEMSHARE_KVMANAGER_DEDUP_POLICY_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvmanager/block_aligner.h"
#include "kvmanager/block_distance.h"

namespace memshare::kvmanager {

enum class DedupMode { kOff, kMemShare };

// Server-wide MemShare settings.
struct DedupPolicy {
  // Mode of requests that do not choose one.
  DedupMode mode = DedupMode::kMemShare;
  // The defaults below are the configuration chosen by bench/memshare_eval
  // on the tiny reasoner's 600 held-out problems (bench/RESULTS.md, "MemShare
  // evaluation"; with StepSegmenter's 32–48-token steps): the block-level
  // token overlap (anchored, delayed for near matches) is the selective gate
  // there, the lexical filter only orders candidates, and tau_kv = 1 refuses
  // blocks whose K or V differ by more than their own norm.
  // Default lexical threshold (estimated Jaccard of shingle sets); [0, 1].
  // 0: every earlier step the LSH index finds is a candidate, most similar
  // first (dedup_index.h: a step of Jaccard similarity 0.3 is found with
  // probability 0.95, one of 0.1 with 0.28).
  float tau_lex = 0.0f;
  // Default KV threshold (relative L2 distance of K and of V); >= 0.
  float tau_kv = 1.0f;
  // Loosest tau_lex a request may ask for; [0, 1].
  float min_tau_lex = 0.0f;
  // Loosest tau_kv a request may ask for; >= 0.
  float max_tau_kv = 1.2f;
  // Earlier steps verified per finished step, most similar first; >= 1.
  int32_t max_candidates_per_step = 16;
  // Fraction of a block's slots whose tokens must agree with the paired
  // window's before the pair is sent to verification; (0, 1]. 0.5 = 8 of
  // 16 slots, counted as overlap_measure says.
  float min_block_token_overlap = 0.5f;
  // How agreeing slots are counted for min_block_token_overlap
  // (block_aligner.h): kAnchoredRun, the longest run at one end of the
  // block, keeps restatements and refuses blocks of different steps that
  // share a template around different numbers.
  OverlapMeasure overlap_measure = OverlapMeasure::kAnchoredRun;
  // A block whose window agrees in fewer than all slots (a near match) is
  // shared only once this many tokens have been written after the end of
  // its step; a whole-window match is shared at once. The model is still
  // reading the text it has just written, and a near match changes what it
  // reads there; [0, 1 << 20], 0: near matches at once too.
  int32_t near_match_delay_tokens = 16;
  // Also pair blocks with windows off the block grid, which share as views
  // over two earlier blocks (shifted sharing, block_table.h). false: whole
  // blocks only.
  bool shifted_sharing = true;
  // Refuse a near match (a block that agrees with its window in fewer than
  // all slots) when a slot where the two disagree holds a token with a
  // decimal digit, in the block or in the window: numbers are what later
  // tokens read such a block for, and a block shared with another number
  // makes the model copy that one (the tiny reasoner wrote "2 ÷ 3" for
  // "9 ÷ 3"). Needs KvManager::Options::digit_tokens (the engine fills it
  // from its codec). With 8-token blocks (the worker's default) it loses
  // 0-1 of the tiny reasoner's 600 held-out answers at 31% saved, where
  // sharing them loses 30 (bench/RESULTS.md).
  bool keep_numbers = true;
  // Layer groups where blocks may be remapped (e.g. only the shallow ones);
  // empty = every group.
  std::vector<int32_t> layer_groups;
};

// A request's MemShare options (unset = the server's default).
struct DedupParams {
  std::optional<DedupMode> mode;
  std::optional<float> tau_lex;
  std::optional<float> tau_kv;
};

// What one sequence runs with.
struct ResolvedDedup {
  bool enabled = false;
  float tau_lex = 0;
  float tau_kv = 0;
};

// INVALID_ARGUMENT naming the field for a policy out of range or naming a
// layer group outside [0, num_layer_groups).
absl::Status ValidateDedupPolicy(const DedupPolicy& policy, int32_t num_layer_groups);

// INVALID_ARGUMENT (naming "memshare.tau_lex" / "memshare.tau_kv") when a
// request asks for thresholds outside the server's bounds.
absl::StatusOr<ResolvedDedup> ResolveDedup(const DedupPolicy& policy, const DedupParams& params);

// The decision rule above.
inline bool AcceptPair(const DistanceSums& sums, float tau_kv) {
  const double k = sums.RelativeK();
  const double v = sums.RelativeV();
  return k <= tau_kv && v <= tau_kv;  // false for NaN
}

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_DEDUP_POLICY_H_
