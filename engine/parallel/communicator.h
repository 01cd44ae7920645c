// The host-side collectives of a tensor-parallel worker group (DESIGN.md
// §2): what rank 0's leader backend and the followers of ranks 1..N-1 use to
// agree on each step (the broadcast of commands, the all-reduce of MemShare
// distance sums, the all-gather of block-table hashes). Implemented over
// NCCL (nccl_communicator.h) and, for tests without a GPU, between threads
// of one process (testing/local_communicator.h).
//
// Every rank calls the same collectives in the same order. Each call is
// bounded: a peer that died or hangs makes it fail (DEADLINE_EXCEEDED or
// UNAVAILABLE) within the communicator's timeout instead of blocking
// forever, and the communicator is then broken for good: health() returns
// the first failure and every later call returns it at once.
//
// Thread-compatible for the collectives (one caller at a time, every rank
// in the same order); health() and Abort() are thread-safe.
#ifndef MEMSHARE_ENGINE_PARALLEL_COMMUNICATOR_H_
#define MEMSHARE_ENGINE_PARALLEL_COMMUNICATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace memshare::engine {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Rank 0's `bytes` reach every rank: on the other ranks *bytes is
  // replaced (any length; their input is ignored).
  virtual absl::Status Broadcast(std::string* bytes) = 0;

  // Element-wise sum over the ranks, in place. Every rank receives the same
  // values, bit for bit. `values` has the same length on every rank.
  virtual absl::Status AllReduceSum(absl::Span<double> values) = 0;

  // (*out)[r] = rank r's `value`, on every rank.
  virtual absl::Status AllGather(uint64_t value, std::vector<uint64_t>* out) = 0;

  // OK while the group works; afterwards the first failure (a timeout, a
  // peer's error, an Abort). Thread-safe.
  virtual absl::Status health() const = 0;

  // Breaks the group with `why` (kept as health() unless it already
  // failed): a collective in flight returns within a bounded time, later
  // ones fail at once. Thread-safe; idempotent.
  virtual void Abort(const absl::Status& why) = 0;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_COMMUNICATOR_H_
