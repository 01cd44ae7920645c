// The main of a worker process, parameterized by how its engine is made:
// memshare_worker passes the real engine's factory (engine_factory.h), the
// multi-process tests' fake_worker the fake engine's. Parses the flags
// (--help lists them), starts WorkerServer, prints
//   "memshare_worker: serving on port P, metrics on port M"
// on stdout once it serves, and drains on SIGTERM/SIGINT (stops accepting,
// lets open streams finish within --drain_timeout, aborts the rest), then
// returns 0. Returns 1 when it cannot start.
#ifndef MEMSHARE_ENGINE_SERVER_WORKER_MAIN_H_
#define MEMSHARE_ENGINE_SERVER_WORKER_MAIN_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/inference_engine.h"

namespace memshare::engine {

// Called after the flags are parsed (it may read its own flags).
using EngineFactory = std::function<absl::StatusOr<std::unique_ptr<InferenceEngine>>()>;

int RunWorkerMain(int argc, char** argv, const std::string& usage, const EngineFactory& factory);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_WORKER_MAIN_H_
