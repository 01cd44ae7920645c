#include "engine/parallel/group_follower.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/parallel/all_reduce_block_distance.h"
#include "engine/parallel/group_command.h"

namespace memshare::engine {

absl::StatusOr<std::unique_ptr<GroupFollower>> GroupFollower::Create(
    std::unique_ptr<Backend> local, std::shared_ptr<Communicator> comm) {
  if (local == nullptr || comm == nullptr) {
    return absl::InvalidArgumentError("group follower: a local backend and a communicator");
  }
  if (comm->rank() == 0) {
    return absl::InvalidArgumentError("group follower: rank 0 leads, it does not follow");
  }
  return std::unique_ptr<GroupFollower>(new GroupFollower(std::move(local), std::move(comm)));
}

absl::Status GroupFollower::Fail(absl::Status why) {
  comm_->Abort(why);
  return comm_->health();
}

absl::Status GroupFollower::Run() {
  std::string bytes;
  StepOutput output;
  std::vector<kvmanager::DistanceSums> sums;
  const std::string me = absl::StrCat("rank ", comm_->rank());
  const bool pipelines = local_->SupportsPipelining();
  int in_flight = 0;  // steps submitted and not collected (pipelines only)
  while (true) {
    if (absl::Status s = comm_->Broadcast(&bytes); !s.ok()) return comm_->health();
    absl::StatusOr<GroupCommand> command = DecodeGroupCommand(bytes);
    if (!command.ok()) return Fail(command.status());
    if (command->sequence != sequence_ + 1) {
      return Fail(
          absl::InternalError(absl::StrCat(me, ": received command ", command->sequence, " after ",
                                           sequence_, " (a command was lost or repeated)")));
    }
    sequence_ = command->sequence;
    absl::Status local;
    switch (command->kind) {
      case GroupCommandKind::kForward:
        consistency_.AddPlan(command->plan);
        if (pipelines) {
          // Submitted, and the step before collected once this one is
          // queued: the device always has the next step (rank 0 submits
          // step N + 1 before it collects N).
          local = local_->Submit(command->plan);
          if (local.ok()) {
            ++steps_;
            if (++in_flight == 2) {
              local = local_->Collect(&output);
              --in_flight;
            }
          }
        } else {
          local = local_->Forward(command->plan, &output);
          if (local.ok()) ++steps_;
        }
        break;
      case GroupCommandKind::kCopyBlocks:
        consistency_.AddCopies(command->layer_group, command->copies);
        local = local_->CopyBlocks(command->layer_group, command->copies);
        break;
      case GroupCommandKind::kDistance: {
        sums.assign(command->pairs.size(), {});
        AllReduceBlockDistance distance(local_.get(), comm_.get());
        local = distance.ComputeDistanceSums(command->layer_group, command->pairs,
                                             absl::MakeSpan(sums));
        if (local.ok()) consistency_.AddDistances(command->layer_group, command->pairs, sums);
        break;
      }
      case GroupCommandKind::kCheck: {
        std::vector<uint64_t> hashes;
        if (!comm_->AllGather(consistency_.hash(), &hashes).ok()) return comm_->health();
        ++checks_;
        if (absl::Status same = CompareGroupHashes(hashes, command->step); !same.ok()) {
          return Fail(same);
        }
        break;
      }
      case GroupCommandKind::kShutdown:
        for (; in_flight > 0; --in_flight) {
          if (absl::Status c = local_->Collect(&output); !c.ok()) return c;
        }
        return absl::OkStatus();
    }
    if (!comm_->health().ok()) return comm_->health();
    // INVALID_ARGUMENT: rank 0's identical validation refused the same call
    // before any collective; anything else leaves the ranks out of step.
    if (!local.ok() && !absl::IsInvalidArgument(local)) {
      return Fail(absl::InternalError(absl::StrCat(me, ": ", GroupCommandKindName(command->kind),
                                                   " of step ", command->step,
                                                   " failed: ", local.message())));
    }
  }
}

}  // namespace memshare::engine
