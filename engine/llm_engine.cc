#include "engine/llm_engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/sampler/stop_string_matcher.h"

namespace memshare::engine {

struct LlmEngine::Live {
  std::string request_id;
  EventCallback on_event;
  std::unique_ptr<TokenTextStream> text;
  StopStringMatcher stop;
  bool want_logprobs = false;

  explicit Live(std::vector<std::string> stop_strings) : stop(std::move(stop_strings)) {}
};

std::vector<bool> LlmEngine::DigitTokens(const TextCodec& codec, int32_t vocab_size) {
  std::vector<bool> digit(std::max(vocab_size, 0), false);
  for (int32_t id = 0; id < vocab_size; ++id) {
    const std::string piece = codec.TokenPiece(id);
    digit[id] = std::any_of(piece.begin(), piece.end(), [](char c) { return c >= '0' && c <= '9'; });
  }
  return digit;
}

absl::StatusOr<std::unique_ptr<LlmEngine>> LlmEngine::Create(const Options& options, Parts parts) {
  if (parts.backend == nullptr || parts.codec == nullptr) {
    return absl::InvalidArgumentError("LlmEngine: backend and codec are required");
  }
  if (options.max_live_requests < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_live_requests: must be >= 1, got ", options.max_live_requests));
  }
  const KvCacheSpec& spec = parts.backend->kv_spec();
  kvmanager::KvManager::Options kv_options = options.kv;
  kv_options.num_layer_groups = spec.num_layer_groups;
  kv_options.num_blocks = spec.num_blocks;
  kv_options.block_size = spec.block_size;
  // Shifted views only where the backend reads them (Backend::
  // SupportsShiftedViews): a backend that ignored them would attend to the
  // wrong K/V without a word.
  if (!parts.backend->SupportsShiftedViews()) kv_options.dedup.shifted_sharing = false;
  kv_options.block_bytes.clear();
  for (int g = 0; g < spec.num_layer_groups; ++g)
    kv_options.block_bytes.push_back(spec.BlockBytes(g));
  if (kv_options.dedup.keep_numbers && kv_options.digit_tokens.empty()) {
    kv_options.digit_tokens = DigitTokens(*parts.codec, parts.backend->vocab_size());
  }
  absl::StatusOr<std::unique_ptr<kvmanager::KvManager>> kv =
      kvmanager::KvManager::Create(kv_options);
  if (!kv.ok()) return kv.status();

  Scheduler::Options scheduler_options = options.scheduler;
  for (int32_t id : parts.codec->eos_token_ids()) {
    if (std::find(scheduler_options.eos_token_ids.begin(), scheduler_options.eos_token_ids.end(),
                  id) == scheduler_options.eos_token_ids.end()) {
      scheduler_options.eos_token_ids.push_back(id);
    }
  }
  const TextCodec* codec = parts.codec.get();
  scheduler_options.token_piece = [codec](int32_t id) { return codec->TokenPiece(id); };
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(scheduler_options, parts.backend.get(), kv->get());
  if (!scheduler.ok()) return scheduler.status();

  Options kept = options;
  kept.kv = kv_options;
  auto engine = std::unique_ptr<LlmEngine>(new LlmEngine(kept, std::move(parts)));
  engine->kv_ = std::move(*kv);
  engine->scheduler_ = std::move(*scheduler);
  engine->model_info_.vocab_size = engine->scheduler_->vocab_size();
  engine->model_info_.max_model_len = engine->scheduler_->max_model_len();
  engine->model_info_.block_size = spec.block_size;
  if (engine->model_info_.kv_block_bytes == 0) {
    // This rank's share of every layer group; a single rank holds it all.
    for (int g = 0; g < spec.num_layer_groups; ++g) {
      engine->model_info_.kv_block_bytes += spec.BlockBytes(g);
    }
  }
  engine->PublishLoad();
  engine->thread_ = std::thread([e = engine.get()] { e->Loop(); });
  return engine;
}

LlmEngine::LlmEngine(const Options& options, Parts parts)
    : options_(options),
      model_info_(options.model_info),
      backend_(std::move(parts.backend)),
      codec_(std::move(parts.codec)) {}

LlmEngine::~LlmEngine() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    wake_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::vector<int32_t>> LlmEngine::Tokenize(const EngineRequest& request) const {
  if (!request.prompt_token_ids.empty()) return request.prompt_token_ids;
  if (!request.messages.empty()) {
    for (size_t i = 0; i < request.messages.size(); ++i) {
      const std::string& role = request.messages[i].role;
      if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
        return absl::InvalidArgumentError(absl::StrCat(
            "messages[", i, "].role: must be system, user, assistant or tool, got \"", role, "\""));
      }
    }
    return codec_->EncodeChat(request.messages);
  }
  if (request.prompt_text.empty()) {
    return absl::InvalidArgumentError(
        "prompt: must not be empty (set prompt_text, prompt_token_ids or messages)");
  }
  return codec_->EncodePrompt(request.prompt_text);
}

absl::StatusOr<kvmanager::DedupParams> LlmEngine::MemShareOf(const MemShareParams& p) const {
  kvmanager::DedupParams params;
  if (p.mode == MemShareParams::Mode::kOn) params.mode = kvmanager::DedupMode::kMemShare;
  if (p.mode == MemShareParams::Mode::kOff) params.mode = kvmanager::DedupMode::kOff;
  params.tau_lex = p.tau_lex;
  params.tau_kv = p.tau_kv;
  // The same check the KV manager makes on admission, made here so that a
  // bad request is refused before it is queued.
  absl::StatusOr<kvmanager::ResolvedDedup> resolved =
      kvmanager::ResolveDedup(options_.kv.dedup, params);
  if (!resolved.ok()) return resolved.status();
  return params;
}

absl::Status LlmEngine::Submit(EngineRequest request, EventCallback on_event) {
  if (request.request_id.empty()) {
    return absl::InvalidArgumentError("request_id: must not be empty");
  }
  if (!on_event) return absl::InvalidArgumentError("on_event: must be set");
  if (absl::Status h = backend_->health(); !h.ok()) {
    return absl::UnavailableError(absl::StrCat("engine unavailable: ", h.message()));
  }
  absl::StatusOr<kvmanager::DedupParams> memshare = MemShareOf(request.memshare);
  if (!memshare.ok()) return memshare.status();
  absl::StatusOr<std::vector<int32_t>> prompt = Tokenize(request);
  if (!prompt.ok()) return prompt.status();

  Incoming in;
  in.request_id = request.request_id;
  in.stop = request.sampling.stop;
  in.want_logprobs = request.sampling.logprobs > 0;
  in.on_event = std::move(on_event);
  SequenceRequest& seq = in.sequence;
  seq.prompt_token_ids = std::move(*prompt);
  seq.sampling = std::move(request.sampling);
  seq.priority = request.priority;
  seq.deadline = request.deadline;
  seq.cache_salt = std::move(request.cache_salt);
  seq.memshare = *memshare;
  if (absl::Status s = scheduler_->Validate(seq); !s.ok()) return s;

  absl::MutexLock lock(&mu_);
  if (draining_ || stop_) return absl::FailedPreconditionError("engine is draining");
  if (static_cast<int64_t>(ids_.size()) >= options_.max_live_requests) {
    return absl::ResourceExhaustedError(
        absl::StrCat("engine queue is full: ", ids_.size(), " live requests (max_live_requests)"));
  }
  if (ids_.contains(in.request_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("request_id: \"", in.request_id, "\" is already live"));
  }
  in.seq_id = next_seq_id_++;
  seq.seq_id = in.seq_id;
  ids_[in.request_id] = in.seq_id;
  load_.waiting_requests += 1;
  load_.waiting_tokens += static_cast<int64_t>(seq.prompt_token_ids.size());
  inbox_.push_back(std::move(in));
  wake_.Signal();
  return absl::OkStatus();
}

absl::Status LlmEngine::Abort(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  auto it = ids_.find(request_id);
  if (it == ids_.end()) {
    return absl::NotFoundError(absl::StrCat("request_id: \"", request_id, "\" is not live"));
  }
  aborts_.push_back(it->second);
  wake_.Signal();
  return absl::OkStatus();
}

void LlmEngine::SetStepObserver(StepObserver observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
}

LoadReport LlmEngine::GetLoad() const {
  absl::MutexLock lock(&mu_);
  return load_;
}

SchedulerStats LlmEngine::GetSchedulerStats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::Status LlmEngine::Drain(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  draining_ = true;
  while (!ids_.empty() || delivering_ > 0) {
    if (idle_.WaitWithDeadline(&mu_, deadline) && (!ids_.empty() || delivering_ > 0)) {
      return absl::DeadlineExceededError(
          absl::StrCat("drain: ", ids_.size(), " requests still live"));
    }
  }
  return absl::OkStatus();
}

void LlmEngine::EndWithoutScheduler(const std::string& request_id, const EventCallback& on_event,
                                    const StreamEvent& event) {
  {
    absl::MutexLock lock(&mu_);
    ids_.erase(request_id);
    ++delivering_;
  }
  on_event(event);
  {
    absl::MutexLock lock(&mu_);
    --delivering_;
    idle_.SignalAll();
  }
}

void LlmEngine::Admit(Incoming in) {
  auto live = std::make_unique<Live>(std::move(in.stop));
  live->request_id = in.request_id;
  live->on_event = std::move(in.on_event);
  live->want_logprobs = in.want_logprobs;
  live->text = codec_->NewStream(in.sequence.prompt_token_ids);
  if (absl::Status s = scheduler_->Add(std::move(in.sequence)); !s.ok()) {
    StreamEvent event;
    event.finished = true;
    event.finish_reason = FinishReason::kError;
    event.status = s;
    EndWithoutScheduler(live->request_id, live->on_event, event);
    return;
  }
  live_[in.seq_id] = std::move(live);
}

void LlmEngine::Emit(SequenceOutput out) {
  auto it = live_.find(out.seq_id);
  if (it == live_.end()) return;
  Live& live = *it->second;
  StreamEvent event;
  // A stop token or EOS (kStop from the scheduler with a token) is reported
  // as a token but its text is not emitted.
  const bool ends_on_token =
      out.finished && out.finish_reason == FinishReason::kStop && !out.tokens.empty();
  bool stopped_by_string = false;
  for (size_t i = 0; i < out.tokens.size(); ++i) {
    const TokenLogprob& t = out.tokens[i];
    event.token_ids.push_back(t.token_id);
    if (live.want_logprobs) event.logprobs.push_back(t);
    if (stopped_by_string || (ends_on_token && i + 1 == out.tokens.size())) continue;
    StopStringMatcher::Result r = live.stop.Append(live.text->Append(t.token_id));
    event.text_delta += r.text;
    stopped_by_string = r.stopped;
  }
  if (stopped_by_string && !out.finished) {
    absl::StatusOr<SequenceOutput> ended = scheduler_->Finish(out.seq_id, FinishReason::kStop);
    if (ended.ok()) {
      out.finished = true;
      out.usage = ended->usage;
      out.status = absl::OkStatus();
    }
  }
  if (out.finished) {
    if (stopped_by_string) {
      out.finish_reason = FinishReason::kStop;
    } else if (!live.stop.stopped()) {
      StopStringMatcher::Result r = live.stop.Append(live.text->Flush());
      event.text_delta += r.text;
      if (r.stopped) {
        out.finish_reason = FinishReason::kStop;
      } else {
        event.text_delta += live.stop.Flush();
      }
    }
    event.finished = true;
    event.finish_reason = out.finish_reason;
    event.usage = out.usage;
    event.status = out.status;
  }
  if (!out.finished) {
    if (!event.token_ids.empty() || !event.text_delta.empty()) live.on_event(event);
    return;
  }
  // The request stops being live before its last event is delivered, so a
  // client that saw the end may reuse the id; Drain waits for the delivery.
  std::unique_ptr<Live> done = std::move(it->second);
  live_.erase(it);
  PublishLoad();
  {
    absl::MutexLock lock(&mu_);
    ids_.erase(done->request_id);
    ++delivering_;
  }
  done->on_event(event);
  {
    absl::MutexLock lock(&mu_);
    --delivering_;
    idle_.SignalAll();
  }
}

void LlmEngine::PublishLoad() {
  const SchedulerStats& st = scheduler_->stats();
  const kvmanager::KvStatsSnapshot kv = kv_->Stats();
  absl::MutexLock lock(&mu_);
  LoadReport& l = load_;
  l.running_requests = st.running;
  l.waiting_requests = st.waiting + static_cast<int32_t>(inbox_.size());
  l.waiting_tokens = st.waiting_tokens;
  for (const Incoming& in : inbox_) {
    l.waiting_tokens += static_cast<int64_t>(in.sequence.prompt_token_ids.size());
  }
  // Layer group 0 stands for the pool (every group has as many blocks).
  if (!kv.groups.empty()) {
    l.kv_blocks_total = kv.groups[0].total_blocks;
    l.kv_blocks_used = kv.groups[0].physical_blocks;
    l.kv_blocks_logical = kv.groups[0].logical_blocks;
    l.kv_blocks_shared = kv.groups[0].shared_blocks;
  }
  l.bytes_saved = kv.BytesSaved();
  l.dedup_candidates = kv.dedup_candidates;
  l.dedup_verified = kv.dedup_verified;
  l.dedup_rejected = kv.dedup_rejected;
  l.dedup_remapped = kv.dedup_remapped;
  l.prefix_cache_queries = kv.prefix_cache_queries;
  l.prefix_cache_hits = kv.prefix_cache_hits;
  l.preemptions = st.preemptions;
  stats_ = st;
}

void LlmEngine::Loop() {
  bool has_work = false;
  StepObserver observer;
  while (true) {
    std::deque<Incoming> incoming;
    std::vector<uint64_t> aborts;
    {
      absl::MutexLock lock(&mu_);
      while (!stop_ && inbox_.empty() && aborts_.empty() && !has_work) wake_.Wait(&mu_);
      if (stop_) break;
      incoming.swap(inbox_);
      aborts.swap(aborts_);
      if (!observer && observer_) observer = observer_;  // set once, before the first Submit
    }
    for (Incoming& in : incoming) Admit(std::move(in));
    for (uint64_t seq_id : aborts) {
      absl::StatusOr<SequenceOutput> out = scheduler_->Abort(seq_id);
      if (out.ok()) Emit(std::move(*out));  // else it ended meanwhile
    }
    if (scheduler_->HasWork()) {
      const int64_t steps_before = scheduler_->stats().steps;
      std::vector<SequenceOutput> outputs = scheduler_->Step(absl::Now());
      // Timings first: a client that saw its last event sees its steps counted.
      const SchedulerStats& st = scheduler_->stats();
      if (observer && st.steps > steps_before) {
        observer(StepPhase::kSchedule, st.last_schedule_seconds);
        observer(st.last_step_prefill_tokens > 0 ? StepPhase::kPrefill : StepPhase::kDecode,
                 st.last_forward_seconds);
        observer(StepPhase::kSample, st.last_sample_seconds);
        if (st.last_dedup_seconds > 0) observer(StepPhase::kDedup, st.last_dedup_seconds);
      }
      for (SequenceOutput& out : outputs) Emit(std::move(out));
    }
    has_work = scheduler_->HasWork();
    PublishLoad();
  }

  // Shutting down: end whatever is still live.
  std::deque<Incoming> never_admitted;
  {
    absl::MutexLock lock(&mu_);
    never_admitted.swap(inbox_);
  }
  StreamEvent cancelled;
  cancelled.finished = true;
  cancelled.finish_reason = FinishReason::kAbort;
  cancelled.status = absl::CancelledError("engine shut down");
  for (Incoming& in : never_admitted) EndWithoutScheduler(in.request_id, in.on_event, cancelled);
  std::vector<uint64_t> seq_ids;
  for (const auto& [seq_id, live] : live_) seq_ids.push_back(seq_id);
  for (uint64_t seq_id : seq_ids) {
    absl::StatusOr<SequenceOutput> out = scheduler_->Abort(seq_id);
    if (!out.ok()) continue;
    out->status = absl::CancelledError("engine shut down");
    Emit(std::move(*out));
  }
}

}  // namespace memshare::engine
