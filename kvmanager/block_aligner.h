// Alignment of a finished step's blocks with token windows of an earlier,
// lexically similar step of the same sequence (DESIGN.md §4, MemShare
// step 3).
//
// Ownership: a full block is considered once, in the pass of the step that
// holds its last token (blocks straddling two steps belong to the later).
// Blocks whose last token is in the prompt are never considered.
//
// Pairing: the KV distance is computed slot by slot, so a block can only be
// close to a window of earlier tokens that agrees with it slot by slot. A
// window is block_size consecutive earlier positions [P, P + block_size):
//  - on the block grid (P = k * block_size): the whole block k (shift 0);
//  - anywhere else (shifted sharing): the last block_size - s slots of block
//    k = P / block_size and the first s of block k + 1, s = P % block_size.
//    A reasoning model restates earlier text at arbitrary offsets, so most
//    repeats are of this kind.
// Each owned block i is paired with the window overlapping the candidate
// step's span whose tokens agree with i's in the most slots (at least
// `min_overlap`; a grid window wins ties, then the earliest). A window
// must lie before block i (k < i on the grid, k + 1 < i when shifted), so a
// block is never paired with itself; a shifted window's two blocks must
// also pass `usable` (KvManager: primary entries in every layer group that
// may share, see block_table.h).
//
// Agreement (OverlapMeasure): kAnySlots counts every slot whose tokens
// agree; kAnchoredRun counts only the longest run of agreeing slots that
// starts at the block's first slot or ends at its last. A restatement that
// begins or ends inside a block agrees with its source in such a run, while
// two different steps written from one template ("So Emma has 37 + 19 =
// 56 cups." / "So Emma has 56 - 18 = 38 cups.") agree in slots scattered
// between the words that differ: the numbers, which are what a later token
// reads the block for. Whole-window agreement counts block_size either way.
//
// Cost: per owned block, one comparison per window position (block_size
// slots, or up to the first mismatches at both ends when anchored).
//
// Stateless; thread-safe.
#ifndef MEMSHARE_KVMANAGER_BLOCK_ALIGNER_H_
#define MEMSHARE_KVMANAGER_BLOCK_ALIGNER_H_

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"
#include "kvmanager/dedup_index.h"

namespace memshare::kvmanager {

// How the agreement of a block with a window is counted (see above).
enum class OverlapMeasure { kAnySlots, kAnchoredRun };

class BlockAligner {
 public:
  struct Range {
    int32_t begin = 0;  // first logical block
    int32_t end = 0;    // one past the last (end <= begin: none)
  };

  struct Match {
    int32_t logical = 0;    // block of the new step
    int32_t reference = 0;  // earlier logical block where the window starts (k)
    int32_t overlap = 0;    // slots whose tokens agree (as the measure counts them)
    int32_t shift = 0;      // window start within `reference`: 0 .. block_size - 1
  };

  // Whether logical block k may be one of a shifted window's two blocks.
  using BlockFilter = absl::FunctionRef<bool(int32_t)>;

  // The full logical blocks owned by a step covering token positions `span`.
  static Range OwnedBlocks(DedupIndex::StepSpan span, int32_t block_size);

  // Appends to *out one match per owned block of `step` that has a partner
  // window in `candidate` with at least `min_overlap` agreeing slots
  // (counted by `measure`). `tokens` are the sequence's token ids by
  // position (every full block in them may be read) and must cover both
  // spans. Grid windows only.
  static void Align(absl::Span<const int32_t> tokens, int32_t block_size, DedupIndex::StepSpan step,
                    DedupIndex::StepSpan candidate, int32_t min_overlap, OverlapMeasure measure,
                    std::vector<Match>* out);
  // kAnySlots.
  static void Align(absl::Span<const int32_t> tokens, int32_t block_size, DedupIndex::StepSpan step,
                    DedupIndex::StepSpan candidate, int32_t min_overlap, std::vector<Match>* out) {
    Align(tokens, block_size, step, candidate, min_overlap, OverlapMeasure::kAnySlots, out);
  }

  // The same over every window, shifted ones included (see above).
  static void AlignShifted(absl::Span<const int32_t> tokens, int32_t block_size,
                           DedupIndex::StepSpan step, DedupIndex::StepSpan candidate,
                           int32_t min_overlap, OverlapMeasure measure, BlockFilter usable,
                           std::vector<Match>* out);
  // kAnySlots.
  static void AlignShifted(absl::Span<const int32_t> tokens, int32_t block_size,
                           DedupIndex::StepSpan step, DedupIndex::StepSpan candidate,
                           int32_t min_overlap, BlockFilter usable, std::vector<Match>* out) {
    AlignShifted(tokens, block_size, step, candidate, min_overlap, OverlapMeasure::kAnySlots,
                 usable, out);
  }

  // Agreement of the block_size slots at `a` and `b` by `measure`.
  static int32_t Agreement(const int32_t* a, const int32_t* b, int32_t block_size,
                           OverlapMeasure measure);

 private:
  static void AlignImpl(absl::Span<const int32_t> tokens, int32_t block_size,
                        DedupIndex::StepSpan step, DedupIndex::StepSpan candidate,
                        int32_t min_overlap, OverlapMeasure measure, const BlockFilter* usable,
                        std::vector<Match>* out);
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_BLOCK_ALIGNER_H_
