#include "engine/parallel/group_rendezvous.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"

namespace memshare::engine {

using memshare::v1::GroupStatusRequest;
using memshare::v1::GroupStatusResponse;
using memshare::v1::JoinRequest;
using memshare::v1::JoinResponse;

absl::StatusOr<std::unique_ptr<GroupRendezvous>> GroupRendezvous::Create(const Options& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size must be >= 1, got ", options.world_size));
  }
  if (options.unique_id.empty()) {
    return absl::InvalidArgumentError("unique_id must not be empty");
  }
  std::random_device rd;
  const uint64_t epoch = (uint64_t{rd()} << 32) ^ rd() ^ 1;  // never 0
  return std::unique_ptr<GroupRendezvous>(new GroupRendezvous(options, epoch));
}

GroupRendezvous::GroupRendezvous(const Options& options, uint64_t epoch)
    : options_(options), epoch_(epoch) {
  members_[0] = options.leader_member;
}

bool GroupRendezvous::AllJoined() const {
  return static_cast<int>(members_.size()) == options_.world_size;
}

bool GroupRendezvous::ready() const {
  absl::MutexLock lock(&mu_);
  return AllJoined();
}

absl::Status GroupRendezvous::WaitReady(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto all_joined = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return AllJoined(); };
  if (mu_.AwaitWithTimeout(absl::Condition(&all_joined), timeout)) return absl::OkStatus();
  std::vector<int> missing;
  for (int r = 0; r < options_.world_size; ++r) {
    if (!members_.contains(r)) missing.push_back(r);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("tensor-parallel group not formed after ", absl::FormatDuration(timeout),
                   ": ranks ", absl::StrJoin(missing, ","), " of ", options_.world_size,
                   " have not joined"));
}

absl::Status GroupRendezvous::Register(const JoinRequest& request) {
  if (request.world_size() != options_.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("world_size: rank started with ",
                                                   request.world_size(), ", leader has ",
                                                   options_.world_size));
  }
  if (request.rank() < 1 || request.rank() >= options_.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank: must be in 1..", options_.world_size - 1, ", got ", request.rank()));
  }
  if (!request.group_name().empty() && !options_.group_name.empty() &&
      request.group_name() != options_.group_name) {
    return absl::FailedPreconditionError(absl::StrCat("group_name: leader serves group '",
                                                      options_.group_name, "', rank asked for '",
                                                      request.group_name(), "'"));
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = members_.emplace(request.rank(), request.member());
  if (!inserted && it->second != request.member()) {
    return absl::AlreadyExistsError(absl::StrCat("rank ", request.rank(), " already joined as '",
                                                 it->second, "'"));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* GroupRendezvous::Join(grpc::CallbackServerContext* context,
                                                const JoinRequest* request,
                                                JoinResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Status status = Register(*request);
  if (status.ok()) {
    response->set_nccl_unique_id(options_.unique_id);
    response->set_world_size(options_.world_size);
    response->set_epoch(epoch_);
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* GroupRendezvous::GetGroupStatus(grpc::CallbackServerContext* context,
                                                          const GroupStatusRequest* /*request*/,
                                                          GroupStatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  {
    absl::MutexLock lock(&mu_);
    response->set_world_size(options_.world_size);
    for (const auto& [rank, member] : members_) response->add_joined_ranks(rank);
    response->set_ready(AllJoined());
    response->set_epoch(epoch_);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

absl::StatusOr<JoinResponse> JoinGroup(const JoinOptions& options) {
  auto channel = grpc::CreateChannel(options.leader_address, grpc::InsecureChannelCredentials());
  auto stub = memshare::v1::GroupService::NewStub(channel);
  JoinRequest request;
  request.set_rank(options.rank);
  request.set_world_size(options.world_size);
  request.set_group_name(options.group_name);
  request.set_member(options.member);
  const absl::Time deadline = absl::Now() + options.timeout;
  absl::Duration backoff = absl::Milliseconds(50);
  grpc::Status last;
  while (true) {
    grpc::ClientContext context;
    const absl::Time attempt_deadline = std::min(deadline, absl::Now() + absl::Seconds(5));
    context.set_deadline(absl::ToChronoTime(attempt_deadline));
    context.set_wait_for_ready(true);
    JoinResponse response;
    last = stub->Join(&context, request, &response);
    if (last.ok()) return response;
    if (last.error_code() != grpc::StatusCode::UNAVAILABLE &&
        last.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return FromGrpcStatus(last);
    }
    if (absl::Now() + backoff >= deadline) break;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
  return absl::DeadlineExceededError(absl::StrCat("joining leader ", options.leader_address,
                                                  " as rank ", options.rank, " timed out after ",
                                                  absl::FormatDuration(options.timeout), ": ",
                                                  last.error_message()));
}

}  // namespace memshare::engine
