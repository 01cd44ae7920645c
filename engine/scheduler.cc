#include "engine/scheduler.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace memshare::engine {

struct Scheduler::Sequence {
  uint64_t id = 0;
  int32_t priority = 0;
  uint64_t arrival = 0;
  absl::Time deadline;
  std::string cache_salt;
  kvmanager::DedupParams memshare;
  std::vector<int32_t> tokens;  // prompt, then generated
  int32_t prompt_len = 0;
  int32_t num_computed = 0;  // tokens whose KV is in the cache
  int32_t max_tokens = 0;
  bool ignore_eos = false;
  absl::flat_hash_set<int32_t> stop_ids;
  std::unique_ptr<Sampler> sampler;
  bool resident = false;         // admitted to the KV manager (in running_)
  bool ever_admitted = false;
  // Position of the token a pipelined step in flight computes, whose id the
  // KV manager holds as a placeholder until the step before it returns it;
  // -1: none.
  int32_t pipelined_pos = -1;
  Usage usage;

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t generated() const { return num_tokens() - prompt_len; }
};

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const Options& options,
                                                             Backend* backend,
                                                             kvmanager::KvManager* kv) {
  if (backend == nullptr || kv == nullptr) {
    return absl::InvalidArgumentError("Scheduler: backend and KV manager are required");
  }
  if (options.max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_batched_tokens: must be >= 1, got ", options.max_num_batched_tokens));
  }
  if (options.max_num_seqs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_seqs: must be >= 1, got ", options.max_num_seqs));
  }
  if (options.max_model_len < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_model_len: must be >= 2, got ", options.max_model_len));
  }
  if (options.max_prompt_len < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_prompt_len: must be >= 0, got ", options.max_prompt_len));
  }
  if (!(options.reserve_ratio_step >= 0 && options.reserve_ratio_step <= 1) ||
      !(options.reserve_ratio_decay >= 0 && options.reserve_ratio_decay <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reserve_ratio_step and reserve_ratio_decay: must be in [0, 1], got ",
        options.reserve_ratio_step, " and ", options.reserve_ratio_decay));
  }
  if (options.reserve_horizon_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reserve_horizon_tokens: must be >= 0, got ", options.reserve_horizon_tokens));
  }
  if (kv->shifted_sharing() && !backend->SupportsShiftedViews()) {
    return absl::InvalidArgumentError(
        "the KV manager may make MemShare shifted views (dedup.shifted_sharing) but the backend "
        "does not read them (Backend::SupportsShiftedViews)");
  }
  const KvCacheSpec& spec = backend->kv_spec();
  if (spec.block_size != kv->block_size() || spec.num_layer_groups != kv->num_layer_groups() ||
      spec.num_blocks != kv->num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backend and KV manager disagree: block size ", spec.block_size, " vs ", kv->block_size(),
        ", layer groups ", spec.num_layer_groups, " vs ", kv->num_layer_groups(), ", blocks ",
        spec.num_blocks, " vs ", kv->num_blocks()));
  }
  if (kv->num_sequences() != 0) {
    return absl::InvalidArgumentError("the KV manager already holds sequences");
  }
  for (int32_t id : options.eos_token_ids) {
    if (id < 0 || id >= backend->vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("eos_token_ids: ", id, " is outside [0, ", backend->vocab_size(), ")"));
    }
  }
  const int64_t capacity = int64_t{kv->num_blocks()} * kv->block_size();
  if (capacity < 2) return absl::InvalidArgumentError("KV pool holds fewer than 2 tokens");
  return std::unique_ptr<Scheduler>(new Scheduler(options, backend, kv));
}

Scheduler::Scheduler(const Options& options, Backend* backend, kvmanager::KvManager* kv)
    : options_(options),
      backend_(backend),
      kv_(kv),
      vocab_size_(backend->vocab_size()),
      device_sampling_(options.sample_on_device && backend->SamplesOnDevice()),
      pipelining_(options.pipeline_steps && backend->SupportsPipelining()),
      block_stamps_(static_cast<size_t>(std::max(0, kv->num_blocks())), 0u) {
  // A sequence alone must always fit in the pool, or it could never finish.
  const int64_t capacity = int64_t{kv->num_blocks()} * kv->block_size();
  max_model_len_ = static_cast<int32_t>(std::min<int64_t>(options.max_model_len, capacity));
  max_prompt_len_ = options.max_prompt_len > 0
                        ? std::min(options.max_prompt_len, max_model_len_ - 1)
                        : max_model_len_ - 1;
  eos_.insert(options.eos_token_ids.begin(), options.eos_token_ids.end());
}

Scheduler::~Scheduler() {
  if (in_flight_.has_value() && in_flight_->submitted) {
    StepOutput ignored;
    backend_->Collect(&ignored).IgnoreError();  // the backend's step ends before its KV does
  }
  for (auto& [id, s] : sequences_) {
    if (s->resident) kv_->Free(id).IgnoreError();  // only fails for an unknown id
  }
}

Scheduler::QueueKey Scheduler::KeyOf(const Sequence& s) const {
  return QueueKey(-s.priority, s.arrival, s.id);
}

absl::Status Scheduler::Validate(const SequenceRequest& request) const {
  const std::vector<int32_t>& prompt = request.prompt_token_ids;
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: must not be empty");
  const int32_t vocab = vocab_size_;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_token_ids[", i, "]: must be in [0, ", vocab, "), got ", prompt[i]));
    }
  }
  if (static_cast<int64_t>(prompt.size()) > max_prompt_len_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt: ", prompt.size(), " tokens is longer than the limit of ", max_prompt_len_,
        " tokens (max_model_len ", max_model_len_, " includes at least one generated token)"));
  }
  SamplingLimits limits = options_.sampling_limits;
  limits.vocab_size = vocab;
  return ValidateSamplingParams(request.sampling, limits);
}

absl::Status Scheduler::Add(SequenceRequest request) {
  if (sequences_.contains(request.seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", request.seq_id, " is live"));
  }
  if (absl::Status s = Validate(request); !s.ok()) return s;
  const std::vector<int32_t>& prompt = request.prompt_token_ids;

  Sampler::Options sampler_options;
  sampler_options.params = request.sampling;
  sampler_options.vocab_size = vocab_size_;
  // Sampled on the device (top-n alternatives from the logits row the
  // backend returns beside the token, DeviceSamplingOf): the penalty lists
  // travel with each chunk.
  sampler_options.keep_penalty_lists = device_sampling_;
  absl::StatusOr<std::unique_ptr<Sampler>> sampler = Sampler::Create(sampler_options, prompt);
  if (!sampler.ok()) return sampler.status();

  auto seq = std::make_unique<Sequence>();
  seq->id = request.seq_id;
  seq->priority = request.priority;
  seq->arrival = next_arrival_++;
  seq->deadline = request.deadline;
  seq->cache_salt = std::move(request.cache_salt);
  seq->memshare = request.memshare;
  seq->prompt_len = static_cast<int32_t>(prompt.size());
  seq->tokens = std::move(request.prompt_token_ids);
  seq->max_tokens = request.sampling.max_tokens;
  seq->ignore_eos = request.sampling.ignore_eos;
  seq->stop_ids.insert(request.sampling.stop_token_ids.begin(),
                       request.sampling.stop_token_ids.end());
  seq->sampler = std::move(*sampler);
  seq->usage.prompt_tokens = seq->prompt_len;
  waiting_.insert(KeyOf(*seq));
  sequences_[seq->id] = std::move(seq);
  RefreshWaitingStats();
  return absl::OkStatus();
}

void Scheduler::FreeBlocks(Sequence* s) {
  // Free fails only for a sequence the KV manager does not know, which
  // resident sequences never are.
  kv_->Free(s->id).IgnoreError();
  s->resident = false;
  running_.erase(std::find(running_.begin(), running_.end(), s));
}

double Scheduler::ReserveBlocks(const Sequence& s) const {
  const int32_t left =
      std::min(std::max(s.max_tokens - s.generated(), 0), options_.reserve_horizon_tokens);
  double share = 1;  // physical blocks per logical block, over every group
  if (absl::StatusOr<kvmanager::KvManager::SequenceInfo> info = kv_->GetSequenceInfo(s.id);
      info.ok() && info->logical_blocks > 0) {
    const double logical = static_cast<double>(info->logical_blocks) * kv_->num_layer_groups();
    share = std::clamp(1 - static_cast<double>(info->remapped_blocks) / logical, 0.0, 1.0);
  }
  return stats_.reserve_ratio * left * share / kv_->block_size();
}

void Scheduler::ResegmentOutput(Sequence* s) {
  absl::StatusOr<kvmanager::KvManager::SequenceInfo> info = kv_->GetSequenceInfo(s->id);
  if (!info.ok() || !info->memshare) return;
  // As in Step(): empty pieces without a token_piece function.
  std::vector<std::string> pieces(s->generated());
  if (options_.token_piece) {
    for (int32_t i = 0; i < s->generated(); ++i) {
      pieces[i] = options_.token_piece(s->tokens[s->prompt_len + i]);
    }
  }
  std::vector<absl::string_view> views(pieces.begin(), pieces.end());
  if (!kv_->OnTokensGenerated(s->id, views).ok()) ++stats_.dedup_errors;
}

void Scheduler::Preempt(Sequence* s) {
  FreeBlocks(s);
  s->num_computed = 0;
  waiting_.insert(KeyOf(*s));
  ++stats_.preemptions;
}

SequenceOutput Scheduler::End(Sequence* s, FinishReason reason, absl::Status status) {
  SequenceOutput out;
  out.seq_id = s->id;
  out.finished = true;
  out.finish_reason = reason;
  out.status = std::move(status);
  if (s->resident) {
    UpdatePeaks(s);
    FreeBlocks(s);
  } else {
    waiting_.erase(KeyOf(*s));
  }
  s->usage.completion_tokens = s->generated();
  out.usage = s->usage;
  sequences_.erase(s->id);  // destroys s
  RefreshWaitingStats();
  return out;
}

void Scheduler::UpdatePeaks(Sequence* s) {
  int32_t group_physical = 0;
  int32_t group_logical = 0;
  for (int32_t g = 0; g < kv_->num_layer_groups(); ++g) {
    absl::StatusOr<absl::Span<const int32_t>> table = kv_->GetBlockTable(s->id, g);
    if (!table.ok()) return;
    // Distinct blocks: a block counts the first time this pass stamps it.
    if (++stamp_ == 0) {
      std::fill(block_stamps_.begin(), block_stamps_.end(), 0u);
      stamp_ = 1;
    }
    int32_t physical = 0;
    for (const int32_t b : *table) {
      if (b < 0 || static_cast<size_t>(b) >= block_stamps_.size())
        continue;  // never: ids of the pool
      if (block_stamps_[b] != stamp_) {
        block_stamps_[b] = stamp_;
        ++physical;
      }
    }
    const auto logical = static_cast<int32_t>(table->size());
    group_physical += physical;
    group_logical += logical;
    if (g != 0) continue;
    s->usage.kv_blocks_peak_physical = std::max(s->usage.kv_blocks_peak_physical, physical);
    s->usage.kv_blocks_peak_logical = std::max(s->usage.kv_blocks_peak_logical, logical);
    // Entries that name a block the table already holds: what MemShare's
    // remaps save this sequence (layer group 0).
    s->usage.shared_blocks = std::max(s->usage.shared_blocks, logical - physical);
  }
  s->usage.kv_group_blocks_peak_physical =
      std::max(s->usage.kv_group_blocks_peak_physical, group_physical);
  s->usage.kv_group_blocks_peak_logical =
      std::max(s->usage.kv_group_blocks_peak_logical, group_logical);
}

void Scheduler::RefreshWaitingStats() {
  stats_.running = static_cast<int32_t>(running_.size());
  stats_.waiting = static_cast<int32_t>(waiting_.size());
  int64_t tokens = 0;
  for (const QueueKey& key : waiting_) {
    const Sequence& s = *sequences_.at(std::get<2>(key));
    tokens += s.num_tokens() - s.num_computed;
  }
  stats_.waiting_tokens = tokens;
}

DeviceSampling Scheduler::DeviceSamplingOf(Sequence* s) {
  const SamplingParams& p = s->sampler->params();
  DeviceSampling d;
  d.temperature = p.temperature;
  d.top_k = p.top_k;
  d.top_p = p.top_p;
  d.min_p = p.min_p;
  d.repetition_penalty = p.repetition_penalty;
  d.presence_penalty = p.presence_penalty;
  d.frequency_penalty = p.frequency_penalty;
  if (!IsGreedy(p)) d.uniform = s->sampler->NextUniform();
  // Copies of lists the Sampler keeps up to date token by token (empty
  // without penalties): the plan is plain data.
  d.penalty_token_ids = s->sampler->penalty_token_ids();
  d.penalty_counts = s->sampler->penalty_counts();
  // Top-n logprobs: the raw row too, for the alternatives (TakeToken).
  d.return_logits = p.logprobs > 0;
  return d;
}

absl::Status Scheduler::CheckStepOutput(const StepOutput& result) const {
  const auto rows = static_cast<int64_t>(result.rows.size());
  // Logits may be left out, or packed, only by a backend that samples on
  // the device (whose rows' needs TakeToken checks).
  if (!result.logits_index.empty()) {
    int64_t packed = 0;
    bool ok = device_sampling_ && static_cast<int64_t>(result.logits_index.size()) == rows;
    for (size_t i = 0; ok && i < result.logits_index.size(); ++i) {
      const int32_t at = result.logits_index[i];
      ok = at == -1 || at == packed;  // in row order, without gaps
      packed += at >= 0 ? 1 : 0;
    }
    if (!ok || static_cast<int64_t>(result.logits.size()) != packed * result.vocab_size) {
      return absl::InternalError("backend returned a malformed packed logits array");
    }
  } else if ((!result.logits.empty() || !device_sampling_) &&
             static_cast<int64_t>(result.logits.size()) != rows * result.vocab_size) {
    return absl::InternalError("backend returned a malformed logits array");
  }
  if ((!result.sampled_token_ids.empty() &&
       static_cast<int64_t>(result.sampled_token_ids.size()) != rows) ||
      (!result.sampled_logprobs.empty() &&
       static_cast<int64_t>(result.sampled_logprobs.size()) != rows)) {
    return absl::InternalError("backend returned malformed sampled tokens");
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenLogprob> Scheduler::TakeToken(Sequence* s, const SequenceChunk& chunk,
                                                  const StepOutput& result, int32_t row) {
  if (row < 0) {
    return absl::InternalError("backend returned no logits for a sequence that needs them");
  }
  if (chunk.sampling.has_value()) {
    if (result.sampled_token_ids.empty() || result.sampled_token_ids[row] < 0) {
      return absl::InternalError("backend did not sample a sequence it was asked to sample");
    }
    TokenLogprob token;
    token.token_id = result.sampled_token_ids[row];
    if (token.token_id >= vocab_size_) {
      return absl::InternalError(absl::StrCat("backend sampled token ", token.token_id,
                                              ", outside the vocabulary of ", vocab_size_));
    }
    ++stats_.device_sampled_tokens;
    if (chunk.sampling->return_logits) {  // top-n logprobs, from the raw row
      if (!result.HasRow(row)) {
        return absl::InternalError("backend returned no logits for a row that asked for them");
      }
      return s->sampler->RecordWithLogprobs(
          absl::Span<const float>(result.Row(row), result.vocab_size), token.token_id, &workspace_);
    }
    if (chunk.sampling->return_logprob && !result.sampled_logprobs.empty()) {
      token.logprob = result.sampled_logprobs[row];
    }
    s->sampler->Record(token.token_id);
    return token;
  }
  if (!result.HasRow(row)) {
    return absl::InternalError("backend returned no logits for a sequence that needs them");
  }
  return s->sampler->Sample(absl::Span<const float>(result.Row(row), result.vocab_size),
                            &workspace_);
}

absl::StatusOr<SequenceOutput> Scheduler::Abort(uint64_t seq_id) {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq_id, " is not live"));
  }
  ++stats_.aborted;
  return End(it->second.get(), FinishReason::kAbort, absl::OkStatus());
}

absl::StatusOr<SequenceOutput> Scheduler::Finish(uint64_t seq_id, FinishReason reason) {
  auto it = sequences_.find(seq_id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq_id, " is not live"));
  }
  return End(it->second.get(), reason, absl::OkStatus());
}

Scheduler::Sequence* Scheduler::Live(const Pending::Item& item) const {
  const auto it = sequences_.find(item.id);
  if (it == sequences_.end() || it->second->arrival != item.arrival || !it->second->resident) {
    return nullptr;
  }
  return it->second.get();
}

std::optional<Scheduler::Pending> Scheduler::Schedule(std::vector<SequenceOutput>* outputs) {
  // 2. Running sequences, in priority order.
  struct Scheduled {
    Sequence* seq;
    int32_t num_tokens;
  };
  std::vector<Scheduled> scheduled;
  int32_t budget = options_.max_num_batched_tokens;
  bool preempted = false;
  std::vector<Sequence*> order = running_;
  std::sort(order.begin(), order.end(),
            [this](const Sequence* a, const Sequence* b) { return KeyOf(*a) < KeyOf(*b); });
  for (size_t i = 0; i < order.size() && budget > 0; ++i) {
    Sequence* s = order[i];
    if (s == nullptr || !s->resident) continue;  // ended or preempted earlier in this loop
    const int32_t n = std::min(s->num_tokens() - s->num_computed, budget);
    const absl::Span<const int32_t> chunk(s->tokens.data() + s->num_computed,
                                          static_cast<size_t>(n));
    bool appended = false;
    while (true) {
      absl::Status st = kv_->AppendTokens(s->id, chunk);
      if (st.ok()) {
        appended = true;
        break;
      }
      if (!absl::IsResourceExhausted(st)) {
        ++stats_.failed;
        outputs->push_back(End(s, FinishReason::kError, st));
        order[i] = nullptr;  // destroyed
        break;
      }
      // Preempt the lowest-priority, latest-arrived resident sequence (maybe
      // this one); if it was already scheduled this step, unschedule it
      // (freeing it drops the tokens it appended).
      Sequence* victim = nullptr;
      for (size_t j = order.size(); j-- > 0;) {
        if (order[j] != nullptr && order[j]->resident) {
          victim = order[j];
          break;
        }
      }
      for (auto it = scheduled.begin(); it != scheduled.end(); ++it) {
        if (it->seq == victim) {
          budget += it->num_tokens;
          scheduled.erase(it);
          break;
        }
      }
      Preempt(victim);
      preempted = true;
      if (victim == s) break;
    }
    if (appended) {
      scheduled.push_back({s, n});
      budget -= n;
    }
  }

  // 3. Waiting sequences. When the pool was short this step, or the batch
  // is full, only a sequence of higher priority than some resident one comes
  // in, by preempting the lowest of those.
  auto lower_priority_victim = [this](const Sequence* s) -> Sequence* {
    Sequence* victim = nullptr;
    for (Sequence* r : running_) {
      if (r->priority < s->priority && (victim == nullptr || KeyOf(*r) > KeyOf(*victim))) {
        victim = r;
      }
    }
    return victim;
  };
  if (preempted) {
    stats_.reserve_ratio = std::min(1.0, stats_.reserve_ratio + options_.reserve_ratio_step);
  }
  // Conservative admission: the blocks kept for the residents' growth.
  double reserve = 0;
  if (stats_.reserve_ratio > 0) {
    for (const Sequence* r : running_) reserve += ReserveBlocks(*r);
  }
  auto unschedule_and_preempt = [&](Sequence* victim) {
    for (auto it = scheduled.begin(); it != scheduled.end(); ++it) {
      if (it->seq == victim) {
        budget += it->num_tokens;
        scheduled.erase(it);
        break;
      }
    }
    Preempt(victim);
    preempted = true;
  };
  while (budget > 0 && !waiting_.empty()) {
    Sequence* s = sequences_.at(std::get<2>(*waiting_.begin())).get();
    const bool full = static_cast<int32_t>(running_.size()) >= options_.max_num_seqs;
    const int32_t block_size = kv_->block_size();
    const bool short_of_reserve =
        reserve > 0 && kv_->NumAvailableBlocks() - (s->num_tokens() + block_size - 1) / block_size <
                           reserve;
    if (preempted || full || short_of_reserve) {
      Sequence* victim = lower_priority_victim(s);
      if (victim == nullptr) break;
      if (full) unschedule_and_preempt(victim);
    }
    // A preempted sequence comes back with its generated tokens as prompt:
    // they are recomputed (or found in the prefix cache), and its output
    // goes on from where it was.
    kvmanager::KvManager::SequenceSpec spec;
    spec.seq_id = s->id;
    spec.prompt_token_ids = s->tokens;
    spec.cache_salt = s->cache_salt;
    spec.memshare = s->memshare;
    if (s->generated() > 0) spec.output_begin = s->prompt_len;
    absl::StatusOr<kvmanager::KvManager::Admission> admission = kv_->AddSequence(spec, budget);
    while (absl::IsResourceExhausted(admission.status())) {
      Sequence* victim = lower_priority_victim(s);
      if (victim == nullptr) break;
      unschedule_and_preempt(victim);
      admission = kv_->AddSequence(spec, budget);
    }
    if (!admission.ok()) {
      if (absl::IsResourceExhausted(admission.status())) break;  // wait for blocks
      ++stats_.failed;
      outputs->push_back(End(s, FinishReason::kError, admission.status()));
      continue;
    }
    waiting_.erase(waiting_.begin());
    s->resident = true;
    s->num_computed = admission->cached_tokens;
    if (s->generated() > 0) ResegmentOutput(s);
    if (!s->ever_admitted) {
      s->ever_admitted = true;
      s->usage.cached_prompt_tokens = std::min(admission->cached_tokens, s->prompt_len);
      stats_.prefix_cached_tokens += s->usage.cached_prompt_tokens;
    }
    running_.push_back(s);
    if (stats_.reserve_ratio > 0) reserve += ReserveBlocks(*s);
    scheduled.push_back({s, admission->scheduled_tokens});
    budget -= admission->scheduled_tokens;
  }
  RefreshWaitingStats();
  if (scheduled.empty()) return std::nullopt;

  // The plan.
  Pending p;
  StepPlan& plan = p.plan;
  plan.sequences.reserve(scheduled.size());
  absl::Status& run_status = p.status;
  for (const Scheduled& sc : scheduled) {
    Sequence* s = sc.seq;
    SequenceChunk chunk;
    chunk.seq_id = s->id;
    chunk.start_pos = s->num_computed;
    chunk.token_ids.assign(s->tokens.begin() + s->num_computed,
                           s->tokens.begin() + s->num_computed + sc.num_tokens);
    if (run_status.ok()) {
      run_status = kv_->CopyBlockTables(s->id, &chunk.block_tables, &chunk.block_tables_hi,
                                        &chunk.block_shifts);
    }
    chunk.compute_logits = s->num_computed + sc.num_tokens == s->num_tokens();
    if (chunk.compute_logits && device_sampling_) chunk.sampling = DeviceSamplingOf(s);
    (s->num_computed + 1 == s->num_tokens() && s->num_computed >= s->prompt_len
         ? p.decode_tokens
         : p.prefill_tokens) += sc.num_tokens;
    plan.sequences.push_back(std::move(chunk));
    p.items.push_back({s->id, s->arrival, sc.num_tokens});
  }
  return p;
}

void Scheduler::Launch(Pending* p) {
  std::vector<std::vector<kvmanager::BlockCopy>> copies = kv_->TakePendingCopies();
  for (size_t g = 0; g < copies.size() && p->status.ok(); ++g) {
    if (!copies[g].empty()) p->status = backend_->CopyBlocks(static_cast<int>(g), copies[g]);
  }
  if (!p->status.ok()) return;
  if (pipelining_) {
    p->status = backend_->Submit(p->plan);
    p->submitted = p->status.ok();
    return;
  }
  // Reused step after step: a logits array that crosses to the host keeps
  // its allocation (64 rows of a 152k vocabulary are 39 MB).
  StepOutput& result = step_output_;
  result.Clear();
  p->status = backend_->Forward(p->plan, &result);
}

std::optional<Scheduler::Pending> Scheduler::Continue(const Pending& p,
                                                      std::vector<SequenceOutput>* outputs) {
  if (!pipelining_ || !p.submitted) return std::nullopt;
  // Nothing waiting that a step scheduled now would admit: the queue is
  // empty, or its head outranks no resident sequence and finds the batch
  // full or the pool short (as under memory pressure).
  if (!waiting_.empty()) {
    const Sequence& head = *sequences_.at(std::get<2>(*waiting_.begin()));
    for (const Sequence* r : running_) {
      if (r->priority < head.priority) return std::nullopt;
    }
    const int32_t budget = options_.max_num_batched_tokens - static_cast<int32_t>(running_.size());
    if (static_cast<int32_t>(running_.size()) < options_.max_num_seqs && budget > 0 &&
        kv_->ProbePrefix(head.tokens, head.cache_salt, std::min(budget, head.num_tokens())).fits) {
      return std::nullopt;
    }
  }
  // Every resident sequence goes on from its row of p, sampled on the
  // device (penalty lists, a step behind, count the fed token there:
  // DeviceSampling::count_fed_token).
  struct Next {
    Sequence* seq;
    int32_t row;
    int32_t pos;
  };
  std::vector<Next> next;
  std::vector<uint64_t>& ids = continue_ids_;
  ids.clear();
  size_t live = 0;
  int32_t row = 0;
  for (size_t i = 0; i < p.items.size(); ++i) {
    const SequenceChunk& c = p.plan.sequences[i];
    const int32_t r = c.compute_logits ? row++ : -1;
    Sequence* s = Live(p.items[i]);
    if (s == nullptr) continue;
    ++live;
    if (r < 0 || !c.sampling.has_value()) return std::nullopt;
    // After p the sequence holds pos + 1 tokens; one that surely ends there
    // by length is left out.
    const int32_t pos = c.start_pos + static_cast<int32_t>(c.token_ids.size());
    if (pos + 1 - s->prompt_len >= s->max_tokens || pos + 1 >= max_model_len_) continue;
    next.push_back({s, r, pos});
    ids.push_back(s->id);
  }
  if (live != running_.size() || next.empty() ||
      static_cast<int64_t>(next.size()) > options_.max_num_batched_tokens ||
      !kv_->CanAppendAll(ids, 1)) {
    return std::nullopt;
  }
  Pending q;
  q.plan.sequences.reserve(next.size());
  for (const Next& n : next) {
    Sequence* s = n.seq;
    SequenceChunk chunk;
    chunk.seq_id = s->id;
    chunk.start_pos = n.pos;
    chunk.token_ids = {0};  // a placeholder: the token comes from p's row on the device
    chunk.fed_row = n.row;
    absl::Status st = kv_->AppendTokens(s->id, chunk.token_ids);
    if (st.ok()) {
      st = kv_->CopyBlockTables(s->id, &chunk.block_tables, &chunk.block_tables_hi,
                                &chunk.block_shifts);
    }
    if (!st.ok()) {  // never after CanAppendAll; the sequence ends (p's row is dropped)
      ++stats_.failed;
      outputs->push_back(End(s, FinishReason::kError, st));
      continue;
    }
    s->pipelined_pos = n.pos;
    chunk.sampling = DeviceSamplingOf(s);
    chunk.sampling->count_fed_token = !chunk.sampling->penalty_token_ids.empty();
    q.plan.sequences.push_back(std::move(chunk));
    q.items.push_back({s->id, s->arrival, 1});
    ++q.decode_tokens;
  }
  if (q.items.empty()) return std::nullopt;
  Launch(&q);
  ++stats_.pipelined_steps;
  return q;
}

void Scheduler::Complete(Pending& p, const Pending* next, std::vector<SequenceOutput>* outputs) {
  const absl::Time t_forward = absl::Now();
  StepOutput& result = step_output_;
  absl::Status run_status = p.status;
  if (run_status.ok() && p.submitted) {
    result.Clear();
    run_status = backend_->Collect(&result);
  }
  if (run_status.ok()) run_status = CheckStepOutput(result);
  // The next step's tokens, appended already, are its to commit.
  std::vector<uint64_t>& keep = continue_ids_;
  keep.clear();
  if (next != nullptr) {
    for (const Pending::Item& item : next->items) keep.push_back(item.id);
  }
  if (run_status.ok()) run_status = kv_->CommitStep(keep);
  const absl::Time t_sample = absl::Now();
  stats_.last_forward_seconds = absl::ToDoubleSeconds(t_sample - t_forward);
  if (!run_status.ok()) {
    // The sequences of a failed step end with the error (freeing them drops
    // their uncommitted tokens); the others go on.
    for (const Pending::Item& item : p.items) {
      if (Sequence* s = Live(item); s != nullptr) {
        ++stats_.failed;
        outputs->push_back(End(s, FinishReason::kError, run_status));
      }
    }
    return;
  }
  const StepPlan& plan = p.plan;
  ++stats_.steps;
  stats_.last_step_sequences = static_cast<int32_t>(plan.sequences.size());
  stats_.last_step_tokens = static_cast<int32_t>(plan.NumTokens());
  stats_.last_step_prefill_tokens = p.prefill_tokens;
  stats_.last_step_decode_tokens = p.decode_tokens;
  stats_.prompt_tokens_computed += p.prefill_tokens;

  // Row of logits per plan index.
  std::vector<int32_t> row_of(plan.sequences.size(), -1);
  for (size_t r = 0; r < result.rows.size(); ++r) {
    if (result.rows[r] >= 0 && result.rows[r] < static_cast<int32_t>(row_of.size())) {
      row_of[result.rows[r]] = static_cast<int32_t>(r);
    }
  }

  for (size_t i = 0; i < p.items.size(); ++i) {
    // A sequence that ended while the step ran (deadline, abort, a stop
    // string one step back) drops its row.
    Sequence* s = Live(p.items[i]);
    if (s == nullptr) continue;
    s->num_computed += p.items[i].num_tokens;
    UpdatePeaks(s);
    if (!plan.sequences[i].compute_logits) continue;
    absl::StatusOr<TokenLogprob> token = TakeToken(s, plan.sequences[i], result, row_of[i]);
    if (!token.ok()) {
      ++stats_.failed;
      outputs->push_back(End(s, FinishReason::kError, token.status()));
      continue;
    }
    const int32_t id = token->token_id;
    s->tokens.push_back(id);
    ++stats_.generated_tokens;
    if (s->pipelined_pos >= 0) {
      // The next step, in flight, computes this token: its id in the KV
      // manager was a placeholder.
      absl::Status st =
          s->pipelined_pos == s->num_tokens() - 1
              ? kv_->SetToken(s->id, s->pipelined_pos, id)
              : absl::InternalError(absl::StrCat("pipelined step at position ", s->pipelined_pos,
                                                 ", token at ", s->num_tokens() - 1));
      s->pipelined_pos = -1;
      if (!st.ok()) {
        ++stats_.failed;
        outputs->push_back(End(s, FinishReason::kError, st));
        continue;
      }
    }
    FinishReason reason = FinishReason::kNone;
    if (s->stop_ids.contains(id) || (!s->ignore_eos && eos_.contains(id))) {
      reason = FinishReason::kStop;
    } else if (s->generated() >= s->max_tokens || s->num_tokens() >= max_model_len_) {
      reason = FinishReason::kLength;
    }
    SequenceOutput out;
    if (reason != FinishReason::kNone) {
      out = End(s, reason, absl::OkStatus());
    } else {
      out.seq_id = s->id;
      // The segmenter reads this residency's generated tokens, in order.
      const std::string piece = options_.token_piece ? options_.token_piece(id) : std::string();
      const absl::string_view pieces[] = {piece};
      if (absl::Status st = kv_->OnTokensGenerated(s->id, pieces); !st.ok()) {
        ++stats_.dedup_errors;
      }
    }
    out.tokens.push_back(std::move(*token));
    outputs->push_back(std::move(out));
  }
  stats_.last_sample_seconds = absl::ToDoubleSeconds(absl::Now() - t_sample);
}

std::vector<SequenceOutput> Scheduler::Step(absl::Time now) {
  std::vector<SequenceOutput> outputs;
  const absl::Time t_start = absl::Now();
  stats_.last_schedule_seconds = stats_.last_forward_seconds = 0;
  stats_.last_sample_seconds = stats_.last_dedup_seconds = 0;

  // 1. Deadlines.
  std::vector<Sequence*> expired;
  for (auto& [id, s] : sequences_) {
    if (s->deadline <= now) expired.push_back(s.get());
  }
  for (Sequence* s : expired) {
    ++stats_.deadline_exceeded;
    const int32_t generated = s->generated();
    outputs.push_back(End(s, FinishReason::kAbort,
                          absl::DeadlineExceededError(absl::StrCat(
                              "deadline passed after ", generated, " generated tokens"))));
  }

  stats_.reserve_ratio = std::max(0.0, stats_.reserve_ratio - options_.reserve_ratio_decay);

  // 2-3. A new step, unless one is in flight already (pipelined).
  if (!in_flight_.has_value()) {
    in_flight_ = Schedule(&outputs);
    if (!in_flight_.has_value()) return outputs;
    Launch(&*in_flight_);
  }
  Pending current = *std::move(in_flight_);
  in_flight_.reset();

  // 4. The step after it, submitted before this one's results are read,
  // then this one's results.
  in_flight_ = Continue(current, &outputs);
  stats_.last_schedule_seconds = absl::ToDoubleSeconds(absl::Now() - t_start);
  Complete(current, in_flight_.has_value() ? &*in_flight_ : nullptr, &outputs);
  const absl::Time t_dedup = absl::Now();

  // 5. MemShare on the reasoning steps that finished (their tokens written).
  if (kv_->HasPendingDedup()) {
    if (absl::Status st = kv_->RunDedup(*backend_); !st.ok()) {
      ++stats_.dedup_errors;
    } else {
      for (Sequence* s : running_) UpdatePeaks(s);
    }
    stats_.last_dedup_seconds = absl::ToDoubleSeconds(absl::Now() - t_dedup);
  }
  RefreshWaitingStats();
  return outputs;
}

}  // namespace memshare::engine
