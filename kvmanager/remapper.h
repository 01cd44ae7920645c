// Applies accepted MemShare decisions (DESIGN.md §4, step 5) in one layer
// group:
//  - shift 0: points a later logical block at the physical block of an
//    earlier logical block of the same table, adds a reference to it and
//    releases the duplicate (which returns to the pool, or stays with
//    whoever else holds it);
//  - shift s > 0 (shifted sharing): makes the later logical block a view
//    over the earlier primary entries k, k + 1 at shift s
//    (BlockTable::MakeView: one reference on each of their blocks) and
//    releases the duplicate likewise.
//
// Refused (FAILED_PRECONDITION, nothing changed):
//  - a block that is not full or not yet written (`immutable_tokens` is how
//    many leading token slots the backend has written and will never write
//    again): the block being appended to is never shared;
//  - a reference that is not earlier than the block (for a view: k + 1 must
//    be), or not full and written; a shift outside [0, block_size).
// Stale (ABORTED, nothing changed): a table entry no longer names the
// physical block the distance was computed for (an earlier decision of the
// same pass moved it), a view's reference entries are no longer primary, or
// a whole-block reference entry has become a view.
//
// Stateless; thread-compatible per table.
#ifndef MEMSHARE_KVMANAGER_REMAPPER_H_
#define MEMSHARE_KVMANAGER_REMAPPER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kvmanager/block_distance.h"
#include "kvmanager/block_table.h"

namespace memshare::kvmanager {

struct RemapDecision {
  int32_t logical = 0;            // the later logical block
  int32_t reference_logical = 0;  // the earlier logical block it joins (a view's k)
  BlockPair pair;                 // physical ids (and shift) that were verified
};

class Remapper {
 public:
  static absl::Status Apply(const RemapDecision& decision, int32_t immutable_tokens,
                            BlockTable* table);
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_REMAPPER_H_
