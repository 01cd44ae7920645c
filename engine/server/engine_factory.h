// How memshare_worker makes its engine from its flags: the scheduler-driven
// LlmEngine (engine/cpu_engine.h) on the backend --device picks (CUDA when a
// GPU is usable, else the CPU) for --model, with the KV pool, batching and
// MemShare flags defined in engine_factory.cc (memshare_worker --help lists
// them).
//
// Tensor parallelism (--world_size N > 1, DESIGN.md §2): each of the N
// processes runs memshare_worker with the same model and engine flags and
// its --rank. Rank 0 serves the group rendezvous on --group_address (by
// default its own --address, which the WorkerService takes over once the
// group has formed) and then the WorkerService:
// its engine drives the group through a GroupLeaderBackend. Ranks 1..N-1
// join with --group_leader=HOST:PORT and follow (RunFollowerFromFlags): they
// serve no RPCs and exit when rank 0 shuts the group down (0) or the group
// fails (3).
#ifndef MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_
#define MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_

#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/inference_engine.h"

namespace memshare::engine {

absl::StatusOr<std::unique_ptr<InferenceEngine>> CreateEngineFromFlags();

// INVALID_ARGUMENT naming the flag when the group flags (--world_size,
// --rank, --group_leader, the timeouts and intervals) do not make sense
// together.
absl::Status ValidateGroupFlags();

// For a follower rank (--rank > 0): runs it and returns its exit code (0
// when rank 0 shut the group down, 1 when it could not start); when the
// group fails it exits the process at once with status 3. For rank 0:
// nullopt (serve as usual).
std::optional<int> RunFollowerFromFlags();

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_
