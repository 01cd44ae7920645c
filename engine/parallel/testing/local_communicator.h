// Communicator between the threads of one process (communicator.h): the
// ranks of a tensor-parallel group as threads, so that the group's control
// logic (command broadcast, distance all-reduce, consistency check, failure
// handling) is tested without GPUs. Collectives meet by call order: the k-th
// call of every rank forms the k-th collective; a rank that calls another
// kind of collective than the others breaks the group (INTERNAL).
//
// Kill(rank) makes a rank behave like a dead process: its own calls fail at
// once and the others' collectives time out.
//
// LocalGroup is thread-safe; each rank's communicator is used by one thread
// (health() and Abort() from any).
#ifndef MEMSHARE_ENGINE_PARALLEL_TESTING_LOCAL_COMMUNICATOR_H_
#define MEMSHARE_ENGINE_PARALLEL_TESTING_LOCAL_COMMUNICATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/parallel/communicator.h"

namespace memshare::engine {

class LocalGroup : public std::enable_shared_from_this<LocalGroup> {
 public:
  struct Options {
    // Ranks, >= 1.
    int world_size = 2;
    // How long a collective waits for the other ranks.
    absl::Duration timeout = absl::Seconds(5);
  };

  static absl::StatusOr<std::shared_ptr<LocalGroup>> Create(const Options& options);

  // The communicator of `rank` (0 .. world_size-1), once per rank; it keeps
  // the group alive.
  std::unique_ptr<Communicator> Join(int rank);

  // `rank` stops taking part: its calls fail, the others' time out.
  void Kill(int rank) ABSL_LOCKS_EXCLUDED(mu_);

  int world_size() const { return options_.world_size; }

 private:
  friend class LocalCommunicator;
  enum class Kind { kBroadcast, kAllReduceSum, kAllGather };
  struct Op {
    Kind kind = Kind::kBroadcast;
    std::vector<std::string> inputs;  // per rank
    int arrived = 0;
    int left = 0;  // ranks that took the result
  };

  explicit LocalGroup(const Options& options);
  // Runs the collective number `index` for `rank`: every rank's input, in
  // rank order, once all arrived.
  absl::StatusOr<std::vector<std::string>> Collective(int rank, uint64_t index, Kind kind,
                                                      std::string input) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Health(int rank) const ABSL_LOCKS_EXCLUDED(mu_);
  void Fail(int rank, const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, Op> ops_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> killed_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Status> health_ ABSL_GUARDED_BY(mu_);  // per rank
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_TESTING_LOCAL_COMMUNICATOR_H_
