#include "bench/engine_throughput.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/id_text_codec.h"
#include "engine/llm_engine.h"

namespace memshare::bench {
namespace {

using engine::StepOutput;
using engine::StepPlan;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void CheckOk(const absl::Status& s) {
  if (s.ok()) return;
  std::fprintf(stderr, "engine throughput: %s\n", s.ToString().c_str());
  std::exit(1);
}

// LlmEngine owns its backend; the benchmarks keep theirs for their other
// measures and lend it through this.
class LentBackend : public engine::Backend {
 public:
  explicit LentBackend(engine::Backend* b) : b_(b) {}
  const engine::KvCacheSpec& kv_spec() const override { return b_->kv_spec(); }
  int32_t vocab_size() const override { return b_->vocab_size(); }
  bool SamplesOnDevice() const override { return b_->SamplesOnDevice(); }
  bool SupportsShiftedViews() const override { return b_->SupportsShiftedViews(); }
  absl::Status Forward(const StepPlan& plan, StepOutput* output) override {
    return b_->Forward(plan, output);
  }
  bool SupportsPipelining() const override { return b_->SupportsPipelining(); }
  absl::Status Submit(const StepPlan& plan) override { return b_->Submit(plan); }
  absl::Status Collect(StepOutput* output) override { return b_->Collect(output); }
  absl::Status CopyBlocks(int g, absl::Span<const std::pair<int32_t, int32_t>> src_dst) override {
    return b_->CopyBlocks(g, src_dst);
  }
  absl::Status ComputeDistanceSums(int g, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override {
    return b_->ComputeDistanceSums(g, pairs, out);
  }

 private:
  engine::Backend* const b_;
};

}  // namespace

EngineResult RunEngineThroughput(engine::Backend& b, int prompts, int prompt_len, int gen_len,
                                 int budget, bool device_sampling, bool pipeline, uint64_t seed) {
  const int V = b.vocab_size();
  engine::LlmEngine::Options o;
  o.scheduler.max_num_batched_tokens = budget;
  o.scheduler.max_num_seqs = prompts;
  o.scheduler.max_model_len = prompt_len + gen_len;
  o.scheduler.sample_on_device = device_sampling;
  o.scheduler.pipeline_steps = pipeline;
  o.max_live_requests = std::max(prompts, 1);
  o.kv.dedup.mode = kvmanager::DedupMode::kOff;
  engine::LlmEngine::Parts parts;
  parts.backend = std::make_unique<LentBackend>(&b);
  parts.codec = std::make_unique<engine::IdTextCodec>(V, std::vector<int32_t>{});
  auto created = engine::LlmEngine::Create(o, std::move(parts));
  CheckOk(created.status());
  engine::LlmEngine& e = **created;

  absl::Mutex mu;
  EngineResult r;
  int live = prompts;
  absl::Status failure;
  e.SetStepObserver([&](engine::StepPhase phase, double seconds) {
    absl::MutexLock lock(&mu);
    switch (phase) {
      case engine::StepPhase::kSchedule:
        r.schedule_seconds += seconds;
        ++r.steps;
        break;
      case engine::StepPhase::kPrefill:
        r.prefill_seconds += seconds;
        break;
      case engine::StepPhase::kDecode:
        r.decode_seconds += seconds;
        ++r.decode_steps;
        break;
      case engine::StepPhase::kSample:
        r.sample_seconds += seconds;
        break;
      default:
        break;
    }
  });
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(10, V - 10);
  const double t0 = Now();
  for (int i = 0; i < prompts; ++i) {
    engine::EngineRequest req;
    req.request_id = absl::StrCat("p", i);
    req.prompt_token_ids.resize(prompt_len);
    for (auto& t : req.prompt_token_ids) t = tok(rng);
    req.sampling.temperature = 0;
    req.sampling.max_tokens = gen_len;
    req.sampling.ignore_eos = true;
    CheckOk(e.Submit(std::move(req), [&](const engine::StreamEvent& ev) {
      absl::MutexLock lock(&mu);
      r.output_tokens += static_cast<int64_t>(ev.token_ids.size());
      if (ev.finished) {
        if (!ev.status.ok() && failure.ok()) failure = ev.status;
        --live;
      }
    }));
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &live));
    r.seconds = Now() - t0;
  }
  CheckOk(failure);
  r.device_sampled_tokens = e.GetSchedulerStats().device_sampled_tokens;
  return r;
}

}  // namespace memshare::bench
