#include "kvmanager/block_aligner.h"

#include <algorithm>

namespace memshare::kvmanager {

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
                         int32_t min_overlap, std::vector<Match>* out) {
  const Range owned = OwnedBlocks(step, block_size);
  if (candidate.end <= candidate.begin) return;
  const int32_t full_blocks = static_cast<int32_t>(tokens.size()) / block_size;
  const int32_t ref_begin = candidate.begin / block_size;
  const int32_t ref_end = std::min((candidate.end + block_size - 1) / block_size, full_blocks);
  for (int32_t i = owned.begin; i < std::min(owned.end, full_blocks); ++i) {
    const int32_t* block = tokens.data() + size_t{1} * i * block_size;
    int32_t best = -1;
    int32_t best_overlap = 0;
    for (int32_t j = ref_begin; j < std::min(ref_end, i); ++j) {
      const int32_t* ref = tokens.data() + size_t{1} * j * block_size;
      int32_t overlap = 0;
      for (int32_t s = 0; s < block_size; ++s) overlap += block[s] == ref[s];
      if (overlap > best_overlap) {
        best_overlap = overlap;
        best = j;
      }
    }
    if (best >= 0 && best_overlap >= min_overlap) out->push_back(Match{i, best, best_overlap});
  }
}

}  // namespace memshare::kvmanager
