#include "engine/server/testing/fake_inference_engine.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace memshare::engine {

struct FakeInferenceEngine::Live {
  EngineRequest request;
  EventCallback on_event;
  std::vector<int32_t> prompt;
  uint64_t seed = 0;
  int generated = 0;
  std::string text;    // all generated text
  size_t emitted = 0;  // bytes of `text` already sent
  bool abort = false;
  int64_t shared = 0;  // blocks counted as shared so far
  int64_t peak_physical = 0;
  int64_t peak_logical = 0;
};

namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

}  // namespace

int32_t FakeInferenceEngine::TokenAt(const std::vector<int32_t>& prompt, uint64_t seed, int index) {
  uint64_t h = Mix(0xcbf29ce484222325ull, seed);
  for (int32_t t : prompt) h = Mix(h, static_cast<uint32_t>(t));
  h = Mix(h, static_cast<uint64_t>(index));
  return 'a' + static_cast<int32_t>((h >> 17) % 26);
}

std::vector<int32_t> FakeInferenceEngine::PromptTokens(const EngineRequest& request) {
  if (!request.prompt_token_ids.empty()) return request.prompt_token_ids;
  std::string text;
  if (!request.messages.empty()) {
    for (const ChatMessage& m : request.messages) {
      absl::StrAppend(&text, "<|", m.role, "|>", m.content, "\n");
    }
    text += "<|assistant|>";
  } else {
    text = request.prompt_text;
  }
  std::vector<int32_t> tokens;
  tokens.reserve(text.size());
  for (unsigned char c : text) tokens.push_back(c);
  return tokens;
}

absl::StatusOr<std::unique_ptr<FakeInferenceEngine>> FakeInferenceEngine::Create(
    const Options& options) {
  if (options.vocab_size < 128) return absl::InvalidArgumentError("vocab_size must be >= 128");
  if (options.block_size < 1 || options.max_running < 1 || options.max_waiting < 0 ||
      options.kv_blocks_total < 1 || options.max_model_len < 2) {
    return absl::InvalidArgumentError("fake engine: bad options");
  }
  return std::unique_ptr<FakeInferenceEngine>(new FakeInferenceEngine(options));
}

FakeInferenceEngine::FakeInferenceEngine(const Options& options)
    : options_(options), paused_(options.start_paused) {
  thread_ = std::thread([this] { Run(); });
}

FakeInferenceEngine::~FakeInferenceEngine() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

absl::Status FakeInferenceEngine::Submit(EngineRequest request, EventCallback on_event) {
  auto live = std::make_unique<Live>();
  live->prompt = PromptTokens(request);
  live->seed = request.sampling.seed.value_or(0);
  absl::MutexLock lock(&mu_);
  ++submitted_;
  if (!submit_error_.ok()) return submit_error_;
  if (stopping_) return absl::FailedPreconditionError("engine is stopping");
  if (request.request_id.empty()) return absl::InvalidArgumentError("request_id: empty");
  for (const auto* list : {&waiting_, &running_}) {
    for (const auto& l : *list) {
      if (l->request.request_id == request.request_id) {
        return absl::AlreadyExistsError(
            absl::StrCat("request_id: '", request.request_id, "' is already live"));
      }
    }
  }
  if (live->prompt.empty()) return absl::InvalidArgumentError("prompt: empty");
  for (size_t i = 0; i < live->prompt.size(); ++i) {
    if (live->prompt[i] < 0 || live->prompt[i] >= options_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_token_ids[", i, "]: ", live->prompt[i],
                                                     " is outside the vocabulary"));
    }
  }
  const int64_t total = static_cast<int64_t>(live->prompt.size()) + request.sampling.max_tokens;
  if (total > options_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens: prompt (", live->prompt.size(), " tokens) + max_tokens (",
        request.sampling.max_tokens, ") exceeds max_model_len (", options_.max_model_len, ")"));
  }
  if (request.memshare.tau_kv.has_value() && *request.memshare.tau_kv > options_.max_tau_kv) {
    return absl::InvalidArgumentError(absl::StrCat("memshare.tau_kv: ", *request.memshare.tau_kv,
                                                   " exceeds the server's bound ",
                                                   options_.max_tau_kv));
  }
  if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
    return absl::ResourceExhaustedError("engine queue is full");
  }
  live->request = std::move(request);
  live->on_event = std::move(on_event);
  waiting_.push_back(std::move(live));
  return absl::OkStatus();
}

absl::Status FakeInferenceEngine::Abort(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  for (auto* list : {&waiting_, &running_}) {
    for (auto& l : *list) {
      if (l->request.request_id == request_id && !l->abort) {
        l->abort = true;
        ++aborted_;
        return absl::OkStatus();
      }
    }
  }
  return absl::NotFoundError(absl::StrCat("no live request '", request_id, "'"));
}

int64_t FakeInferenceEngine::BlocksOf(const Live& live) const {
  const int64_t tokens = static_cast<int64_t>(live.prompt.size()) + live.generated;
  return (tokens + options_.block_size - 1) / options_.block_size;
}

int64_t FakeInferenceEngine::SharedBlocksOf(const Live& live) const {
  if (live.request.memshare.mode == MemShareParams::Mode::kOff) return 0;
  return (live.generated / options_.block_size) / 4;
}

LoadReport FakeInferenceEngine::GetLoad() const {
  absl::MutexLock lock(&mu_);
  LoadReport r;
  r.running_requests = static_cast<int32_t>(running_.size());
  r.waiting_requests = static_cast<int32_t>(waiting_.size());
  for (const auto& l : waiting_) r.waiting_tokens += static_cast<int64_t>(l->prompt.size());
  r.kv_blocks_total = options_.kv_blocks_total;
  for (const auto& l : running_) {
    const int64_t logical = BlocksOf(*l);
    r.kv_blocks_logical += logical;
    r.kv_blocks_used += logical - l->shared;
    r.kv_blocks_shared += l->shared;
  }
  r.bytes_saved = r.kv_blocks_shared * options_.kv_block_bytes;
  r.dedup_remapped = remapped_total_;
  r.dedup_candidates = 2 * remapped_total_;
  r.dedup_verified = 2 * remapped_total_;
  r.dedup_rejected = remapped_total_;
  r.prefix_cache_queries = steps_;
  r.prefix_cache_hits = 0;
  r.preemptions = 0;
  return r;
}

ModelInfo FakeInferenceEngine::GetModelInfo() const {
  ModelInfo info;
  info.model_id = options_.model_id;
  info.architecture = "FakeForCausalLM";
  info.vocab_size = options_.vocab_size;
  info.max_model_len = options_.max_model_len;
  info.num_layers = 2;
  info.block_size = options_.block_size;
  info.device = "cpu";
  info.tensor_parallel_size = 1;
  info.kv_block_bytes = options_.kv_block_bytes;
  return info;
}

void FakeInferenceEngine::SetStepObserver(StepObserver observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
}

void FakeInferenceEngine::Pause() {
  absl::MutexLock lock(&mu_);
  paused_ = true;
}

void FakeInferenceEngine::Resume() {
  absl::MutexLock lock(&mu_);
  paused_ = false;
}

void FakeInferenceEngine::SetHealth(absl::Status status) {
  absl::MutexLock lock(&mu_);
  health_ = std::move(status);
}

absl::Status FakeInferenceEngine::health() const {
  absl::MutexLock lock(&mu_);
  return health_;
}

void FakeInferenceEngine::SetSubmitError(absl::Status status) {
  absl::MutexLock lock(&mu_);
  submit_error_ = std::move(status);
}

int64_t FakeInferenceEngine::submitted() const {
  absl::MutexLock lock(&mu_);
  return submitted_;
}

int64_t FakeInferenceEngine::aborted() const {
  absl::MutexLock lock(&mu_);
  return aborted_;
}

void FakeInferenceEngine::Run() {
  using Delivery = std::pair<EventCallback, StreamEvent>;
  while (true) {
    std::vector<Delivery> deliveries;
    std::vector<std::unique_ptr<Live>> finished;  // destroyed outside the lock
    StepObserver observer;
    absl::Duration schedule_time, forward_time;
    bool prefill = false;
    {
      absl::MutexLock lock(&mu_);
      auto has_abort = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        for (auto* list : {&waiting_, &running_}) {
          for (const auto& l : *list) {
            if (l->abort) return true;
          }
        }
        return false;
      };
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || has_abort() || (!paused_ && (!waiting_.empty() || !running_.empty()));
      };
      const bool busy = !waiting_.empty() || !running_.empty();
      // Idle: sleep until work comes. Busy or paused with requests: wake at
      // least every step to check deadlines.
      mu_.AwaitWithTimeout(absl::Condition(&ready),
                           busy ? options_.step_interval : absl::Milliseconds(50));
      const absl::Time now = absl::Now();
      auto end = [&](std::unique_ptr<Live> l, StreamEvent e) {
        e.finished = true;
        e.usage.prompt_tokens = static_cast<int32_t>(l->prompt.size());
        e.usage.completion_tokens = l->generated;
        e.usage.kv_blocks_peak_physical = static_cast<int32_t>(l->peak_physical);
        e.usage.kv_blocks_peak_logical = static_cast<int32_t>(l->peak_logical);
        e.usage.shared_blocks = static_cast<int32_t>(l->shared);
        deliveries.emplace_back(l->on_event, std::move(e));
        finished.push_back(std::move(l));
      };
      // Aborts, deadlines and shutdown end requests at once.
      for (auto* list : {&waiting_, &running_}) {
        for (auto it = list->begin(); it != list->end();) {
          Live& l = **it;
          StreamEvent e;
          if (stopping_ || l.abort) {
            e.token_ids.clear();
            e.text_delta = l.text.substr(l.emitted);
            e.finish_reason = FinishReason::kAbort;
          } else if (now >= l.request.deadline) {
            e.finish_reason = FinishReason::kError;
            e.status = absl::DeadlineExceededError("request deadline passed");
          } else {
            ++it;
            continue;
          }
          end(std::move(*it), std::move(e));
          it = list->erase(it);
        }
      }
      if (stopping_) {
        observer = nullptr;
      } else if (!paused_) {
        const absl::Time t0 = absl::Now();
        // Admit waiting requests while the batch and the pool have room.
        int64_t used = 0;
        for (const auto& l : running_) used += BlocksOf(*l) - l->shared;
        while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
          const int64_t need = BlocksOf(*waiting_.front()) + 1;
          if (used + need > options_.kv_blocks_total) break;
          used += need;
          running_.push_back(std::move(waiting_.front()));
          waiting_.pop_front();
          prefill = true;
        }
        const absl::Time t1 = absl::Now();
        schedule_time = t1 - t0;
        // One token per running request.
        for (auto it = running_.begin(); it != running_.end();) {
          Live& l = **it;
          const int32_t token = TokenAt(l.prompt, l.seed, l.generated);
          ++l.generated;
          l.text.push_back(static_cast<char>(token));
          const int64_t shared = SharedBlocksOf(l);
          remapped_total_ += shared - l.shared;
          l.shared = shared;
          l.peak_logical = std::max(l.peak_logical, BlocksOf(l));
          l.peak_physical = std::max(l.peak_physical, BlocksOf(l) - l.shared);
          StreamEvent e;
          e.token_ids.push_back(token);
          for (int i = 0; i < l.request.sampling.logprobs; ++i) {
            if (i == 0) e.logprobs.push_back({token, -0.25f, {}});
            e.logprobs.back().top.emplace_back('a' + (i % 26), -0.25f - 0.5f * i);
          }
          const SamplingParams& s = l.request.sampling;
          bool stop = std::find(s.stop_token_ids.begin(), s.stop_token_ids.end(), token) !=
                      s.stop_token_ids.end();
          // Stop strings: end when the text ends with one (it is not
          // returned); hold back a suffix that may start one.
          size_t emit_to = l.text.size();
          for (const std::string& stop_string : s.stop) {
            if (stop_string.empty()) continue;
            if (l.text.size() >= stop_string.size() &&
                l.text.compare(l.text.size() - stop_string.size(), stop_string.size(),
                               stop_string) == 0) {
              stop = true;
              emit_to = std::min(emit_to, l.text.size() - stop_string.size());
              continue;
            }
            for (size_t k = std::min(stop_string.size() - 1, l.text.size()); k > 0; --k) {
              if (l.text.compare(l.text.size() - k, k, stop_string, 0, k) == 0) {
                emit_to = std::min(emit_to, l.text.size() - k);
                break;
              }
            }
          }
          const bool length = l.generated >= s.max_tokens;
          if (length && !stop) emit_to = l.text.size();
          if (emit_to > l.emitted) {
            e.text_delta = l.text.substr(l.emitted, emit_to - l.emitted);
            l.emitted = emit_to;
          }
          if (stop || length) {
            e.finish_reason = stop ? FinishReason::kStop : FinishReason::kLength;
            end(std::move(*it), std::move(e));
            it = running_.erase(it);
          } else {
            deliveries.emplace_back(l.on_event, std::move(e));
            ++it;
          }
        }
        forward_time = absl::Now() - t1;
        if (!deliveries.empty()) ++steps_;
        observer = observer_;
      }
      if (stopping_ && waiting_.empty() && running_.empty() && deliveries.empty()) break;
    }
    for (auto& [callback, event] : deliveries) callback(event);
    if (observer && (schedule_time > absl::ZeroDuration() || forward_time > absl::ZeroDuration())) {
      observer(StepPhase::kSchedule, absl::ToDoubleSeconds(schedule_time));
      observer(prefill ? StepPhase::kPrefill : StepPhase::kDecode,
               absl::ToDoubleSeconds(forward_time));
      observer(StepPhase::kSample, 0.0);
      observer(StepPhase::kDedup, 0.0);
    }
    finished.clear();
    // Pace the steps.
    absl::MutexLock lock(&mu_);
    auto interrupt = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (!paused_ && (!waiting_.empty() || !running_.empty())) {
      mu_.AwaitWithTimeout(absl::Condition(&interrupt), options_.step_interval);
    }
  }
}

}  // namespace memshare::engine
