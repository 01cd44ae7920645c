// Alignment of a finished step's blocks with the blocks of an earlier,
// lexically similar step of the same sequence (DESIGN.md §4, MemShare
// step 3).
//
// Ownership: a full block is considered once, in the pass of the step that
// holds its last token (blocks straddling two steps belong to the later).
// Blocks whose last token is in the prompt are never considered.
//
// Pairing: the KV distance is computed slot by slot, so two blocks can only
// be close when their tokens agree slot by slot. Each owned block i is paired
// with the block j of the candidate step (any block overlapping its span,
// j < i) whose tokens agree with i's in the most slots; the pair is kept
// when at least `min_overlap` slots agree. This finds a repeated passage at
// any offset that keeps block alignment, which is the only case sharing a
// whole block can serve.
//
// Stateless; thread-safe.
#ifndef MEMSHARE_KVMANAGER_BLOCK_ALIGNER_H_
#define MEMSHARE_KVMANAGER_BLOCK_ALIGNER_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kvmanager/dedup_index.h"

namespace memshare::kvmanager {

class BlockAligner {
 public:
  struct Range {
    int32_t begin = 0;  // first logical block
    int32_t end = 0;    // one past the last (end <= begin: none)
  };

  struct Match {
    int32_t logical = 0;    // block of the new step
    int32_t reference = 0;  // earlier logical block it pairs with
    int32_t overlap = 0;    // slots whose tokens agree
  };

  // The full logical blocks owned by a step covering token positions `span`.
  static Range OwnedBlocks(DedupIndex::StepSpan span, int32_t block_size);

  // Appends to *out one match per owned block of `step` that has a partner
  // in `candidate` with at least `min_overlap` agreeing slots. `tokens` are
  // the sequence's token ids by position and must cover both spans.
  static void Align(absl::Span<const int32_t> tokens, int32_t block_size, DedupIndex::StepSpan step,
                    DedupIndex::StepSpan candidate, int32_t min_overlap, std::vector<Match>* out);
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_BLOCK_ALIGNER_H_
