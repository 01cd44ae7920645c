#include "engine/sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/sampler/sampling_params.h"

namespace memshare::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Index of the largest value (the lowest index among equals); -1 if none is
// finite or +inf (NaN never wins).
int32_t ArgMax(absl::Span<const float> values) {
  int32_t best = -1;
  float best_value = kNegInf;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] > best_value) {
      best_value = values[i];
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

// Temperature, top-k, top-p, min-p and one draw by inverse CDF (see the
// header) over `values`, the penalized logits; `uniform()` gives the draw,
// in [0, 1), called once and only when something is left to draw from.
// Leaves `values` and `ids` scrambled.
template <typename Uniform>
int32_t DrawFrom(const SamplingParams& p, int32_t vocab, std::vector<float>& values,
                 std::vector<int32_t>& ids, Uniform uniform) {
  const float inv_t = 1.0f / p.temperature;

  // Candidates: every token with a finite logit (or one of +inf).
  ids.clear();
  for (int32_t i = 0; i < vocab; ++i) {
    if (values[i] > kNegInf) ids.push_back(i);  // drops NaN and -inf
  }
  if (ids.empty()) return -1;
  for (int32_t id : ids) values[id] *= inv_t;

  auto higher = [&values](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  };
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < ids.size()) {
    std::nth_element(ids.begin(), ids.begin() + p.top_k, ids.end(), higher);
    ids.resize(p.top_k);
    std::sort(ids.begin(), ids.end());  // back to id order: the draw walks ids in order
  }

  // Unnormalized probabilities exp(x - max); the largest one is 1.
  float max_logit = kNegInf;
  for (int32_t id : ids) max_logit = std::max(max_logit, values[id]);
  if (std::isinf(max_logit)) {
    // +inf logits: they alone carry the mass, equally.
    std::vector<int32_t> inf_ids;
    for (int32_t id : ids) {
      if (std::isinf(values[id])) inf_ids.push_back(id);
    }
    ids.swap(inf_ids);
    for (int32_t id : ids) values[id] = 1.0f;
  } else {
    for (int32_t id : ids) values[id] = std::exp(values[id] - max_logit);
  }

  if (p.top_p < 1.0f) {
    double total = 0;
    for (int32_t id : ids) total += values[id];
    const double limit = static_cast<double>(p.top_p) * total;
    // Sort by probability in growing prefixes until the mass is reached:
    // usually a few hundred tokens carry top_p of the mass.
    auto more_likely = [&values](int32_t a, int32_t b) {
      return values[a] > values[b] || (values[a] == values[b] && a < b);
    };
    size_t sorted = std::min<size_t>(ids.size(), 256);
    size_t keep = ids.size();
    while (true) {
      std::partial_sort(ids.begin(), ids.begin() + sorted, ids.end(), more_likely);
      double mass_above = 0;
      size_t i = 0;
      // Keep token i while the mass of the tokens before it is below top_p.
      for (; i < sorted && mass_above < limit; ++i) mass_above += values[ids[i]];
      if (mass_above >= limit || sorted == ids.size()) {
        keep = std::max<size_t>(i, 1);
        break;
      }
      sorted = std::min(ids.size(), sorted * 4);
    }
    ids.resize(keep);
  }

  if (p.min_p > 0.0f) {
    // The largest unnormalized probability is 1 (it survives top-k and top-p).
    ids.erase(
        std::remove_if(ids.begin(), ids.end(), [&](int32_t id) { return values[id] < p.min_p; }),
        ids.end());
  }
  if (ids.empty()) return -1;

  double kept = 0;
  for (int32_t id : ids) kept += values[id];
  const double u = uniform();
  double target = u * kept;
  for (int32_t id : ids) {
    target -= values[id];
    if (target < 0) return id;
  }
  return ids.back();  // rounding left a sliver of mass at the end
}

bool HasPenalty(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

// log Z of the row's softmax (NaN and -inf count for nothing).
double LogPartition(absl::Span<const float> logits) {
  float max_logit = kNegInf;
  for (float v : logits) max_logit = std::max(max_logit, v);
  double sum = 0;
  for (float v : logits) {
    if (v > kNegInf) sum += std::exp(static_cast<double>(v) - max_logit);
  }
  return max_logit + std::log(sum);
}

float LogprobAt(absl::Span<const float> logits, double log_z, int32_t id) {
  const float v = logits[id];
  return std::isnan(v) ? kNegInf : static_cast<float>(v - log_z);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Sampler>> Sampler::Create(
    const Options& options, absl::Span<const int32_t> prompt_token_ids) {
  if (options.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size: must be > 0, got ", options.vocab_size));
  }
  SamplingLimits limits;
  limits.vocab_size = options.vocab_size;
  limits.max_logprobs = std::max(limits.max_logprobs, options.params.logprobs);
  limits.max_stop_strings = std::numeric_limits<int32_t>::max();
  limits.max_stop_token_ids = std::numeric_limits<int32_t>::max();
  limits.max_stop_string_bytes = std::numeric_limits<int32_t>::max();
  limits.max_tokens_limit = std::numeric_limits<int32_t>::max();
  if (absl::Status s = ValidateSamplingParams(options.params, limits); !s.ok()) return s;

  uint64_t seed;
  if (options.params.seed.has_value()) {
    seed = *options.params.seed;
  } else {
    std::random_device device;
    seed = (uint64_t{device()} << 32) ^ device();
  }
  auto sampler = std::unique_ptr<Sampler>(new Sampler(options, seed));
  if (options.params.repetition_penalty != 1.0f) {
    sampler->prompt_tokens_.insert(prompt_token_ids.begin(), prompt_token_ids.end());
  }
  sampler->keep_lists_ = options.keep_penalty_lists && HasPenalty(options.params);
  if (sampler->keep_lists_ && options.params.repetition_penalty != 1.0f) {
    for (int32_t id : prompt_token_ids) sampler->AddToPenaltyLists(id, 0);
  }
  return sampler;
}

Sampler::Sampler(const Options& options, uint64_t seed) : options_(options), rng_(seed) {}

void Sampler::ApplyPenalties(std::vector<float>& values) const {
  const SamplingParams& p = options_.params;
  const int32_t vocab = options_.vocab_size;
  if (p.repetition_penalty != 1.0f) {
    auto penalize = [&](int32_t id) {
      if (id < 0 || id >= vocab) return;
      float& v = values[id];
      v = v > 0 ? v / p.repetition_penalty : v * p.repetition_penalty;
    };
    for (int32_t id : prompt_tokens_) penalize(id);
    for (const auto& [id, count] : output_counts_) {
      if (!prompt_tokens_.contains(id)) penalize(id);
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    for (const auto& [id, count] : output_counts_) {
      if (id < 0 || id >= vocab) continue;
      values[id] -= p.frequency_penalty * static_cast<float>(count) + p.presence_penalty;
    }
  }
}

// `values` holds the penalized logits. Leaves `values` and `ids` scrambled.
int32_t Sampler::Draw(std::vector<float>& values, std::vector<int32_t>& ids) {
  return DrawFrom(options_.params, options_.vocab_size, values, ids,
                  [this] { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; });  // [0, 1)
}

void Sampler::FillLogprobs(absl::Span<const float> logits, SamplerWorkspace* workspace,
                           TokenLogprob* out) const {
  const double log_z = LogPartition(logits);
  auto logprob = [&](int32_t id) { return LogprobAt(logits, log_z, id); };
  out->logprob = logprob(out->token_id);

  const size_t n = std::min<size_t>(options_.params.logprobs, logits.size());
  std::vector<int32_t>& ids = workspace->ids;
  ids.resize(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  auto higher = [&](int32_t a, int32_t b) {
    const float va = std::isnan(logits[a]) ? kNegInf : logits[a];
    const float vb = std::isnan(logits[b]) ? kNegInf : logits[b];
    return va > vb || (va == vb && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), higher);
  out->top.clear();
  for (size_t i = 0; i < n; ++i) out->top.emplace_back(ids[i], logprob(ids[i]));
}

absl::StatusOr<TokenLogprob> Sampler::Sample(absl::Span<const float> logits,
                                             SamplerWorkspace* workspace) {
  if (static_cast<int64_t>(logits.size()) != options_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits row has ", logits.size(), " values, vocabulary has ", options_.vocab_size));
  }
  std::vector<float>& values = workspace->values;
  values.assign(logits.begin(), logits.end());
  ApplyPenalties(values);

  TokenLogprob result;
  result.token_id =
      options_.params.temperature == 0.0f ? ArgMax(values) : Draw(values, workspace->ids);
  if (result.token_id < 0) {
    return absl::InternalError("logits row holds no finite value to sample from");
  }
  if (options_.params.logprobs > 0) FillLogprobs(logits, workspace, &result);
  Note(result.token_id);
  return result;
}

void Sampler::Note(int32_t token_id) {
  ++output_counts_[token_id];
  ++num_generated_;
  if (keep_lists_) AddToPenaltyLists(token_id, 1);
}

void Sampler::AddToPenaltyLists(int32_t token_id, int32_t count) {
  auto [it, inserted] =
      penalty_index_.try_emplace(token_id, static_cast<int32_t>(penalty_ids_.size()));
  if (inserted) {
    penalty_ids_.push_back(token_id);
    penalty_counts_.push_back(count);
  } else {
    penalty_counts_[it->second] += count;
  }
}

float Sampler::NextUniform() {
  // The top 24 bits of the value Draw takes 53 from: exact in a float and
  // below 1.
  return static_cast<float>(rng_() >> 40) * 0x1.0p-24f;
}

void Sampler::Record(int32_t token_id) { Note(token_id); }

absl::StatusOr<TokenLogprob> Sampler::RecordWithLogprobs(absl::Span<const float> logits,
                                                         int32_t token_id,
                                                         SamplerWorkspace* workspace) {
  if (static_cast<int64_t>(logits.size()) != options_.vocab_size || token_id < 0 ||
      token_id >= options_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("logits row of ", logits.size(),
                                                   " values and token ", token_id,
                                                   " for a vocabulary of ", options_.vocab_size));
  }
  TokenLogprob result;
  result.token_id = token_id;
  if (options_.params.logprobs > 0) FillLogprobs(logits, workspace, &result);
  Note(token_id);
  return result;
}

int32_t Sampler::SampleRow(absl::Span<const float> logits, const SamplingParams& params,
                           absl::Span<const int32_t> penalty_token_ids,
                           absl::Span<const int32_t> penalty_counts, double uniform,
                           SamplerWorkspace* workspace) {
  const auto vocab = static_cast<int32_t>(logits.size());
  std::vector<float>& values = workspace->values;
  values.assign(logits.begin(), logits.end());
  // ApplyPenalties' operations, token by token, on the listed tokens.
  const size_t n = std::min(penalty_token_ids.size(), penalty_counts.size());
  if (params.repetition_penalty != 1.0f) {
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = penalty_token_ids[i];
      if (id < 0 || id >= vocab) continue;
      float& v = values[id];
      v = v > 0 ? v / params.repetition_penalty : v * params.repetition_penalty;
    }
  }
  if (params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f) {
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = penalty_token_ids[i];
      if (id < 0 || id >= vocab || penalty_counts[i] <= 0) continue;
      values[id] -= params.frequency_penalty * static_cast<float>(penalty_counts[i]) +
                    params.presence_penalty;
    }
  }
  if (params.temperature == 0.0f) return ArgMax(values);
  return DrawFrom(params, vocab, values, workspace->ids, [uniform] { return uniform; });
}

float Sampler::Logprob(absl::Span<const float> logits, int32_t token_id) {
  if (token_id < 0 || static_cast<size_t>(token_id) >= logits.size()) return kNegInf;
  return LogprobAt(logits, LogPartition(logits), token_id);
}

}  // namespace memshare::engine
