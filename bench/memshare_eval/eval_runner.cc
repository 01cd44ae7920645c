#include "bench/memshare_eval/eval_runner.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "engine/backend_factory.h"
#include "engine/cpu_engine.h"

namespace memshare::bench {
namespace {

using engine::FinishReason;
using engine::StepPhase;

// One request's stream, filled on the engine's thread.
struct Stream {
  absl::Mutex mu;
  std::string text ABSL_GUARDED_BY(mu);
  engine::StreamEvent last ABSL_GUARDED_BY(mu);
  bool done ABSL_GUARDED_BY(mu) = false;
};

// Step timings and pool samples, filled on the engine's thread.
struct StepCollector {
  absl::Mutex mu;
  int64_t steps ABSL_GUARDED_BY(mu) = 0;
  int64_t dedup_steps ABSL_GUARDED_BY(mu) = 0;
  double step_seconds ABSL_GUARDED_BY(mu) = 0;
  double dedup_seconds ABSL_GUARDED_BY(mu) = 0;
  double schedule_seconds ABSL_GUARDED_BY(mu) = 0;
  double sample_seconds ABSL_GUARDED_BY(mu) = 0;
  int64_t prefill_steps ABSL_GUARDED_BY(mu) = 0;
  double prefill_seconds ABSL_GUARDED_BY(mu) = 0;
  int64_t decode_steps ABSL_GUARDED_BY(mu) = 0;
  double decode_seconds ABSL_GUARDED_BY(mu) = 0;
  int64_t peak_physical ABSL_GUARDED_BY(mu) = 0;
  int64_t peak_logical ABSL_GUARDED_BY(mu) = 0;
  int64_t physical_at_peak_logical ABSL_GUARDED_BY(mu) = 0;
  int64_t shared_at_peak_logical ABSL_GUARDED_BY(mu) = 0;
  int64_t physical_sum ABSL_GUARDED_BY(mu) = 0;
  int64_t logical_sum ABSL_GUARDED_BY(mu) = 0;
};

absl::Status CheckInputs(const EngineSetup& setup, const EvalConfig& config) {
  if (absl::StatusOr<engine::DeviceKind> device = engine::ParseDeviceKind(setup.device);
      !device.ok()) {
    return device.status();
  }
  if (setup.num_blocks < 0) return absl::InvalidArgumentError("num_blocks: must be >= 0");
  if (setup.max_tokens < 1) return absl::InvalidArgumentError("max_tokens: must be >= 1");
  if (config.layer_groups < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer_groups: must be >= 1, got ", config.layer_groups));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EvalResult> RunEval(const EngineSetup& setup, const EvalConfig& config,
                                   absl::Span<const HeldoutProblem> problems) {
  if (absl::Status s = CheckInputs(setup, config); !s.ok()) return s;

  engine::CpuEngineOptions o;
  o.model_dir = setup.model_dir;
  o.device = *engine::ParseDeviceKind(setup.device);
  o.block_size = setup.block_size;
  o.num_layer_groups = config.layer_groups;
  o.num_threads = setup.threads;
  const int32_t longest = 256 + setup.max_tokens;  // prompts are ~66 tokens
  const int32_t blocks_per_request = (longest + setup.block_size - 1) / setup.block_size;
  o.num_blocks =
      setup.num_blocks > 0
          ? setup.num_blocks
          : std::max<int32_t>(64, blocks_per_request *
                                      std::min<int32_t>(setup.max_num_seqs, problems.size() + 1));
  o.engine.scheduler.max_num_seqs = setup.max_num_seqs;
  o.engine.scheduler.max_num_batched_tokens = setup.max_num_batched_tokens;
  o.engine.scheduler.reserve_ratio_step = setup.admission_reserve;
  o.engine.scheduler.pipeline_steps = setup.async_scheduling;
  o.engine.max_live_requests = std::max<int32_t>(1024, problems.size() + 1);
  kvmanager::KvManager::Options& kv = o.engine.kv;
  kv.enable_prefix_cache = setup.prefix_cache;
  kvmanager::DedupPolicy& policy = kv.dedup;
  policy.mode = config.memshare ? kvmanager::DedupMode::kMemShare : kvmanager::DedupMode::kOff;
  if (config.tau_lex) {
    policy.tau_lex = *config.tau_lex;
    policy.min_tau_lex = std::min(policy.min_tau_lex, *config.tau_lex);
  }
  if (config.tau_kv) {
    policy.tau_kv = *config.tau_kv;
    policy.max_tau_kv = std::max(policy.max_tau_kv, *config.tau_kv);
  }
  if (config.min_block_token_overlap) {
    policy.min_block_token_overlap = *config.min_block_token_overlap;
  }
  if (config.max_candidates_per_step) {
    policy.max_candidates_per_step = *config.max_candidates_per_step;
  }
  if (config.overlap_measure) policy.overlap_measure = *config.overlap_measure;
  if (config.near_match_delay_tokens) {
    policy.near_match_delay_tokens = *config.near_match_delay_tokens;
  }
  if (config.shifted_sharing) policy.shifted_sharing = *config.shifted_sharing;
  if (config.keep_numbers) policy.keep_numbers = *config.keep_numbers;
  policy.layer_groups = config.share_groups;
  if (config.min_step_tokens) kv.segmenter.min_step_tokens = *config.min_step_tokens;
  if (config.max_step_tokens) kv.segmenter.max_step_tokens = *config.max_step_tokens;
  if (config.delimiters) kv.segmenter.delimiters = *config.delimiters;

  absl::StatusOr<engine::CpuEngine> cpu = engine::CreateCpuEngine(o);
  if (!cpu.ok()) return cpu.status();
  engine::LlmEngine* const llm = cpu->engine.get();

  auto collector = std::make_shared<StepCollector>();
  llm->SetStepObserver([collector, llm](StepPhase phase, double seconds) {
    absl::MutexLock lock(&collector->mu);
    collector->step_seconds += seconds;
    switch (phase) {
      case StepPhase::kSchedule:
        collector->schedule_seconds += seconds;
        break;
      case StepPhase::kPrefill:
        collector->prefill_seconds += seconds;
        ++collector->prefill_steps;
        break;
      case StepPhase::kDecode:
        collector->decode_seconds += seconds;
        ++collector->decode_steps;
        break;
      case StepPhase::kSample:
        collector->sample_seconds += seconds;
        break;
      case StepPhase::kDedup:
        collector->dedup_seconds += seconds;
        ++collector->dedup_steps;
        break;
    }
    // The observer hears of a step once it has ended (dedup included);
    // every step has a sample phase: sample the pool there.
    if (phase != StepPhase::kSample) return;
    ++collector->steps;
    const kvmanager::KvStatsSnapshot kv = llm->GetKvStats();
    const int64_t physical = kv.PhysicalBlocks();
    const int64_t logical = kv.LogicalBlocks();
    collector->peak_physical = std::max(collector->peak_physical, physical);
    collector->physical_sum += physical;
    collector->logical_sum += logical;
    if (logical > collector->peak_logical) {
      collector->peak_logical = logical;
      collector->physical_at_peak_logical = physical;
      collector->shared_at_peak_logical = kv.SharedBlocks();
    }
  });

  std::vector<std::unique_ptr<Stream>> streams;
  streams.reserve(problems.size());
  const absl::Time start = absl::Now();
  for (const HeldoutProblem& p : problems) {
    engine::EngineRequest r;
    r.request_id = absl::StrCat("p", p.id, "-", streams.size());
    r.messages = {{"user", p.problem}};
    r.sampling.temperature = 0;
    r.sampling.max_tokens = setup.max_tokens;
    r.memshare.mode =
        config.memshare ? engine::MemShareParams::Mode::kOn : engine::MemShareParams::Mode::kOff;
    streams.push_back(std::make_unique<Stream>());
    Stream* stream = streams.back().get();
    absl::Status submitted = llm->Submit(std::move(r), [stream](const engine::StreamEvent& e) {
      absl::MutexLock lock(&stream->mu);
      stream->text += e.text_delta;
      if (e.finished || !e.status.ok()) {
        stream->last = e;
        stream->done = true;
      }
    });
    if (!submitted.ok()) return submitted;
  }

  EvalResult result;
  result.config = config;
  const absl::Time deadline = start + setup.timeout;
  for (size_t i = 0; i < problems.size(); ++i) {
    Stream& s = *streams[i];
    absl::MutexLock lock(&s.mu);
    if (!s.mu.AwaitWithDeadline(absl::Condition(&s.done), deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("config ", config.name, ": problem ",
                                                      problems[i].id, " unfinished after ",
                                                      absl::FormatDuration(setup.timeout)));
    }
  }
  result.wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);

  double saved_sum = 0;
  for (size_t i = 0; i < problems.size(); ++i) {
    Stream& s = *streams[i];
    absl::MutexLock lock(&s.mu);
    ProblemOutcome out;
    out.id = problems[i].id;
    out.answer = problems[i].answer;
    out.text = s.text;
    out.finish_reason = s.last.finish_reason;
    const engine::Usage& u = s.last.usage;
    out.prompt_tokens = u.prompt_tokens;
    out.completion_tokens = u.completion_tokens;
    out.peak_physical_blocks = u.kv_group_blocks_peak_physical;
    out.peak_logical_blocks = u.kv_group_blocks_peak_logical;
    if (!s.last.status.ok()) {
      out.error = std::string(s.last.status.message());
      ++result.num_failed;
    } else {
      out.predicted = ParseFinalAnswer(out.text);
      out.correct = out.predicted.has_value() && *out.predicted == out.answer;
    }
    result.num_correct += out.correct;
    result.request_peak_physical += out.peak_physical_blocks;
    result.request_peak_logical += out.peak_logical_blocks;
    if (out.peak_logical_blocks > 0) {
      saved_sum += 1.0 - double(out.peak_physical_blocks) / out.peak_logical_blocks;
    }
    result.generated_tokens += out.completion_tokens;
    result.problems.push_back(std::move(out));
  }
  result.num_problems = static_cast<int32_t>(problems.size());
  result.mean_request_saved = problems.empty() ? 0 : saved_sum / problems.size();

  // Every request has ended; the scheduler thread may still be closing its
  // last step: wait until the observer has seen it.
  if (absl::Status drained = llm->Drain(absl::Minutes(1)); !drained.ok()) return drained;
  const kvmanager::KvStatsSnapshot kv_stats = llm->GetKvStats();
  result.pool_blocks = cpu->num_blocks;
  result.dedup_steps = kv_stats.dedup_steps;
  result.dedup_candidate_steps = kv_stats.dedup_candidate_steps;
  result.dedup_candidates = kv_stats.dedup_candidates;
  result.dedup_verified = kv_stats.dedup_verified;
  result.dedup_rejected = kv_stats.dedup_rejected;
  result.dedup_remapped = kv_stats.dedup_remapped;
  result.preemptions = llm->GetSchedulerStats().preemptions;
  cpu->engine.reset();  // joins the scheduler thread: the collector is final
  {
    absl::MutexLock lock(&collector->mu);
    result.steps = collector->steps;
    result.dedup_phase_steps = collector->dedup_steps;
    result.step_seconds = collector->step_seconds;
    result.dedup_seconds = collector->dedup_seconds;
    result.schedule_seconds = collector->schedule_seconds;
    result.sample_seconds = collector->sample_seconds;
    result.prefill_steps = collector->prefill_steps;
    result.prefill_seconds = collector->prefill_seconds;
    result.decode_steps = collector->decode_steps;
    result.decode_seconds = collector->decode_seconds;
    result.pool_peak_physical = collector->peak_physical;
    result.pool_peak_logical = collector->peak_logical;
    result.pool_physical_at_peak_logical = collector->physical_at_peak_logical;
    result.pool_shared_at_peak_logical = collector->shared_at_peak_logical;
    result.pool_physical_step_sum = collector->physical_sum;
    result.pool_logical_step_sum = collector->logical_sum;
  }
  return result;
}

}  // namespace memshare::bench
