#include "engine/parallel/group_leader_backend.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/parallel/all_reduce_block_distance.h"

namespace memshare::engine {

absl::StatusOr<std::unique_ptr<GroupLeaderBackend>> GroupLeaderBackend::Create(
    const Options& options, std::unique_ptr<Backend> local, std::shared_ptr<Communicator> comm) {
  if (local == nullptr || comm == nullptr) {
    return absl::InvalidArgumentError("group leader: a local backend and a communicator");
  }
  if (comm->rank() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group leader: the communicator is rank ", comm->rank(), ", not 0"));
  }
  if (options.consistency_check_interval < 0 || options.heartbeat_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "group leader: consistency_check_interval and heartbeat_interval must be >= 0");
  }
  std::unique_ptr<GroupLeaderBackend> b(
      new GroupLeaderBackend(options, std::move(local), std::move(comm)));
  if (options.heartbeat_interval > absl::ZeroDuration() && b->comm_->world_size() > 1) {
    b->heartbeat_ = std::thread([p = b.get()] { p->HeartbeatLoop(); });
  }
  return b;
}

GroupLeaderBackend::GroupLeaderBackend(const Options& options, std::unique_ptr<Backend> local,
                                       std::shared_ptr<Communicator> comm)
    : options_(options),
      comm_(std::move(comm)),
      local_(std::move(local)),
      last_sent_(absl::Now()) {}

GroupLeaderBackend::~GroupLeaderBackend() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (heartbeat_.joinable()) heartbeat_.join();
  absl::MutexLock lock(&mu_);
  if (comm_->health().ok()) {
    GroupCommand shutdown;
    shutdown.kind = GroupCommandKind::kShutdown;
    shutdown.step = steps_;
    Send(std::move(shutdown)).IgnoreError();
  }
}

absl::Status GroupLeaderBackend::Broken() const {
  const absl::Status h = comm_->health();
  return absl::UnavailableError(absl::StrCat("tensor-parallel group failed: ", h.message()));
}

absl::Status GroupLeaderBackend::Send(GroupCommand command) {
  if (!comm_->health().ok()) return Broken();
  command.sequence = ++sequence_;
  return SendBytes(EncodeGroupCommand(command));
}

absl::Status GroupLeaderBackend::SendBytes(std::string bytes) {
  last_sent_ = absl::Now();
  if (!comm_->Broadcast(&bytes).ok()) return Broken();
  return absl::OkStatus();
}

absl::Status GroupLeaderBackend::LocalError(absl::Status status) {
  if (status.ok() || absl::IsInvalidArgument(status)) return status;
  if (comm_->health().ok()) {
    comm_->Abort(absl::InternalError(
        absl::StrCat("rank 0 failed outside the collectives: ", status.message())));
  }
  return Broken();
}

absl::Status GroupLeaderBackend::Forward(const StepPlan& plan, StepOutput* output) {
  absl::MutexLock lock(&mu_);
  if (!comm_->health().ok()) return Broken();
  if (absl::Status s = SendBytes(EncodeForwardCommand(++sequence_, steps_, plan)); !s.ok()) {
    return s;
  }
  consistency_.AddPlan(plan);
  absl::Status s = local_->Forward(plan, output);
  if (!comm_->health().ok()) return Broken();
  if (!s.ok()) return LocalError(std::move(s));
  ++steps_;
  return StepCompleted();
}

absl::Status GroupLeaderBackend::StepCompleted() {
  ++completed_;
  if (options_.consistency_check_interval > 0 &&
      completed_ % options_.consistency_check_interval == 0) {
    return CheckLocked();
  }
  return absl::OkStatus();
}

absl::Status GroupLeaderBackend::Submit(const StepPlan& plan) {
  absl::MutexLock lock(&mu_);
  if (!comm_->health().ok()) return Broken();
  if (absl::Status s = SendBytes(EncodeForwardCommand(++sequence_, steps_, plan)); !s.ok()) {
    return s;
  }
  consistency_.AddPlan(plan);
  absl::Status s = local_->Submit(plan);
  if (!comm_->health().ok()) return Broken();
  if (!s.ok()) return LocalError(std::move(s));
  ++steps_;
  return absl::OkStatus();
}

absl::Status GroupLeaderBackend::Collect(StepOutput* output) {
  absl::MutexLock lock(&mu_);
  if (!comm_->health().ok()) return Broken();
  absl::Status s = local_->Collect(output);
  if (!comm_->health().ok()) return Broken();
  if (!s.ok()) return LocalError(std::move(s));
  return StepCompleted();
}

absl::Status GroupLeaderBackend::CopyBlocks(int layer_group,
                                            absl::Span<const std::pair<int32_t, int32_t>> src_dst) {
  absl::MutexLock lock(&mu_);
  GroupCommand command;
  command.kind = GroupCommandKind::kCopyBlocks;
  command.step = steps_;
  command.layer_group = layer_group;
  command.copies.assign(src_dst.begin(), src_dst.end());
  if (absl::Status s = Send(std::move(command)); !s.ok()) return s;
  consistency_.AddCopies(layer_group, src_dst);
  absl::Status s = local_->CopyBlocks(layer_group, src_dst);
  if (!comm_->health().ok()) return Broken();
  return LocalError(std::move(s));
}

absl::Status GroupLeaderBackend::ComputeDistanceSums(int layer_group,
                                                     absl::Span<const kvmanager::BlockPair> pairs,
                                                     absl::Span<kvmanager::DistanceSums> out) {
  absl::MutexLock lock(&mu_);
  GroupCommand command;
  command.kind = GroupCommandKind::kDistance;
  command.step = steps_;
  command.layer_group = layer_group;
  command.pairs.assign(pairs.begin(), pairs.end());
  if (absl::Status s = Send(std::move(command)); !s.ok()) return s;
  AllReduceBlockDistance distance(local_.get(), comm_.get());
  absl::Status s = distance.ComputeDistanceSums(layer_group, pairs, out);
  if (!comm_->health().ok()) return Broken();
  if (!s.ok()) return LocalError(std::move(s));
  consistency_.AddDistances(layer_group, pairs, out);
  return absl::OkStatus();
}

absl::Status GroupLeaderBackend::CheckConsistency() {
  absl::MutexLock lock(&mu_);
  return CheckLocked();
}

absl::Status GroupLeaderBackend::CheckLocked() {
  GroupCommand command;
  command.kind = GroupCommandKind::kCheck;
  command.step = steps_;
  if (absl::Status s = Send(std::move(command)); !s.ok()) return s;
  std::vector<uint64_t> hashes;
  if (!comm_->AllGather(consistency_.hash(), &hashes).ok()) return Broken();
  ++checks_;
  absl::Status same = CompareGroupHashes(hashes, steps_);
  if (!same.ok()) {
    comm_->Abort(same);
    return same;
  }
  return absl::OkStatus();
}

int64_t GroupLeaderBackend::steps() const {
  absl::MutexLock lock(&mu_);
  return steps_;
}

int64_t GroupLeaderBackend::checks() const {
  absl::MutexLock lock(&mu_);
  return checks_;
}

void GroupLeaderBackend::HeartbeatLoop() {
  absl::MutexLock lock(&mu_);
  auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
  while (true) {
    const absl::Duration wait = last_sent_ + options_.heartbeat_interval - absl::Now();
    if (mu_.AwaitWithTimeout(absl::Condition(&stop), std::max(wait, absl::Milliseconds(1)))) break;
    if (absl::Now() - last_sent_ < options_.heartbeat_interval) continue;
    if (!comm_->health().ok()) break;
    CheckLocked().IgnoreError();  // a failure is kept as the communicator's health
  }
}

}  // namespace memshare::engine
