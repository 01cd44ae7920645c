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
  const int32_t shift = d.pair.shift;
  if (shift < 0 || shift >= bs) {
    return absl::FailedPreconditionError(absl::StrCat(
        "remap of logical block ", d.logical, " refused: shift ", shift, " outside [0, ", bs, ")"));
  }
  // The last entry the reference reads.
  const int32_t last_ref = d.reference_logical + (shift > 0 ? 1 : 0);
  if (d.reference_logical < 0 || last_ref >= d.logical) {
    return absl::FailedPreconditionError(
        absl::StrCat("remap of logical block ", d.logical, " onto block ", d.reference_logical,
                     shift > 0 ? absl::StrCat(" at shift ", shift) : "",
                     " refused: the reference must be earlier blocks"));
  }
  if (shift == 0) {
    if (table->block(d.logical) != d.pair.candidate ||
        table->block(d.reference_logical) != d.pair.reference ||
        table->kind(d.reference_logical) == BlockEntryKind::kView) {
      return absl::AbortedError(absl::StrCat("stale remap: logical blocks ", d.logical, "/",
                                             d.reference_logical, " name ", table->block(d.logical),
                                             "/", table->block(d.reference_logical), ", verified ",
                                             d.pair.candidate, "/", d.pair.reference));
    }
    if (d.pair.candidate == d.pair.reference) return absl::OkStatus();
    return table->Replace(d.logical, d.pair.reference);
  }
  const int32_t k = d.reference_logical;
  if (table->block(d.logical) != d.pair.candidate || table->block(k) != d.pair.reference ||
      table->block(k + 1) != d.pair.reference_next || !table->IsPrimary(k) ||
      !table->IsPrimary(k + 1)) {
    return absl::AbortedError(absl::StrCat(
        "stale shifted remap: logical blocks ", d.logical, "/", k, "/", k + 1, " name ",
        table->block(d.logical), "/", table->block(k), "/", table->block(k + 1), " (primary ",
        table->IsPrimary(k), "/", table->IsPrimary(k + 1), "), verified ", d.pair.candidate, "/",
        d.pair.reference, "/", d.pair.reference_next));
  }
  return table->MakeView(d.logical, k, shift);
}

}  // namespace memshare::kvmanager
