// Tensor-parallel group formation over the gRPC control plane (DESIGN.md §2).
//
// Rank 0 (the leader) creates the NCCL unique id, constructs a
// GroupRendezvous with it and registers it on its gRPC server. Every other
// rank calls JoinGroup(leader address, ...) which retries until the leader
// answers, and receives the id. The leader waits in WaitReady until all ranks
// have joined; after that every rank calls ncclCommInitRank.
//
// The id is opaque bytes here: this file knows nothing of NCCL, so group
// formation is tested without a GPU.
//
// Thread-safety: GroupRendezvous is thread-safe (RPCs arrive on gRPC threads
// while the leader waits in WaitReady). JoinGroup is a free function.
#ifndef MEMSHARE_ENGINE_PARALLEL_GROUP_RENDEZVOUS_H_
#define MEMSHARE_ENGINE_PARALLEL_GROUP_RENDEZVOUS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/memshare/v1/group.grpc.pb.h"

namespace memshare::engine {

class GroupRendezvous final : public memshare::v1::GroupService::CallbackService {
 public:
  struct Options {
    // Number of ranks in the group, >= 1.
    int world_size = 1;
    // Ranks must present this name (if both sides set one).
    std::string group_name;
    // Opaque communicator id handed to every rank (the NCCL unique id).
    std::string unique_id;
    // Description of the leader process, for logs and status.
    std::string leader_member = "rank0";
  };

  static absl::StatusOr<std::unique_ptr<GroupRendezvous>> Create(const Options& options);

  GroupRendezvous(const GroupRendezvous&) = delete;
  GroupRendezvous& operator=(const GroupRendezvous&) = delete;

  // Blocks until every rank has joined (OK) or `timeout` passes
  // (DEADLINE_EXCEEDED naming the missing ranks).
  absl::Status WaitReady(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  bool ready() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t epoch() const { return epoch_; }

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const memshare::v1::JoinRequest* request,
                                 memshare::v1::JoinResponse* response) override;
  grpc::ServerUnaryReactor* GetGroupStatus(grpc::CallbackServerContext* context,
                                           const memshare::v1::GroupStatusRequest* request,
                                           memshare::v1::GroupStatusResponse* response) override;

 private:
  explicit GroupRendezvous(const Options& options, uint64_t epoch);
  absl::Status Register(const memshare::v1::JoinRequest& request) ABSL_LOCKS_EXCLUDED(mu_);
  bool AllJoined() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const uint64_t epoch_;
  mutable absl::Mutex mu_;
  // rank -> member description; always holds rank 0 (the leader).
  std::map<int, std::string> members_ ABSL_GUARDED_BY(mu_);
};

struct JoinOptions {
  std::string leader_address;  // host:port of the leader's gRPC server
  int rank = 1;
  int world_size = 2;
  std::string group_name;
  std::string member;
  // How long to keep retrying while the leader is not up yet.
  absl::Duration timeout = absl::Seconds(60);
};

// Joins the group; retries UNAVAILABLE (leader not started) with backoff until
// options.timeout. Other errors (wrong world size, taken rank) return at once.
absl::StatusOr<memshare::v1::JoinResponse> JoinGroup(const JoinOptions& options);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_GROUP_RENDEZVOUS_H_
