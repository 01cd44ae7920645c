// One process's membership of a tensor-parallel worker group (DESIGN.md §2):
// rank 0 creates the NCCL unique id and serves it over gRPC
// (GroupRendezvous, proto/memshare/v1/group.proto) on a server of its own;
// the other ranks, on this host or others, join with the leader's address,
// their rank and the world size. Rank 0 waits until every rank is in; then
// every rank builds its NcclCommunicator. Forming fails with a clear error,
// never hangs: each wait has a deadline.
//
// Thread-safe after Form (the communicator is thread-compatible, see
// nccl_communicator.h).
#ifndef MEMSHARE_ENGINE_PARALLEL_TP_GROUP_H_
#define MEMSHARE_ENGINE_PARALLEL_TP_GROUP_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/nccl_communicator.h"

namespace grpc {
class Server;
}

namespace memshare::engine {

class GroupRendezvous;

class TpGroup {
 public:
  struct Options {
    // This process's rank and the group's size (>= 2; a single GPU needs no
    // group).
    int rank = 0;
    int world_size = 2;
    // Ranks > 0: host:port of rank 0's rendezvous (its --group_address).
    std::string leader_address;
    // Rank 0: where the rendezvous listens; port 0 lets the OS choose (see
    // on_listening).
    std::string listen_address = "0.0.0.0:0";
    // A rank of another group (its name set and different) is refused.
    std::string group_name;
    // CUDA device of this rank; -1: rank % the number of visible devices.
    int cuda_device = -1;
    // How long forming may take: rank 0 waiting for every rank to join, a
    // rank waiting for rank 0 to answer, the NCCL initialization.
    absl::Duration formation_timeout = absl::Minutes(5);
    // Longest wait of any collective once formed (NcclCommunicator).
    absl::Duration collective_timeout = absl::Seconds(30);
    // Rank 0: called once the rendezvous listens, with its port, before
    // waiting for the other ranks.
    std::function<void(int port)> on_listening;
  };

  // INVALID_ARGUMENT for bad options (a rank outside 0 .. world_size-1, no
  // leader address for a rank > 0); UNAVAILABLE when the rendezvous cannot
  // listen; DEADLINE_EXCEEDED naming the missing ranks or the leader; the
  // leader's refusal (another group, world size or taken rank); NCCL's
  // errors.
  static absl::StatusOr<std::shared_ptr<TpGroup>> Form(const Options& options);

  ~TpGroup();
  TpGroup(const TpGroup&) = delete;
  TpGroup& operator=(const TpGroup&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  int cuda_device() const { return cuda_device_; }
  NcclCommunicator& nccl() { return *comm_; }
  // The communicator, sharing ownership of the whole group (the rendezvous
  // server included).
  static std::shared_ptr<Communicator> SharedCommunicator(const std::shared_ptr<TpGroup>& group);

  // Rank 0: stops answering on the rendezvous address (rejoining ranks are
  // refused from then on), e.g. so that the worker's gRPC server can take
  // the same port. Nothing on other ranks.
  void StopRendezvous();

  // Every rank passes a description of what must be equal across the group
  // (model, shapes, batching limits); FAILED_PRECONDITION naming the ranks
  // whose description differs from rank 0's.
  absl::Status CheckSameConfig(absl::string_view description);

 private:
  explicit TpGroup(const Options& options);

  const Options options_;
  int cuda_device_ = 0;
  std::unique_ptr<GroupRendezvous> rendezvous_;  // rank 0
  std::unique_ptr<grpc::Server> server_;         // rank 0
  std::unique_ptr<NcclCommunicator> comm_;
};

// Options that every rank of a group must share, as text for
// TpGroup::CheckSameConfig (the values a shape or a schedule depends on).
std::string DescribeForGroup(absl::string_view model, absl::string_view options);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_TP_GROUP_H_
