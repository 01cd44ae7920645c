// How memshare_worker makes its engine from its flags.
//
// HOOK: the scheduler-driven engine (engine/llm_engine.h) is wired here once
// it is on main; until then CreateEngineFromFlags answers UNIMPLEMENTED and
// memshare_worker exits with that message. The serving layer and its tests
// run on the fake engine meanwhile (engine/server/testing:fake_worker).
#ifndef MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_
#define MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/inference_engine.h"

namespace memshare::engine {

absl::StatusOr<std::unique_ptr<InferenceEngine>> CreateEngineFromFlags();

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_ENGINE_FACTORY_H_
