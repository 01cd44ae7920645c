#include "engine/sampler/sampling_params.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace memshare::engine {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view rule, const std::string& got) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": must be ", rule, ", got ", got));
}

std::string Show(float v) { return std::isnan(v) ? std::string("nan") : absl::StrCat(v); }

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, const SamplingLimits& limits) {
  // Written as !(in range) so that NaN fails every check.
  if (!(p.temperature >= 0.0f) || std::isinf(p.temperature)) {
    return Invalid("temperature", ">= 0 and finite", Show(p.temperature));
  }
  if (p.top_k < 0) return Invalid("top_k", ">= 0 (0 = off)", absl::StrCat(p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return Invalid("top_p", "in (0, 1]", Show(p.top_p));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return Invalid("min_p", "in [0, 1]", Show(p.min_p));
  if (!(p.repetition_penalty > 0.0f) || std::isinf(p.repetition_penalty)) {
    return Invalid("repetition_penalty", "> 0 and finite (1 = off)", Show(p.repetition_penalty));
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return Invalid("presence_penalty", "in [-2, 2]", Show(p.presence_penalty));
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return Invalid("frequency_penalty", "in [-2, 2]", Show(p.frequency_penalty));
  }
  if (p.max_tokens < 1 || p.max_tokens > limits.max_tokens_limit) {
    return Invalid("max_tokens", absl::StrCat("in [1, ", limits.max_tokens_limit, "]"),
                   absl::StrCat(p.max_tokens));
  }
  if (static_cast<int64_t>(p.stop.size()) > limits.max_stop_strings) {
    return Invalid("stop", absl::StrCat("at most ", limits.max_stop_strings, " strings"),
                   absl::StrCat(p.stop.size()));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    const std::string field = absl::StrCat("stop[", i, "]");
    if (p.stop[i].empty()) return Invalid(field, "non-empty", "\"\"");
    if (static_cast<int64_t>(p.stop[i].size()) > limits.max_stop_string_bytes) {
      return Invalid(field, absl::StrCat("at most ", limits.max_stop_string_bytes, " bytes"),
                     absl::StrCat(p.stop[i].size(), " bytes"));
    }
  }
  if (static_cast<int64_t>(p.stop_token_ids.size()) > limits.max_stop_token_ids) {
    return Invalid("stop_token_ids", absl::StrCat("at most ", limits.max_stop_token_ids, " ids"),
                   absl::StrCat(p.stop_token_ids.size()));
  }
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    const int32_t id = p.stop_token_ids[i];
    if (id < 0 || id >= limits.vocab_size) {
      return Invalid(absl::StrCat("stop_token_ids[", i, "]"),
                     absl::StrCat("in [0, ", limits.vocab_size, ")"), absl::StrCat(id));
    }
  }
  if (p.logprobs < 0 || p.logprobs > limits.max_logprobs) {
    return Invalid("logprobs", absl::StrCat("in [0, ", limits.max_logprobs, "]"),
                   absl::StrCat(p.logprobs));
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine
