#include "kvmanager/remapper.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace memshare::kvmanager {

absl::Status Remapper::Apply(const RemapDecision& d, int32_t immutable_tokens, BlockTable* table) {
  const int32_t bs = table->block_size();
  // Blocks that are full and whose every slot is written for good.
  const int32_t immutable_blocks =
      std::min(table->num_full_blocks(), std::max(0, immutable_tokens) / bs);
  if (d.logical < 0 || d.logical >= immutable_blocks) {
    return absl::FailedPreconditionError(
        absl::StrCat("remap of logical block ", d.logical, " refused: only the ", immutable_blocks,
                     " full, written blocks may be shared (", table->num_tokens(), " tokens, ",
                     immutable_tokens, " written)"));
  }
  if (d.reference_logical < 0 || d.reference_logical >= d.logical) {
    return absl::FailedPreconditionError(
        absl::StrCat("remap of logical block ", d.logical, " onto block ", d.reference_logical,
                     " refused: the reference must be an earlier block"));
  }
  if (table->block(d.logical) != d.pair.candidate ||
      table->block(d.reference_logical) != d.pair.reference) {
    return absl::AbortedError(absl::StrCat("stale remap: logical blocks ", d.logical, "/",
                                           d.reference_logical, " name ", table->block(d.logical),
                                           "/", table->block(d.reference_logical), ", verified ",
                                           d.pair.candidate, "/", d.pair.reference));
  }
  if (d.pair.candidate == d.pair.reference) return absl::OkStatus();
  return table->Replace(d.logical, d.pair.reference);
}

}  // namespace memshare::kvmanager
