// What rank 0 of a tensor-parallel group broadcasts to the other ranks
// (DESIGN.md §2): one command per backend call, so that every rank runs the
// same work on its shard in the same order. A step's plan travels whole
// (sequences, tokens, positions, block tables with every MemShare remap and
// shifted view already applied, sampling); copy-on-write copies and
// distance verifications travel as their own commands.
//
// Wire format: a small binary encoding in host byte order (every rank of a
// group runs the same build on the same kind of host), checked on decode:
// a truncated or malformed buffer is DATA_LOSS, never a crash. Fields are
// listed once per struct (the Visit functions in group_command.cc), for
// encoding and decoding alike; a static_assert on sizeof(SequenceChunk)
// there fails the build when a field is added to the plan without being
// added to the encoding.
#ifndef MEMSHARE_ENGINE_PARALLEL_GROUP_COMMAND_H_
#define MEMSHARE_ENGINE_PARALLEL_GROUP_COMMAND_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/step_plan.h"
#include "kvmanager/block_distance.h"

namespace memshare::engine {

enum class GroupCommandKind : uint8_t {
  kForward = 1,     // plan: Backend::Forward
  kCopyBlocks = 2,  // layer_group, copies: Backend::CopyBlocks
  kDistance = 3,    // layer_group, pairs: ComputeDistanceSums, then the sums' all-reduce
  kCheck = 4,       // all-gather of every rank's consistency hash (also the idle heartbeat)
  kShutdown = 5,    // the leader stops: followers return
};

const char* GroupCommandKindName(GroupCommandKind kind);

struct GroupCommand {
  GroupCommandKind kind = GroupCommandKind::kCheck;
  // 1, 2, 3, ... in the order the leader sent them; a follower that sees a
  // gap or a repeat stops (a lost or duplicated command).
  uint64_t sequence = 0;
  // kForward steps run so far, this one excluded (for error messages).
  int64_t step = 0;
  StepPlan plan;                                    // kForward
  int32_t layer_group = 0;                          // kCopyBlocks, kDistance
  std::vector<std::pair<int32_t, int32_t>> copies;  // kCopyBlocks: (src, dst)
  std::vector<kvmanager::BlockPair> pairs;          // kDistance
};

std::string EncodeGroupCommand(const GroupCommand& command);

// The same bytes as EncodeGroupCommand of a kForward command with these
// fields, without copying the plan into a GroupCommand first (the leader's
// path for every step).
std::string EncodeForwardCommand(uint64_t sequence, int64_t step, const StepPlan& plan);

// DATA_LOSS for a buffer that is not a whole command of this build's
// format (bad magic or version, unknown kind, truncation, trailing bytes,
// an absurd length).
absl::StatusOr<GroupCommand> DecodeGroupCommand(absl::string_view bytes);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_GROUP_COMMAND_H_
