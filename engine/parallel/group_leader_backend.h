// Rank 0's backend in a tensor-parallel worker group (DESIGN.md §2): the
// Backend the scheduler and the KV manager of rank 0 drive, in front of
// rank 0's own shard backend. Each call is first broadcast to the other
// ranks as a GroupCommand (the step's plan, a copy-on-write, a MemShare
// verification), then run on rank 0's shard; the followers
// (group_follower.h) run the same call on theirs, so the ranks meet in the
// same collectives (the activations' all-reduces inside Forward, the
// distance sums' all-reduce) and hold the same block tables by
// construction.
//
// Distances are all-reduced (AllReduceBlockDistance): the sums cover every
// KV head, so the KV manager decides on the same numbers a single GPU
// would give, and every rank has them.
//
// Consistency: every `consistency_check_interval` steps, and whenever the
// group was idle for `heartbeat_interval`, the ranks all-gather the hash of
// what they executed (group_consistency.h); a difference breaks the group
// with an error naming the ranks. The idle check is also the liveness
// probe: a follower that died or hangs makes it time out.
//
// Failure: a collective that times out or fails breaks the communicator
// (communicator.h); from then on every call returns UNAVAILABLE and
// health() says why, so the worker reports NOT_SERVING. A local error
// other than INVALID_ARGUMENT (which every rank's identical validation
// returns alike, before any collective) also breaks the group: the ranks
// could no longer be in step.
//
// Thread-compatible like every Backend (the scheduler thread), except
// health(); the idle check runs on a thread of its own, serialized with
// the calls by a mutex.
#ifndef MEMSHARE_ENGINE_PARALLEL_GROUP_LEADER_BACKEND_H_
#define MEMSHARE_ENGINE_PARALLEL_GROUP_LEADER_BACKEND_H_

#include <cstdint>
#include <memory>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/backend.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/group_command.h"
#include "engine/parallel/group_consistency.h"

namespace memshare::engine {

class GroupLeaderBackend : public Backend {
 public:
  struct Options {
    // Forward steps between two consistency checks; 0: only the idle ones.
    int32_t consistency_check_interval = 256;
    // A consistency check goes out when no command was sent for this long
    // (the liveness probe of an idle group; the followers' communicator
    // timeout must be longer). Zero: none.
    absl::Duration heartbeat_interval = absl::Seconds(1);
  };

  // `local`: rank 0's shard backend (for a CUDA backend, built on the
  // same group's device collectives); `comm`: rank 0's communicator, rank()
  // == 0. INVALID_ARGUMENT for a negative interval or a communicator of
  // another rank.
  static absl::StatusOr<std::unique_ptr<GroupLeaderBackend>> Create(
      const Options& options, std::unique_ptr<Backend> local, std::shared_ptr<Communicator> comm);

  // Tells the followers to stop (when the group still works) and stops the
  // idle checks.
  ~GroupLeaderBackend() override;
  GroupLeaderBackend(const GroupLeaderBackend&) = delete;
  GroupLeaderBackend& operator=(const GroupLeaderBackend&) = delete;

  const KvCacheSpec& kv_spec() const override { return local_->kv_spec(); }
  int32_t vocab_size() const override { return local_->vocab_size(); }
  bool SamplesOnDevice() const override { return local_->SamplesOnDevice(); }
  bool SupportsShiftedViews() const override { return local_->SupportsShiftedViews(); }
  absl::Status Forward(const StepPlan& plan, StepOutput* output) override ABSL_LOCKS_EXCLUDED(mu_);
  // Pipelined steps where rank 0's shard backend pipelines: Submit
  // broadcasts the plan (fed rows included) and submits it here; the
  // followers submit it on theirs, keeping up to two steps in flight, and
  // meet rank 0 in the steps' collectives in the same order.
  bool SupportsPipelining() const override { return local_->SupportsPipelining(); }
  absl::Status Submit(const StepPlan& plan) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Collect(StepOutput* output) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CopyBlocks(int layer_group,
                          absl::Span<const std::pair<int32_t, int32_t>> src_dst) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ComputeDistanceSums(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status health() const override { return comm_->health(); }

  // Runs a consistency check now.
  absl::Status CheckConsistency() ABSL_LOCKS_EXCLUDED(mu_);

  int64_t steps() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t checks() const ABSL_LOCKS_EXCLUDED(mu_);
  Backend& local() { return *local_; }

 private:
  GroupLeaderBackend(const Options& options, std::unique_ptr<Backend> local,
                     std::shared_ptr<Communicator> comm);
  // Broadcasts `command` (its sequence number filled in).
  absl::Status Send(GroupCommand command) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Broadcasts an encoded command (its sequence number already taken).
  absl::Status SendBytes(std::string bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A step's output is back (Forward or Collect): the consistency check
  // every options_.consistency_check_interval of them.
  absl::Status StepCompleted() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The status a call returns for a local error: the group breaks unless
  // it is INVALID_ARGUMENT.
  absl::Status LocalError(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Broken() const;
  void HeartbeatLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  // Destroyed after local_, whose device collectives may belong to it.
  std::shared_ptr<Communicator> comm_;
  std::unique_ptr<Backend> local_;

  mutable absl::Mutex mu_;
  uint64_t sequence_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;      // submitted
  int64_t completed_ ABSL_GUARDED_BY(mu_) = 0;  // collected
  int64_t checks_ ABSL_GUARDED_BY(mu_) = 0;
  GroupConsistency consistency_ ABSL_GUARDED_BY(mu_);
  absl::Time last_sent_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread heartbeat_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_GROUP_LEADER_BACKEND_H_
