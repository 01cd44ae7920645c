// What the engine itself costs per step, without a model: LlmEngine
// (scheduler, KV manager, MemShare segmentation, candidate search and remaps,
// sampling bookkeeping, detokenization, stream callbacks) over
// engine/testing's FakeBackend, whose forward pass only writes and reads back
// token ids through the block tables. On a GPU with a small model this host
// work is the step (bench/NOTES-memshare-eval.md: the tiny reasoner's CUDA
// step is host-bound); this benchmark measures it on the build machine.
//
//   engine_host_bench [--requests=64 --prompt_len=64 --max_tokens=512
//                      --window=2 --memshare=true --device_sampling=true]
//
// Prints the mean per step of every phase the engine's step observer reports
// (schedule, forward, sample, dedup), of the fake model's own work (which
// pipelined steps run inside Submit, so inside the schedule phase), and of
// the whole step (wall time between the first and the last step over the
// step count); "host" is the whole step minus the fake model's work.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/process_main.h"
#include "engine/inference_engine.h"
#include "engine/llm_engine.h"
#include "engine/testing/fake_backend.h"
#include "engine/testing/fake_text_codec.h"

ABSL_FLAG(int, requests, 64, "Requests, all submitted at once (the batch).");
ABSL_FLAG(int, prompt_len, 64, "Prompt tokens per request (random ids, distinct per request).");
ABSL_FLAG(int, max_tokens, 512, "Tokens generated per request (greedy, no EOS).");
ABSL_FLAG(int, window, 2,
          "The fake model's logits depend on the last `window` tokens, so replies fall into "
          "short cycles that MemShare finds (0: the whole history; above 2 the cycles outgrow a "
          "512-token reply and nothing is shared).");
ABSL_FLAG(bool, memshare, true, "MemShare on (the server default policy) or off.");
ABSL_FLAG(bool, device_sampling, true,
          "The fake backend samples (as the CUDA backend does); false: the engine samples on the "
          "host from logits.");
ABSL_FLAG(int, block_size, 8, "KV block size in tokens (the worker's default).");

namespace memshare::bench {
namespace {

struct Totals {
  absl::Mutex mu;
  std::map<engine::StepPhase, double> seconds ABSL_GUARDED_BY(mu);
  std::map<engine::StepPhase, int64_t> counts ABSL_GUARDED_BY(mu);
  int64_t steps ABSL_GUARDED_BY(mu) = 0;
  absl::Time first ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
  absl::Time last ABSL_GUARDED_BY(mu) = absl::InfinitePast();
};

int Main(int argc, char** argv) {
  ParseFlags(argc, argv,
             "Engine host cost per step over a fake model: scheduler, KV manager, MemShare, "
             "sampling bookkeeping.");
  const int requests = absl::GetFlag(FLAGS_requests);
  const int prompt_len = absl::GetFlag(FLAGS_prompt_len);
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  const int block_size = absl::GetFlag(FLAGS_block_size);
  if (requests < 1 || prompt_len < 1 || max_tokens < 1 || block_size < 1 ||
      absl::GetFlag(FLAGS_window) < 0) {
    std::fprintf(stderr, "--requests, --prompt_len, --max_tokens, --block_size: >= 1; "
                         "--window: >= 0\n");
    return 2;
  }

  engine::FakeBackend::Options model;
  model.vocab_size = 64;
  model.block_size = block_size;
  model.num_blocks =
      requests * ((prompt_len + max_tokens + block_size - 1) / block_size + 1) + 16;
  model.window = absl::GetFlag(FLAGS_window);
  model.samples_on_device = absl::GetFlag(FLAGS_device_sampling);
  engine::LlmEngine::Options options;
  options.scheduler.max_num_seqs = requests;
  options.scheduler.max_num_batched_tokens = std::max(8192, requests * prompt_len);
  options.scheduler.max_model_len = prompt_len + max_tokens + 1;
  options.max_live_requests = requests + 1;
  options.kv.dedup.mode = absl::GetFlag(FLAGS_memshare) ? kvmanager::DedupMode::kMemShare
                                                        : kvmanager::DedupMode::kOff;
  options.model_info.model_id = "fake";
  engine::LlmEngine::Parts parts;
  absl::StatusOr<std::unique_ptr<engine::FakeBackend>> backend =
      engine::FakeBackend::Create(model);
  if (!backend.ok()) {
    std::fprintf(stderr, "fake backend: %s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  const engine::FakeBackend* fake = backend->get();
  parts.backend = *std::move(backend);
  parts.codec = std::make_unique<engine::FakeTextCodec>();
  absl::StatusOr<std::unique_ptr<engine::LlmEngine>> created =
      engine::LlmEngine::Create(options, std::move(parts));
  if (!created.ok()) {
    std::fprintf(stderr, "engine: %s\n", std::string(created.status().message()).c_str());
    return 1;
  }
  engine::LlmEngine& llm = **created;

  Totals totals;
  llm.SetStepObserver([&totals](engine::StepPhase phase, double seconds) {
    absl::MutexLock lock(&totals.mu);
    totals.seconds[phase] += seconds;
    ++totals.counts[phase];
    if (phase == engine::StepPhase::kSample) {  // every step has one, last
      ++totals.steps;
      const absl::Time now = absl::Now();
      totals.first = std::min(totals.first, now);
      totals.last = std::max(totals.last, now);
    }
  });

  std::atomic<int> left{requests};
  std::atomic<int64_t> generated{0};
  std::atomic<int64_t> shared{0};
  absl::Notification done;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> token(0, model.vocab_size - 1);
  for (int r = 0; r < requests; ++r) {
    engine::EngineRequest request;
    request.request_id = "r" + std::to_string(r);
    for (int i = 0; i < prompt_len; ++i) request.prompt_token_ids.push_back(token(rng));
    request.sampling.temperature = 0;
    request.sampling.max_tokens = max_tokens;
    request.sampling.ignore_eos = true;
    const absl::Status s =
        llm.Submit(std::move(request), [&](const engine::StreamEvent& e) {
          generated += static_cast<int64_t>(e.token_ids.size());
          if (!e.finished) return;
          if (!e.status.ok()) {
            std::fprintf(stderr, "request failed: %s\n", std::string(e.status.message()).c_str());
          }
          shared += e.usage.shared_blocks;
          if (--left == 0) done.Notify();
        });
    if (!s.ok()) {
      std::fprintf(stderr, "submit: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  if (!done.WaitForNotificationWithTimeout(absl::Minutes(10))) {
    std::fprintf(stderr, "timed out\n");
    return 1;
  }

  absl::MutexLock lock(&totals.mu);
  const double steps = static_cast<double>(std::max<int64_t>(1, totals.steps));
  const double wall = absl::ToDoubleSeconds(totals.last - totals.first);
  auto per_step_us = [&](engine::StepPhase p) { return 1e6 * totals.seconds[p] / steps; };
  // The fake model's work, wherever the phases counted it.
  const double model_us = 1e6 * fake->run_seconds() / steps;
  std::printf("requests %d, prompt %d, generated %lld tokens in %lld steps, memshare %s, "
              "window %d, device sampling %s, shared blocks (sum of requests' peaks) %lld\n",
              requests, prompt_len, static_cast<long long>(generated.load()),
              static_cast<long long>(totals.steps), absl::GetFlag(FLAGS_memshare) ? "on" : "off",
              model.window, model.samples_on_device ? "yes" : "no",
              static_cast<long long>(shared.load()));
  std::printf(
      "per step (us): schedule %.1f (with the fake model's steps when pipelined), "
      "forward phase %.1f, sample %.1f, dedup %.1f, fake model %.1f, whole step %.1f, "
      "host (whole - fake model) %.1f\n",
      per_step_us(engine::StepPhase::kSchedule),
      per_step_us(engine::StepPhase::kPrefill) + per_step_us(engine::StepPhase::kDecode),
      per_step_us(engine::StepPhase::kSample), per_step_us(engine::StepPhase::kDedup), model_us,
      1e6 * wall / steps, 1e6 * wall / steps - model_us);
  return 0;
}

}  // namespace
}  // namespace memshare::bench

int main(int argc, char** argv) { return memshare::bench::Main(argc, argv); }
