#include "engine/server/engine_factory.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face model directory (config.json, *.safetensors, tokenizer.json) to serve.");

namespace memshare::engine {

absl::StatusOr<std::unique_ptr<InferenceEngine>> CreateEngineFromFlags() {
  // HOOK(llm_engine): construct the scheduler-driven engine of
  // engine/llm_engine.h from --model (and its own flags) here.
  return absl::UnimplementedError(absl::StrCat(
      "the scheduler-driven engine (engine/llm_engine.h) is not wired into memshare_worker "
      "yet (engine/server/engine_factory.cc); --model=",
      absl::GetFlag(FLAGS_model)));
}

}  // namespace memshare::engine
