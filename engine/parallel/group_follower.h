// A follower rank (1 .. N-1) of a tensor-parallel worker group (DESIGN.md
// §2): receives rank 0's commands (group_command.h) and runs each on this
// rank's shard backend, taking part in the same collectives, until rank 0
// shuts the group down or the group fails. Where the shard backend
// pipelines (Backend::SupportsPipelining), a step is submitted as it comes
// and the one before it collected then, so up to two are in flight, as on
// rank 0.
//
// Thread-compatible: Run() on one thread.
#ifndef MEMSHARE_ENGINE_PARALLEL_GROUP_FOLLOWER_H_
#define MEMSHARE_ENGINE_PARALLEL_GROUP_FOLLOWER_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/group_consistency.h"

namespace memshare::engine {

class GroupFollower {
 public:
  // `comm`: this rank's communicator (rank() > 0); `local`: this rank's
  // shard backend (for CUDA, built on the same group's device collectives).
  static absl::StatusOr<std::unique_ptr<GroupFollower>> Create(std::unique_ptr<Backend> local,
                                                               std::shared_ptr<Communicator> comm);

  // Runs commands until rank 0's shutdown (OK) or a failure: the group's
  // error when a collective failed or timed out (rank 0 died, hangs, or
  // broke the group), INTERNAL for a failed consistency check, a command out
  // of order or a local error other than INVALID_ARGUMENT, DATA_LOSS for a
  // command that does not decode. On failure the communicator is broken.
  absl::Status Run();

  int64_t steps() const { return steps_; }
  int64_t checks() const { return checks_; }
  Backend& local() { return *local_; }

 private:
  GroupFollower(std::unique_ptr<Backend> local, std::shared_ptr<Communicator> comm)
      : comm_(std::move(comm)), local_(std::move(local)) {}
  absl::Status Fail(absl::Status why);

  std::shared_ptr<Communicator> comm_;  // outlives local_
  std::unique_ptr<Backend> local_;
  GroupConsistency consistency_;
  uint64_t sequence_ = 0;
  int64_t steps_ = 0;
  int64_t checks_ = 0;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_GROUP_FOLLOWER_H_
