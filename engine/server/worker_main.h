// The main of a worker process, parameterized by how its engine is made:
// memshare_worker passes the real engine's factory (engine_factory.h), the
// multi-process tests' fake_worker the fake engine's. Parses the flags
// (--help lists them; dashed names like --world-size are accepted too),
// starts WorkerServer, prints
//   "memshare_worker: serving on port P, metrics on port M"
// on stdout once it serves, and drains on SIGTERM/SIGINT (stops accepting,
// lets open streams finish within --drain_timeout, aborts the rest), then
// returns 0. Returns 1 when it cannot start.
//
// When the engine's health() fails (its tensor-parallel group broke), the
// worker reports NOT_SERVING at once, waits --unhealthy_exit_delay (so the
// router's health polls see it), drains briefly and exits with status 3
// (_exit: tearing down a broken NCCL group can block).
#ifndef MEMSHARE_ENGINE_SERVER_WORKER_MAIN_H_
#define MEMSHARE_ENGINE_SERVER_WORKER_MAIN_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/inference_engine.h"

namespace memshare::engine {

// Called after the flags are parsed (it may read its own flags).
using EngineFactory = std::function<absl::StatusOr<std::unique_ptr<InferenceEngine>>()>;

// Called after the flags are parsed, before the engine is made: a value is
// the process's exit code instead of serving (a follower rank of a
// tensor-parallel group); nullopt: serve.
using AlternativeMain = std::function<std::optional<int>()>;

int RunWorkerMain(int argc, char** argv, const std::string& usage, const EngineFactory& factory,
                  const AlternativeMain& alternative = nullptr);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_WORKER_MAIN_H_
