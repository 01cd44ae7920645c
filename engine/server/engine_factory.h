// How memshare_worker makes its engine from its flags: the scheduler-driven
// LlmEngine (engine/cpu_engine.h) on the backend --device picks (CUDA when a
// GPU is usable, else the CPU) for --model, with the
// KV pool, batching and MemShare flags defined in engine_factory.cc
// (memshare_worker --help lists them).
#ifndef MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_
#define MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/inference_engine.h"

namespace memshare::engine {

absl::StatusOr<std::unique_ptr<InferenceEngine>> CreateEngineFromFlags();

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_
