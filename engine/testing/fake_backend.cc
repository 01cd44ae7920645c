#include "engine/testing/fake_backend.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/sampler/sampler.h"

namespace memshare::engine {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The CUDA backend's checks of a DeviceSampling, and no token listed twice.
absl::Status CheckSampling(uint64_t seq_id, const DeviceSampling& d, int32_t vocab) {
  auto finite = [](float v) { return std::isfinite(v); };
  if (!finite(d.temperature) || !finite(d.top_p) || !(d.top_p > 0.f) || !finite(d.min_p) ||
      !(d.min_p <= 1.f) || !(d.repetition_penalty > 0.f) || !finite(d.repetition_penalty) ||
      !finite(d.presence_penalty) || !finite(d.frequency_penalty) || !(d.uniform >= 0.f) ||
      !(d.uniform < 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("seq ", seq_id, ": sampling values"));
  }
  if (d.penalty_token_ids.size() != d.penalty_counts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("seq ", seq_id, ": penalty list lengths"));
  }
  std::unordered_set<int32_t> seen;
  for (size_t k = 0; k < d.penalty_token_ids.size(); ++k) {
    if (d.penalty_token_ids[k] < 0 || d.penalty_token_ids[k] >= vocab || d.penalty_counts[k] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("seq ", seq_id, ": penalty token ", k));
    }
    if (!seen.insert(d.penalty_token_ids[k]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("seq ", seq_id, ": penalty token ", d.penalty_token_ids[k], " twice"));
    }
  }
  return absl::OkStatus();
}

// DeviceSampling's values in the CPU sampler's terms.
SamplingParams SamplingParamsOf(const DeviceSampling& d) {
  SamplingParams p;
  p.temperature = d.temperature > 0 ? d.temperature : 0.0f;
  p.top_k = std::max(d.top_k, 0);
  p.top_p = std::min(d.top_p, 1.0f);
  p.min_p = std::max(d.min_p, 0.0f);
  p.repetition_penalty = d.repetition_penalty;
  p.presence_penalty = d.presence_penalty;
  p.frequency_penalty = d.frequency_penalty;
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FakeBackend>> FakeBackend::Create(const Options& options) {
  if (options.vocab_size < 2 || options.num_blocks < 1 || options.block_size < 1 ||
      options.num_layer_groups < 1 || options.num_layers < options.num_layer_groups ||
      options.window < 0) {
    return absl::InvalidArgumentError("FakeBackend: bad options");
  }
  return std::unique_ptr<FakeBackend>(new FakeBackend(options));
}

FakeBackend::FakeBackend(const Options& options) : options_(options) {
  spec_.num_layer_groups = options.num_layer_groups;
  spec_.group_layer_begin = SplitLayers(options.num_layers, options.num_layer_groups);
  spec_.num_blocks = options.num_blocks;
  spec_.block_size = options.block_size;
  spec_.kv_heads_local = 1;
  spec_.head_dim = 1;
  slots_.assign(
      options.num_layer_groups,
      std::vector<int32_t>(static_cast<size_t>(options.num_blocks) * options.block_size, -1));
}

std::vector<float> FakeBackend::LogitsFor(absl::Span<const int32_t> history) const {
  size_t begin = 0;
  if (options_.window > 0 && history.size() > static_cast<size_t>(options_.window)) {
    begin = history.size() - options_.window;
  }
  uint64_t h = Mix(options_.seed);
  for (size_t i = begin; i < history.size(); ++i) h = Mix(h ^ static_cast<uint64_t>(history[i]));
  std::vector<float> logits(options_.vocab_size);
  for (int32_t v = 0; v < options_.vocab_size; ++v) {
    // In [0, 4): distinct enough that greedy has one clear winner, flat
    // enough that sampling spreads.
    logits[v] = static_cast<float>(Mix(h + static_cast<uint64_t>(v)) >> 40) * 0x1.0p-22f;
  }
  return logits;
}

int32_t FakeBackend::Read(const SequenceChunk& c, int group, int32_t pos) {
  const int32_t bs = spec_.block_size;
  const int32_t b = pos / bs;
  int32_t block = c.block_tables[group][b];
  int32_t slot = pos % bs;
  if (!c.block_shifts.empty() && !c.block_shifts[group].empty()) {
    slot += c.block_shifts[group][b];
    if (slot >= bs) {
      slot -= bs;
      block = c.block_tables_hi[group][b];
    }
  }
  return Slot(group, block, slot);
}

absl::Status FakeBackend::Forward(const StepPlan& plan, StepOutput* output) {
  if (!submitted_.empty()) {
    return absl::FailedPreconditionError("FakeBackend: Forward with steps submitted");
  }
  for (const SequenceChunk& c : plan.sequences) {
    if (c.fed_row >= 0) return absl::InvalidArgumentError("FakeBackend: fed chunk in Forward");
  }
  return Run(plan, output);
}

absl::Status FakeBackend::Submit(const StepPlan& plan) {
  if (!options_.pipelines) return Backend::Submit(plan);
  if (submitted_.size() >= 2) {
    return absl::FailedPreconditionError("FakeBackend: two steps submitted already");
  }
  StepPlan resolved = plan;
  for (SequenceChunk& c : resolved.sequences) {
    if (c.fed_row < 0) continue;
    if (c.token_ids.size() != 1 || c.fed_row >= static_cast<int32_t>(last_sampled_.size()) ||
        last_sampled_[c.fed_row] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("seq ", c.seq_id, ": fed_row ", c.fed_row, " names no sampled token"));
    }
    const int32_t token = last_sampled_[c.fed_row];
    c.token_ids = {token};
    c.fed_row = -1;
    if (c.sampling.has_value() && c.sampling->count_fed_token) {
      // The lists are a step behind: the fed token counts once more.
      DeviceSampling& d = *c.sampling;
      d.count_fed_token = false;
      const auto it = std::find(d.penalty_token_ids.begin(), d.penalty_token_ids.end(), token);
      if (it != d.penalty_token_ids.end()) {
        ++d.penalty_counts[it - d.penalty_token_ids.begin()];
      } else {
        d.penalty_token_ids.push_back(token);
        d.penalty_counts.push_back(1);
      }
    }
  }
  StepOutput out;
  if (absl::Status st = Run(resolved, &out); !st.ok()) return st;
  for (const SequenceChunk& c : plan.sequences) fed_chunks_ += c.fed_row >= 0 ? 1 : 0;
  submitted_.push_back(std::move(out));
  return absl::OkStatus();
}

absl::Status FakeBackend::Collect(StepOutput* output) {
  if (!options_.pipelines) return Backend::Collect(output);
  if (submitted_.empty()) return absl::FailedPreconditionError("FakeBackend: nothing submitted");
  *output = std::move(submitted_.front());
  submitted_.erase(submitted_.begin());
  return absl::OkStatus();
}

absl::Status FakeBackend::Run(const StepPlan& plan, StepOutput* output) {
  const absl::Time start = absl::Now();
  absl::Status status = RunStep(plan, output);
  run_nanos_.fetch_add(absl::ToInt64Nanoseconds(absl::Now() - start), std::memory_order_relaxed);
  return status;
}

absl::Status FakeBackend::RunStep(const StepPlan& plan, StepOutput* output) {
  const int32_t bs = spec_.block_size;
  // Validate the whole plan before writing anything.
  for (const SequenceChunk& c : plan.sequences) {
    const int64_t end = int64_t{c.start_pos} + static_cast<int64_t>(c.token_ids.size());
    if (c.start_pos < 0 || c.token_ids.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("seq ", c.seq_id, ": empty chunk"));
    }
    if (static_cast<int>(c.block_tables.size()) != spec_.num_layer_groups) {
      return absl::InvalidArgumentError(absl::StrCat("seq ", c.seq_id, ": wrong group count"));
    }
    for (const auto& table : c.block_tables) {
      if (static_cast<int64_t>(table.size()) * bs < end) {
        return absl::InvalidArgumentError(
            absl::StrCat("seq ", c.seq_id, ": block table too short"));
      }
      for (int32_t b : table) {
        if (b < 0 || b >= spec_.num_blocks) {
          return absl::InvalidArgumentError(absl::StrCat("seq ", c.seq_id, ": block ", b));
        }
      }
    }
    if (!c.block_tables_hi.empty() || !c.block_shifts.empty()) {
      if (static_cast<int>(c.block_tables_hi.size()) != spec_.num_layer_groups ||
          static_cast<int>(c.block_shifts.size()) != spec_.num_layer_groups) {
        return absl::InvalidArgumentError(absl::StrCat("seq ", c.seq_id, ": view group count"));
      }
      for (int g = 0; g < spec_.num_layer_groups; ++g) {
        const auto& hi = c.block_tables_hi[g];
        const auto& shifts = c.block_shifts[g];
        if (hi.empty() && shifts.empty()) continue;
        if (hi.size() != c.block_tables[g].size() || shifts.size() != hi.size()) {
          return absl::InvalidArgumentError(absl::StrCat("seq ", c.seq_id, ": view arrays"));
        }
        for (size_t b = 0; b < shifts.size(); ++b) {
          if (shifts[b] < 0 || shifts[b] >= bs || hi[b] < 0 || hi[b] >= spec_.num_blocks) {
            return absl::InvalidArgumentError(absl::StrCat("seq ", c.seq_id, ": view ", b));
          }
          // The block being written is never a view.
          if (shifts[b] != 0 && static_cast<int64_t>(b + 1) * bs > c.start_pos) {
            return absl::InvalidArgumentError(
                absl::StrCat("seq ", c.seq_id, ": writes into view ", b));
          }
        }
      }
    }
    for (int32_t t : c.token_ids) {
      if (t < 0 || t >= options_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("seq ", c.seq_id, ": token ", t));
      }
    }
    if (options_.samples_on_device && c.compute_logits && c.sampling.has_value()) {
      if (absl::Status st = CheckSampling(c.seq_id, *c.sampling, options_.vocab_size); !st.ok()) {
        return st;
      }
    }
  }
  if (fail_forwards_ > 0) {
    --fail_forwards_;
    return absl::InternalError("FakeBackend: injected failure");
  }
  if (plan_observer_) plan_observer_(plan);
  ++forward_calls_;
  max_tokens_in_step_ = std::max(max_tokens_in_step_, plan.NumTokens());
  max_sequences_in_step_ =
      std::max(max_sequences_in_step_, static_cast<int64_t>(plan.sequences.size()));
  total_tokens_ += plan.NumTokens();

  for (const SequenceChunk& c : plan.sequences) {
    std::vector<int32_t>& shadow = shadow_[c.seq_id];
    // Positions before start_pos this sequence never wrote (a prefix-cache
    // hit) are taken as they read now.
    for (int32_t pos = static_cast<int32_t>(shadow.size()); pos < c.start_pos; ++pos) {
      shadow.push_back(Read(c, 0, pos));
    }
    shadow.resize(c.start_pos);
    for (size_t i = 0; i < c.token_ids.size(); ++i) {
      const int32_t pos = c.start_pos + static_cast<int32_t>(i);
      shadow.push_back(c.token_ids[i]);
      for (int g = 0; g < spec_.num_layer_groups; ++g) {
        Slot(g, c.block_tables[g][pos / bs], pos % bs) = c.token_ids[i];
      }
    }
  }
  output->vocab_size = options_.vocab_size;
  output->Clear();
  bool need_logits = !options_.samples_on_device;
  std::vector<bool> row_needs;  // which rows need their logits (device sampling)
  std::vector<int32_t> sampled;
  std::vector<float> sampled_logprobs;
  SamplerWorkspace workspace;
  for (size_t s = 0; s < plan.sequences.size(); ++s) {
    const SequenceChunk& c = plan.sequences[s];
    if (!c.compute_logits) continue;
    const int32_t end = c.start_pos + static_cast<int32_t>(c.token_ids.size());
    // Read the history back through the tables; every group must hold what
    // the plans wrote for this sequence.
    std::vector<int32_t> history(end);
    const std::vector<int32_t>& shadow = shadow_[c.seq_id];
    bool consistent = true;
    for (int32_t pos = 0; pos < end; ++pos) {
      history[pos] = Read(c, 0, pos);
      for (int g = 0; g < spec_.num_layer_groups; ++g) {
        consistent &= Read(c, g, pos) == shadow[pos];
      }
    }
    if (!consistent) {
      ++history_mismatches_;
      history.push_back(-7);
    }
    std::vector<float> row = LogitsFor(history);
    output->rows.push_back(static_cast<int32_t>(s));
    output->logits.insert(output->logits.end(), row.begin(), row.end());
    if (!options_.samples_on_device) continue;
    row_needs.push_back(!c.sampling.has_value() || c.sampling->return_logits);
    if (!c.sampling.has_value()) {
      need_logits = true;
      sampled.push_back(-1);
      sampled_logprobs.push_back(std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    const DeviceSampling& d = *c.sampling;
    need_logits = need_logits || d.return_logits;
    const int32_t token = Sampler::SampleRow(row, SamplingParamsOf(d), d.penalty_token_ids,
                                             d.penalty_counts, d.uniform, &workspace);
    if (token < 0) return absl::InternalError("FakeBackend: nothing to sample from");
    sampled.push_back(token);
    sampled_logprobs.push_back(d.return_logprob ? Sampler::Logprob(row, token)
                                                : std::numeric_limits<float>::quiet_NaN());
    ++device_sampled_rows_;
  }
  if (std::any_of(sampled.begin(), sampled.end(), [](int32_t t) { return t >= 0; })) {
    output->sampled_token_ids = std::move(sampled);
    output->sampled_logprobs = std::move(sampled_logprobs);
  }
  if (!need_logits) {
    output->logits.clear();
  } else if (options_.pack_logits && options_.samples_on_device &&
             std::find(row_needs.begin(), row_needs.end(), false) != row_needs.end()) {
    const size_t V = options_.vocab_size;
    int32_t packed = 0;
    for (size_t i = 0; i < row_needs.size(); ++i) {
      if (!row_needs[i]) {
        output->logits_index.push_back(-1);
        continue;
      }
      std::copy(output->logits.begin() + i * V, output->logits.begin() + (i + 1) * V,
                output->logits.begin() + size_t(packed) * V);
      output->logits_index.push_back(packed++);
    }
    output->logits.resize(size_t(packed) * V);
  }
  logits_rows_returned_ += static_cast<int64_t>(output->logits.size()) / options_.vocab_size;
  last_sampled_ = output->sampled_token_ids;
  return absl::OkStatus();
}

absl::Status FakeBackend::CopyBlocks(int layer_group,
                                     absl::Span<const std::pair<int32_t, int32_t>> src_dst) {
  if (layer_group < 0 || layer_group >= spec_.num_layer_groups) {
    return absl::InvalidArgumentError("CopyBlocks: bad group");
  }
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || dst < 0 || src >= spec_.num_blocks || dst >= spec_.num_blocks) {
      return absl::InvalidArgumentError("CopyBlocks: bad block");
    }
  }
  ++copy_calls_;
  for (const auto& [src, dst] : src_dst) {
    for (int32_t i = 0; i < spec_.block_size; ++i)
      Slot(layer_group, dst, i) = Slot(layer_group, src, i);
  }
  return absl::OkStatus();
}

absl::Status FakeBackend::ComputeDistanceSums(int layer_group,
                                              absl::Span<const kvmanager::BlockPair> pairs,
                                              absl::Span<kvmanager::DistanceSums> out) {
  if (layer_group < 0 || layer_group >= spec_.num_layer_groups || out.size() != pairs.size()) {
    return absl::InvalidArgumentError("ComputeDistanceSums: bad arguments");
  }
  const int32_t bs = spec_.block_size;
  for (const auto& p : pairs) {
    if (p.candidate < 0 || p.reference < 0 || p.candidate >= spec_.num_blocks ||
        p.reference >= spec_.num_blocks || p.shift < 0 || p.shift >= bs ||
        (p.shift > 0 && (p.reference_next < 0 || p.reference_next >= spec_.num_blocks))) {
      return absl::InvalidArgumentError("ComputeDistanceSums: bad block");
    }
  }
  for (size_t i = 0; i < pairs.size(); ++i) {
    const kvmanager::BlockPair& p = pairs[i];
    kvmanager::DistanceSums d;
    for (int32_t s = 0; s < bs; ++s) {
      // The reference's slot s: its window when shifted.
      const int32_t r = s + p.shift;
      const int32_t ref =
          r < bs ? Slot(layer_group, p.reference, r) : Slot(layer_group, p.reference_next, r - bs);
      const double diff = Slot(layer_group, p.candidate, s) == ref ? 0 : 1;
      d.k_diff_sq += diff;
      d.v_diff_sq += diff;
      d.k_norm_sq += 1;
      d.v_norm_sq += 1;
    }
    out[i] = d;
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine
