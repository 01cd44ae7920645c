#include "kvmanager/block_aligner.h"

#include <algorithm>

namespace memshare::kvmanager {
namespace {

// Slots where `a` and `b` agree. Branch-free with a constant trip count
// for the usual block size, so the compiler vectorizes it (4 compares of 4
// slots): cheaper than stopping at the first mismatch too many.
template <int32_t kN>
inline int32_t AgreeFixed(const int32_t* a, const int32_t* b) {
  int32_t same = 0;
  for (int32_t s = 0; s < kN; ++s) same += a[s] == b[s];
  return same;
}

inline int32_t Agree(const int32_t* a, const int32_t* b, int32_t n) {
  if (n == 16) return AgreeFixed<16>(a, b);
  int32_t same = 0;
  for (int32_t s = 0; s < n; ++s) same += a[s] == b[s];
  return same;
}

// The longest run of agreeing slots at either end (n when all agree).
inline int32_t AnchoredRun(const int32_t* a, const int32_t* b, int32_t n) {
  int32_t head = 0;
  while (head < n && a[head] == b[head]) ++head;
  if (head == n) return n;
  int32_t tail = 0;
  while (a[n - 1 - tail] == b[n - 1 - tail]) ++tail;  // stops at slot `head` at the latest
  return std::max(head, tail);
}

}  // namespace

int32_t BlockAligner::Agreement(const int32_t* a, const int32_t* b, int32_t block_size,
                                OverlapMeasure measure) {
  return measure == OverlapMeasure::kAnchoredRun ? AnchoredRun(a, b, block_size)
                                                 : Agree(a, b, block_size);
}

BlockAligner::Range BlockAligner::OwnedBlocks(DedupIndex::StepSpan span, int32_t block_size) {
  // Block i is owned when its last slot (i + 1) * B - 1 lies in [begin, end).
  Range r;
  r.begin = (span.begin + block_size) / block_size - 1;  // ceil((begin + 1) / B) - 1
  r.end = span.end / block_size;
  if (span.end <= span.begin) r.end = r.begin;
  return r;
}

void BlockAligner::Align(absl::Span<const int32_t> tokens, int32_t block_size,
                         DedupIndex::StepSpan step, DedupIndex::StepSpan candidate,
                         int32_t min_overlap, OverlapMeasure measure, std::vector<Match>* out) {
  AlignImpl(tokens, block_size, step, candidate, min_overlap, measure, nullptr, out);
}

void BlockAligner::AlignShifted(absl::Span<const int32_t> tokens, int32_t block_size,
                                DedupIndex::StepSpan step, DedupIndex::StepSpan candidate,
                                int32_t min_overlap, OverlapMeasure measure, BlockFilter usable,
                                std::vector<Match>* out) {
  AlignImpl(tokens, block_size, step, candidate, min_overlap, measure, &usable, out);
}

void BlockAligner::AlignImpl(absl::Span<const int32_t> tokens, int32_t block_size,
                             DedupIndex::StepSpan step, DedupIndex::StepSpan candidate,
                             int32_t min_overlap, OverlapMeasure measure, const BlockFilter* usable,
                             std::vector<Match>* out) {
  const int32_t bs = block_size;
  const Range owned = OwnedBlocks(step, bs);
  if (candidate.end <= candidate.begin) return;
  const int32_t full_blocks = static_cast<int32_t>(tokens.size()) / bs;
  // Grid windows: the blocks overlapping the candidate span.
  const int32_t ref_begin = candidate.begin / bs;
  const int32_t ref_end = std::min((candidate.end + bs - 1) / bs, full_blocks);
  // Shifted windows overlapping the span start in [p_first, candidate.end).
  const int32_t p_first = std::max(0, candidate.begin - bs + 1);
  const int32_t* base = tokens.data();
  for (int32_t i = owned.begin; i < std::min(owned.end, full_blocks); ++i) {
    const int32_t* block = base + size_t{1} * i * bs;
    Match best{i, -1, std::max(min_overlap, 1) - 1, 0};
    for (int32_t j = ref_begin; j < std::min(ref_end, i); ++j) {
      const int32_t overlap = Agreement(block, base + size_t{1} * j * bs, bs, measure);
      if (overlap > best.overlap) {
        best.reference = j;
        best.overlap = overlap;
      }
    }
    if (usable != nullptr && best.overlap < bs) {
      // A shifted window ends inside block k + 1 < i: P < (i - 1) * bs.
      const int64_t p_end = std::min<int64_t>(candidate.end, int64_t{i - 1} * bs);
      for (int32_t p = p_first; p < p_end; ++p) {
        const int32_t shift = p % bs;
        if (shift == 0) continue;  // the grid windows above
        const int32_t overlap = Agreement(block, base + p, bs, measure);
        if (overlap <= best.overlap) continue;
        const int32_t k = p / bs;
        if (!(*usable)(k) || !(*usable)(k + 1)) continue;
        best.reference = k;
        best.overlap = overlap;
        best.shift = shift;
        if (overlap == bs) break;
      }
    }
    if (best.reference >= 0) out->push_back(best);
  }
}

}  // namespace memshare::kvmanager
