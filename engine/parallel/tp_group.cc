#include "engine/parallel/tp_group.h"

#include <cuda_runtime_api.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>
#include <xxhash.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/parallel/group_rendezvous.h"

namespace memshare::engine {

std::string DescribeForGroup(absl::string_view model, absl::string_view options) {
  return absl::StrCat("model=", model, ";", options);
}

absl::StatusOr<std::shared_ptr<TpGroup>> TpGroup::Form(const Options& o) {
  if (o.world_size < 2 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("--rank ", o.rank, " --world_size ",
                                                   o.world_size,
                                                   ": need world_size >= 2 and 0 <= rank < "
                                                   "world_size"));
  }
  if (o.rank > 0 && o.leader_address.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--group_leader: rank ", o.rank, " needs rank 0's host:port"));
  }
  // Before any NCCL call and before this function starts gRPC threads.
  NcclCommunicator::PrepareEnvironment(/*allow_nvls=*/false);
  std::shared_ptr<TpGroup> g(new TpGroup(o));
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError("tensor parallelism needs a CUDA device");
  }
  g->cuda_device_ = o.cuda_device >= 0 ? o.cuda_device : o.rank % devices;
  if (g->cuda_device_ >= devices) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", g->cuda_device_, ": only ", devices, " visible"));
  }
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  const std::string member =
      absl::StrCat(host, ":", getpid(), " gpu ", g->cuda_device_, " rank ", o.rank);

  std::string id;
  if (o.rank == 0) {
    absl::StatusOr<std::string> fresh = NcclCommunicator::NewUniqueId();
    if (!fresh.ok()) return fresh.status();
    id = *fresh;
    GroupRendezvous::Options ro;
    ro.world_size = o.world_size;
    ro.group_name = o.group_name;
    ro.unique_id = id;
    ro.leader_member = member;
    absl::StatusOr<std::unique_ptr<GroupRendezvous>> rendezvous = GroupRendezvous::Create(ro);
    if (!rendezvous.ok()) return rendezvous.status();
    g->rendezvous_ = *std::move(rendezvous);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(o.listen_address, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(g->rendezvous_.get());
    g->server_ = builder.BuildAndStart();
    if (g->server_ == nullptr || port == 0) {
      return absl::UnavailableError(
          absl::StrCat("group rendezvous: cannot listen on ", o.listen_address));
    }
    if (o.on_listening) o.on_listening(port);
    if (absl::Status s = g->rendezvous_->WaitReady(o.formation_timeout); !s.ok()) return s;
  } else {
    JoinOptions jo;
    jo.leader_address = o.leader_address;
    jo.rank = o.rank;
    jo.world_size = o.world_size;
    jo.group_name = o.group_name;
    jo.member = member;
    jo.timeout = o.formation_timeout;
    absl::StatusOr<v1::JoinResponse> joined = JoinGroup(jo);
    if (!joined.ok()) return joined.status();
    id = joined->nccl_unique_id();
  }
  NcclCommunicator::Options no;
  no.rank = o.rank;
  no.world_size = o.world_size;
  no.unique_id = id;
  no.cuda_device = g->cuda_device_;
  no.timeout = o.collective_timeout;
  no.init_timeout = o.formation_timeout;
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm = NcclCommunicator::Create(no);
  if (!comm.ok()) return comm.status();
  g->comm_ = *std::move(comm);
  return g;
}

TpGroup::TpGroup(const Options& options) : options_(options) {}

TpGroup::~TpGroup() {
  comm_.reset();
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

void TpGroup::StopRendezvous() {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  server_.reset();
}

std::shared_ptr<Communicator> TpGroup::SharedCommunicator(const std::shared_ptr<TpGroup>& group) {
  return std::shared_ptr<Communicator>(group, group->comm_.get());
}

absl::Status TpGroup::CheckSameConfig(absl::string_view description) {
  const uint64_t mine = XXH64(description.data(), description.size(), 0);
  std::vector<uint64_t> all;
  if (absl::Status s = comm_->AllGather(mine, &all); !s.ok()) return s;
  std::vector<int> differ;
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] != all[0]) differ.push_back(static_cast<int>(r));
  }
  if (differ.empty()) return absl::OkStatus();
  const absl::Status s = absl::FailedPreconditionError(absl::StrCat(
      "tensor-parallel group: rank(s) ", absl::StrJoin(differ, ", "),
      " were started with another model or options than rank 0 (this rank: ", description, ")"));
  comm_->Abort(s);
  return s;
}

}  // namespace memshare::engine
