// fake_worker: memshare_worker's main over the fake engine, for the
// multi-process tests and the load generator until (and besides) the real
// engine.
#include "absl/flags/flag.h"
#include "engine/server/testing/fake_inference_engine.h"
#include "engine/server/worker_main.h"

ABSL_FLAG(absl::Duration, fake_step_interval, absl::Milliseconds(1),
          "Fake engine: time between steps (one token per running request per step).");
ABSL_FLAG(int32_t, fake_max_running, 16, "Fake engine: requests in the running batch.");
ABSL_FLAG(int32_t, fake_max_waiting, 256,
          "Fake engine: queued requests beyond this get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, fake_kv_blocks, 4096, "Fake engine: KV blocks of the pool.");
ABSL_FLAG(int32_t, fake_max_model_len, 4096, "Fake engine: context length.");
ABSL_FLAG(std::string, fake_model_id, "fake-model", "Fake engine: model id it reports.");

int main(int argc, char** argv) {
  return memshare::engine::RunWorkerMain(
      argc, argv, "memshare_worker over the deterministic fake engine (tests).",
      []() -> absl::StatusOr<std::unique_ptr<memshare::engine::InferenceEngine>> {
        memshare::engine::FakeInferenceEngine::Options o;
        o.step_interval = absl::GetFlag(FLAGS_fake_step_interval);
        o.max_running = absl::GetFlag(FLAGS_fake_max_running);
        o.max_waiting = absl::GetFlag(FLAGS_fake_max_waiting);
        o.kv_blocks_total = absl::GetFlag(FLAGS_fake_kv_blocks);
        o.max_model_len = absl::GetFlag(FLAGS_fake_max_model_len);
        o.model_id = absl::GetFlag(FLAGS_fake_model_id);
        auto engine = memshare::engine::FakeInferenceEngine::Create(o);
        if (!engine.ok()) return engine.status();
        return std::unique_ptr<memshare::engine::InferenceEngine>(*std::move(engine));
      });
}
