// The paged KV store of one worker rank as the scheduler sees it (DESIGN.md
// §4): one BlockPool per layer group, the block tables of every live
// sequence, the prefix cache, MemShare dedup state per sequence, and KvStats.
// Plain bookkeeping: the backend holds the K/V bytes, runs the copies this
// class asks for and computes block distances through BlockDistance.
//
// A step of the scheduler, in order:
//   1. AddSequence() to admit (prefix-cache hit + first prefill chunk);
//      AppendTokens() for each running sequence (next prefill chunk, or the
//      token sampled last step). Either returns RESOURCE_EXHAUSTED with no
//      side effect when the pools cannot hold the tokens: preempt (Free())
//      or keep the request waiting, then retry.
//   2. TakePendingCopies(): copy-on-write block copies; the backend runs them
//      (Backend::CopyBlocks), in order, before the forward step.
//   3. CopyBlockTables() (the four-argument form, with shifted views) /
//      GetBlockTableSpans() for the StepPlan; Forward.
//   4. CommitStep(): the K/V of every token appended since the last commit
//      is written. Full blocks become prefix-cache entries and candidates
//      for MemShare.
//   5. OnTokensGenerated() with the decoded piece of each sampled token
//      (segments the reasoning steps), then RunDedup(distance) when
//      HasPendingDedup(): lexical candidates, alignment, one distance call per
//      layer group for all pairs, remaps.
//   Free() on finish, abort or preemption (at any point between calls);
//   Fork() for n > 1 sampling and beam search (between steps: the parent
//   must have no uncommitted tokens).
//
// Token positions: a sequence's tokens are its prompt (given at admission,
// appended in chunks) followed by its generated tokens; the piece of the
// k-th OnTokensGenerated() token belongs to position output_begin + k, where
// output_begin is the prompt's length unless SequenceSpec::output_begin says
// otherwise: a preempted sequence is re-admitted with prompt + output as its
// prompt and output_begin at its output, and its scheduler feeds the pieces
// of that output again, so MemShare segments and shares it again once the
// recomputed K/V is written (the memory it saved is not lost to preemption).
//
// MemShare shares a block in one of two ways (block_table.h): a remap
// (the logical block names an earlier physical block whose content is
// nearly equal) or, with DedupPolicy::shifted_sharing, a shifted view (its
// slots read a window that starts `shift` slots into one earlier block and
// runs on into the next; both are primary blocks of the same sequence and
// group, and the view holds one reference on each). The StepPlan carries a
// view as block_tables (lo), block_tables_hi and block_shifts.
//
// Guarantees: only full, written blocks are shared (prefix cache, MemShare);
// the block being appended to is never shared — a shared partial block left
// by Fork() is copied before it is written; decisions never remap a block
// past CommitStep()'s written frontier. A sequence that has had a block
// remapped stops feeding the prefix cache from that point (its later K/V was
// computed over approximate context, which an exact cache must not serve).
//
// Thread-safety: thread-compatible; the scheduler thread makes every call
// (RPC handlers only enqueue, DESIGN.md §6), so no state is shared and no
// mutex guards it. Stats() alone may be called from any thread: KvStats is
// a set of relaxed atomics with this class as its single writer.
#ifndef MEMSHARE_KVMANAGER_KV_MANAGER_H_
#define MEMSHARE_KVMANAGER_KV_MANAGER_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvmanager/block_aligner.h"
#include "kvmanager/block_distance.h"
#include "kvmanager/block_pool.h"
#include "kvmanager/block_table.h"
#include "kvmanager/dedup_index.h"
#include "kvmanager/dedup_policy.h"
#include "kvmanager/kv_stats.h"
#include "kvmanager/min_hasher.h"
#include "kvmanager/prefix_cache.h"
#include "kvmanager/step_segmenter.h"

namespace memshare::kvmanager {

class KvManager {
 public:
  struct Options {
    // Layer groups (engine KvCacheSpec::num_layer_groups); >= 1.
    int32_t num_layer_groups = 1;
    // Physical blocks per group (KvCacheSpec::num_blocks); > 0.
    int32_t num_blocks = 0;
    // Tokens per block (KvCacheSpec::block_size); > 0.
    int32_t block_size = 16;
    // Bytes of one block per group (KvCacheSpec::BlockBytes(g)), for the
    // bytes-saved statistic; empty = 0 for every group.
    std::vector<int64_t> block_bytes;
    // Across-request exact prefix caching.
    bool enable_prefix_cache = true;
    // MemShare defaults and bounds.
    DedupPolicy dedup;
    // Reasoning-step delimiters and step length bounds.
    StepSegmenter::Options segmenter;
    // MinHash signature (num_hashes must equal lsh.num_bands *
    // lsh.rows_per_band).
    MinHasher::Options min_hash;
    DedupIndex::Options lsh;
    // Token ids whose text holds a decimal digit (index = id; ids past the
    // end hold none), for DedupPolicy::keep_numbers. Empty: none do.
    std::vector<bool> digit_tokens;
  };

  struct SequenceSpec {
    uint64_t seq_id = 0;
    // Non-empty. Copied.
    absl::Span<const int32_t> prompt_token_ids;
    // Prefix-cache isolation between tenants ("" = shared).
    absl::string_view cache_salt;
    // The request's MemShare overrides.
    DedupParams memshare;
    // Position of the first generated token, in [1, prompt length]: a
    // preempted sequence re-admitted with its output as part of its prompt.
    // -1: the prompt's end (a new sequence).
    int32_t output_begin = -1;
  };

  struct Admission {
    // Leading prompt tokens whose K/V came from the prefix cache: a multiple
    // of block_size, always < the prompt length (the last prompt token is
    // always computed, for its logits).
    int32_t cached_tokens = 0;
    // Prompt tokens appended after them for this step's prefill chunk.
    int32_t scheduled_tokens = 0;
  };

  struct PrefixProbe {
    int32_t cached_tokens = 0;
    // Whether AddSequence(spec, num_new_tokens) would succeed now.
    bool fits = false;
  };

  struct SequenceInfo {
    int32_t prompt_tokens = 0;
    int32_t num_tokens = 0;           // appended (slots assigned)
    int32_t num_computed_tokens = 0;  // written (committed)
    int32_t cached_tokens = 0;        // from the prefix cache at admission
    int32_t logical_blocks = 0;       // per group
    int64_t remapped_blocks = 0;      // MemShare remaps, summed over groups
    int64_t shifted_blocks = 0;       // of which shifted views (block_table.h)
    int32_t generated_tokens = 0;     // pieces segmented (MemShare sequences only)
    int32_t dedup_steps = 0;          // finished steps indexed (MemShare only)
    bool memshare = false;
  };

  static absl::StatusOr<std::unique_ptr<KvManager>> Create(const Options& options);

  KvManager(const KvManager&) = delete;
  KvManager& operator=(const KvManager&) = delete;
  ~KvManager();

  // --- Admission and lifetime -------------------------------------------

  // Side-effect-free: the cached prefix AddSequence would attach and whether
  // `num_new_tokens` more prompt tokens would fit after it.
  PrefixProbe ProbePrefix(absl::Span<const int32_t> prompt_token_ids, absl::string_view cache_salt,
                          int32_t num_new_tokens) const;

  // Admits a sequence: attaches the longest cached prefix of its prompt and
  // appends the next min(max_new_tokens, rest of the prompt) prompt tokens.
  // Plan the prefill of prompt[cached_tokens, cached_tokens +
  // scheduled_tokens). RESOURCE_EXHAUSTED (nothing changed) when they do not
  // fit; ALREADY_EXISTS for a live id; INVALID_ARGUMENT for an empty prompt,
  // a negative max_new_tokens or MemShare thresholds out of bounds.
  absl::StatusOr<Admission> AddSequence(const SequenceSpec& spec, int32_t max_new_tokens);

  // Copies `parent`'s whole state (blocks shared, one more reference each;
  // dedup index and segmenter state copied) into new sequence `child`.
  // FAILED_PRECONDITION when the parent has uncommitted tokens.
  absl::Status Fork(uint64_t parent, uint64_t child);

  // Releases everything the sequence holds (finish, abort, preemption).
  // Blocks in the prefix cache stay there, evictable.
  absl::Status Free(uint64_t seq_id);

  // --- Per step ----------------------------------------------------------

  // Whether AppendTokens of n tokens would succeed now.
  bool CanAppend(uint64_t seq_id, int32_t n) const;
  // Whether AppendTokens of n tokens to each of these sequences, one after
  // the other, would all succeed now (false for an unknown sequence).
  bool CanAppendAll(absl::Span<const uint64_t> seq_ids, int32_t n) const;

  // Appends tokens (the next prefill chunk, or sampled tokens) whose K/V the
  // next forward step writes. Prompt positions must carry the prompt's ids
  // (INVALID_ARGUMENT otherwise). RESOURCE_EXHAUSTED, nothing changed, when
  // some group's pool cannot hold them.
  absl::Status AppendTokens(uint64_t seq_id, absl::Span<const int32_t> token_ids);

  // Sets the id of an appended token not yet committed, at a generated
  // position: a pipelined step's token is appended (with a placeholder id)
  // before the step that samples it has returned it. INVALID_ARGUMENT for a
  // committed or prompt position or one not appended.
  absl::Status SetToken(uint64_t seq_id, int32_t pos, int32_t token_id);

  // The copy-on-write copies requested since the last call, per layer group
  // ([group] -> (src, dst) in order). Run them before the next forward.
  std::vector<std::vector<BlockCopy>> TakePendingCopies();

  // Physical block ids of a sequence in one group, by logical block. Valid
  // until the next mutating call.
  absl::StatusOr<absl::Span<const int32_t>> GetBlockTable(uint64_t seq_id, int32_t group) const;
  // All groups ([group][logical block]): the physical block of each entry
  // (a shifted view's lo block). Enough for a plan only while the sequence
  // has no shifted views (SequenceInfo::shifted_blocks == 0).
  absl::Status CopyBlockTables(uint64_t seq_id, std::vector<std::vector<int32_t>>* out) const;
  // What StepPlan's SequenceChunk wants: block_tables, block_tables_hi and
  // block_shifts. *blocks_hi and *shifts are cleared when no group of the
  // sequence holds a shifted view; else they get one entry per group, empty
  // for a group without views and dense (like *blocks) for one with views,
  // hi == lo and shift 0 for its entries that are no view.
  absl::Status CopyBlockTables(uint64_t seq_id, std::vector<std::vector<int32_t>>* blocks,
                               std::vector<std::vector<int32_t>>* blocks_hi,
                               std::vector<std::vector<int32_t>>* shifts) const;

  // One group's table with its shifted views (BlockTable::blocks(),
  // blocks_hi(), shifts(): the last two empty while the table has held no
  // view, else dense). Valid until the next mutating call.
  struct BlockTableSpans {
    absl::Span<const int32_t> blocks;
    absl::Span<const int32_t> blocks_hi;
    absl::Span<const int32_t> shifts;
  };
  absl::StatusOr<BlockTableSpans> GetBlockTableSpans(uint64_t seq_id, int32_t group) const;

  // The forward step ran: every appended token's K/V is written, except
  // the last token of each sequence in `keep_last`, which stays uncommitted
  // (a pipelined step's, appended before this step's results came; the next
  // CommitStep commits it).
  absl::Status CommitStep(absl::Span<const uint64_t> keep_last = {});

  // The decoded pieces of newly sampled tokens of a sequence, in order (the
  // tokens themselves are appended next step). No-op when MemShare is off
  // for it. FAILED_PRECONDITION while its prompt is not fully appended.
  absl::Status OnTokensGenerated(uint64_t seq_id, absl::Span<const absl::string_view> pieces);

  // Whether some sequence has a finished step waiting for RunDedup.
  bool HasPendingDedup() const { return !dedup_list_.empty(); }

  // Runs MemShare over every finished step whose tokens are all written:
  // candidates, alignment, one ComputeDistanceSums call per layer group for
  // all pairs, remaps of accepted blocks. On a distance error nothing of
  // this pass is remapped (the steps stay indexed) and the error returns.
  absl::Status RunDedup(BlockDistance& distance);
  // The same for one sequence only.
  absl::Status RunDedupFor(uint64_t seq_id, BlockDistance& distance);

  // Drops every prefix-cache entry; returns how many.
  int32_t ResetPrefixCache();

  // --- Introspection -----------------------------------------------------

  int32_t num_layer_groups() const { return static_cast<int32_t>(pools_.size()); }
  int32_t block_size() const { return block_size_; }
  int32_t num_blocks() const { return pools_[0]->num_blocks(); }
  int32_t num_sequences() const { return static_cast<int32_t>(sequences_.size()); }
  // Whether dedup may make shifted views (DedupPolicy::shifted_sharing):
  // the backend must then read SequenceChunk::block_tables_hi/block_shifts.
  bool shifted_sharing() const { return options_.dedup.shifted_sharing; }
  bool Contains(uint64_t seq_id) const { return sequences_.contains(seq_id); }
  // Blocks an allocation can still get in the tightest group.
  int32_t NumAvailableBlocks() const;
  absl::StatusOr<SequenceInfo> GetSequenceInfo(uint64_t seq_id) const;
  const BlockPool& pool(int32_t group) const { return *pools_[group]; }
  // nullptr when the prefix cache is disabled.
  const PrefixCache* prefix_cache() const { return cache_.get(); }

  // Thread-safe.
  KvStatsSnapshot Stats() const { return stats_.Snapshot(); }

  // Full consistency check, O(blocks + table entries): pools, prefix cache,
  // Σ references = Σ table entries + Σ shifted views (a view's second
  // reference), every view over two full, written, primary entries of its
  // table (BlockTable::CheckEntries), blocks being written unshared,
  // uncached and no view. INTERNAL naming the first violation. For tests
  // and debugging.
  absl::Status CheckInvariants() const;

 private:
  struct Sequence;
  struct PairMeta {
    Sequence* seq;
    int32_t logical;
    int32_t reference_logical;
  };

  KvManager(const Options& options, std::vector<std::unique_ptr<BlockPool>> pools,
            std::unique_ptr<StepSegmenter> segmenter, std::unique_ptr<MinHasher> hasher);

  Sequence* Find(uint64_t seq_id) const;
  absl::Status NotFound(uint64_t seq_id) const;
  // Blocks each group must supply to attach `match` and append n tokens
  // after it; whether they fit.
  bool AdmissionFits(const PrefixCache::Match& match, int32_t n) const;
  absl::Status InsertIntoPrefixCache(Sequence* s);
  void CollectPairs(Sequence* s);
  // Turns matches_ into the pass's pairs (pairs_, pair_meta_) for every
  // group that may share; with skip_shared, not for blocks that are no
  // longer primary or back a view.
  void AddPairs(Sequence* s, bool skip_shared);
  // DedupPolicy::keep_numbers: a near match that disagrees on a digit token.
  bool RefusedForNumbers(const Sequence& s, const BlockAligner::Match& m) const;
  absl::Status RunDedupOver(absl::Span<Sequence* const> seqs, BlockDistance& distance);
  void RemoveFromList(std::vector<Sequence*>* list, Sequence* s);
  void PublishGauges();

  const Options options_;
  const int32_t block_size_;
  // Groups where remaps are allowed.
  std::vector<int32_t> dedup_groups_;
  int32_t min_overlap_slots_;
  // Per group: shifted views in all tables (their second references), so
  // that logical blocks = pool references − views.
  std::vector<int64_t> view_refs_;
  // Declared before everything that holds references on their blocks.
  std::vector<std::unique_ptr<BlockPool>> pools_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<StepSegmenter> segmenter_;
  std::unique_ptr<MinHasher> hasher_;
  KvStats stats_;

  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  // Sequences with tokens appended since the last CommitStep.
  std::vector<Sequence*> commit_list_;
  // Sequences with finished steps not yet deduplicated.
  std::vector<Sequence*> dedup_list_;
  std::vector<std::vector<BlockCopy>> pending_copies_;

  // Scratch of the hot paths, kept to avoid allocations.
  PrefixCache::Match match_;
  std::vector<int32_t> group_blocks_;
  std::vector<StepSegmenter::Step> steps_;
  std::vector<uint32_t> signature_;
  std::vector<DedupIndex::Candidate> candidates_;
  std::vector<BlockAligner::Match> matches_;
  // Per group: the pairs of the current dedup pass, which sequence and
  // blocks each came from, and their distance sums.
  std::vector<std::vector<BlockPair>> pairs_;
  std::vector<std::vector<PairMeta>> pair_meta_;
  std::vector<std::vector<DistanceSums>> sums_;
  // (distance, pair index) of the accepted pairs of one block.
  std::vector<std::pair<double, size_t>> accepted_;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_KV_MANAGER_H_
