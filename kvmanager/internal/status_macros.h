// Status helpers private to kvmanager.
#ifndef MEMSHARE_KVMANAGER_INTERNAL_STATUS_MACROS_H_
#define MEMSHARE_KVMANAGER_INTERNAL_STATUS_MACROS_H_

#include <cassert>
#include <cstdio>

#include "absl/status/status.h"

// Returns from the enclosing function when `expr` is not OK.
#define KV_RETURN_IF_ERROR(expr)              \
  do {                                        \
    const ::absl::Status kv_status_ = (expr); \
    if (!kv_status_.ok()) return kv_status_;  \
  } while (0)

namespace memshare::kvmanager::internal {

// Misuse of a reference handle (double release, reference to a free block,
// id outside the pool) is a bug in the caller, never something the outside
// world controls. Debug builds stop at once so the bug is seen where it
// happens; release builds (NDEBUG) hand the status back so the caller can fail
// the one request instead of the process.
inline absl::Status Misuse(absl::Status status) {
#ifndef NDEBUG
  std::fprintf(stderr, "kvmanager handle misuse: %s\n", status.ToString().c_str());
  assert(false && "kvmanager handle misuse");
#endif
  return status;
}

}  // namespace memshare::kvmanager::internal

#endif  // MEMSHARE_KVMANAGER_INTERNAL_STATUS_MACROS_H_
