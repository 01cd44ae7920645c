#include "engine/server/request_conversion.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace memshare::engine {
namespace {

absl::Status Invalid(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(absl::string_view(field.data(), field.size()), ": ",
                   absl::string_view(problem.data(), problem.size())));
}

absl::Status CheckText(std::string_view field, const std::string& value, int64_t max_bytes) {
  if (static_cast<int64_t>(value.size()) > max_bytes) {
    return Invalid(field, absl::StrCat("longer than ", max_bytes, " bytes (", value.size(), ")"));
  }
  if (!IsValidUtf8(value)) return Invalid(field, "not valid UTF-8");
  return absl::OkStatus();
}

// Finite and inside [lo, hi] (NaN fails every comparison).
bool InRange(float v, float lo, float hi) { return v >= lo && v <= hi; }

absl::Status CheckTokenIds(std::string_view field,
                           const google::protobuf::RepeatedField<int32_t>& ids, int32_t vocab) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return Invalid(absl::StrCat(absl::string_view(field.data(), field.size()), "[", i, "]"),
                     absl::StrCat(ids[i], " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSampling(const v1::SamplingParams& p, const RequestLimits& limits,
                           SamplingParams* out) {
  if (p.has_temperature()) {
    if (!InRange(p.temperature(), 0.0f, 100.0f)) {
      return Invalid("sampling.temperature",
                     absl::StrCat("must be in [0, 100], got ", p.temperature()));
    }
    out->temperature = p.temperature();
  }
  if (p.top_k() < 0) {
    return Invalid("sampling.top_k", absl::StrCat("must be >= 0, got ", p.top_k()));
  }
  out->top_k = p.top_k();
  if (p.has_top_p()) {
    if (!(p.top_p() > 0.0f && p.top_p() <= 1.0f)) {
      return Invalid("sampling.top_p", absl::StrCat("must be in (0, 1], got ", p.top_p()));
    }
    out->top_p = p.top_p();
  }
  if (!InRange(p.min_p(), 0.0f, 1.0f)) {
    return Invalid("sampling.min_p", absl::StrCat("must be in [0, 1], got ", p.min_p()));
  }
  out->min_p = p.min_p();
  if (p.has_repetition_penalty()) {
    if (!(p.repetition_penalty() > 0.0f && std::isfinite(p.repetition_penalty()))) {
      return Invalid("sampling.repetition_penalty",
                     absl::StrCat("must be > 0, got ", p.repetition_penalty()));
    }
    out->repetition_penalty = p.repetition_penalty();
  }
  if (!InRange(p.presence_penalty(), -2.0f, 2.0f)) {
    return Invalid("sampling.presence_penalty",
                   absl::StrCat("must be in [-2, 2], got ", p.presence_penalty()));
  }
  out->presence_penalty = p.presence_penalty();
  if (!InRange(p.frequency_penalty(), -2.0f, 2.0f)) {
    return Invalid("sampling.frequency_penalty",
                   absl::StrCat("must be in [-2, 2], got ", p.frequency_penalty()));
  }
  out->frequency_penalty = p.frequency_penalty();
  if (p.has_seed()) out->seed = p.seed();
  if (p.logprobs() < 0 || p.logprobs() > limits.max_logprobs) {
    return Invalid("sampling.logprobs",
                   absl::StrCat("must be in [0, ", limits.max_logprobs, "], got ", p.logprobs()));
  }
  out->logprobs = p.logprobs();
  return absl::OkStatus();
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += n + 1;
  }
  return true;
}

absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              const RequestLimits& limits, absl::Time deadline) {
  EngineRequest out;
  out.deadline = deadline;

  const std::string& id = request.request_id();
  if (static_cast<int32_t>(id.size()) > limits.max_request_id_bytes) {
    return Invalid("request_id",
                   absl::StrCat("longer than ", limits.max_request_id_bytes, " bytes"));
  }
  for (char c : id) {
    if (c < 0x21 || c > 0x7e) return Invalid("request_id", "must be printable ASCII");
  }
  out.request_id = id;

  int64_t prompt_tokens = -1;  // known only for token ids
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) return Invalid("text", "must not be empty");
      if (absl::Status s = CheckText("text", request.text(), limits.max_prompt_bytes); !s.ok()) {
        return s;
      }
      out.prompt_text = request.text();
      break;
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return Invalid("token_ids.ids", "must not be empty");
      if (ids.size() >= limits.max_model_len) {
        return Invalid("token_ids.ids",
                       absl::StrCat("prompt of ", ids.size(),
                                    " tokens leaves no room to generate (max_model_len ",
                                    limits.max_model_len, ")"));
      }
      if (absl::Status s = CheckTokenIds("token_ids.ids", ids, limits.vocab_size); !s.ok()) {
        return s;
      }
      out.prompt_token_ids.assign(ids.begin(), ids.end());
      prompt_tokens = ids.size();
      break;
    }
    case v1::GenerateRequest::kChat: {
      const auto& messages = request.chat().messages();
      if (messages.empty()) return Invalid("chat.messages", "must not be empty");
      if (messages.size() > limits.max_chat_messages) {
        return Invalid("chat.messages",
                       absl::StrCat("more than ", limits.max_chat_messages, " messages"));
      }
      int64_t bytes = 0;
      for (int i = 0; i < messages.size(); ++i) {
        const v1::ChatMessage& m = messages[i];
        const std::string field = absl::StrCat("chat.messages[", i, "]");
        if (m.role() != "system" && m.role() != "user" && m.role() != "assistant" &&
            m.role() != "tool") {
          return Invalid(field + ".role", "must be system, user, assistant or tool");
        }
        if (!IsValidUtf8(m.content())) return Invalid(field + ".content", "not valid UTF-8");
        bytes += static_cast<int64_t>(m.content().size());
        if (bytes > limits.max_prompt_bytes) {
          return Invalid("chat.messages",
                         absl::StrCat("contents longer than ", limits.max_prompt_bytes, " bytes"));
        }
        out.messages.push_back({m.role(), m.content()});
      }
      break;
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      return Invalid("input", "one of text, token_ids or chat is required");
  }

  if (absl::Status s = CheckSampling(request.sampling(), limits, &out.sampling); !s.ok()) return s;
  const int32_t room = prompt_tokens >= 0
                           ? limits.max_model_len - static_cast<int32_t>(prompt_tokens)
                           : limits.max_model_len;
  if (request.sampling().has_max_tokens()) {
    const int32_t max_tokens = request.sampling().max_tokens();
    if (max_tokens < 1) {
      return Invalid("sampling.max_tokens", absl::StrCat("must be >= 1, got ", max_tokens));
    }
    if (max_tokens > room) {
      return Invalid(
          "sampling.max_tokens",
          prompt_tokens >= 0
              ? absl::StrCat(max_tokens, " plus the prompt's ", prompt_tokens,
                             " tokens exceeds max_model_len ", limits.max_model_len)
              : absl::StrCat(max_tokens, " exceeds max_model_len ", limits.max_model_len));
    }
    out.sampling.max_tokens = max_tokens;
  } else {
    out.sampling.max_tokens = std::max(1, std::min(limits.default_max_tokens, room));
  }

  const v1::StopParams& stop = request.stop();
  if (stop.stop_size() > limits.max_stop_strings) {
    return Invalid("stop.stop", absl::StrCat("more than ", limits.max_stop_strings, " strings"));
  }
  for (int i = 0; i < stop.stop_size(); ++i) {
    const std::string field = absl::StrCat("stop.stop[", i, "]");
    if (stop.stop(i).empty()) return Invalid(field, "must not be empty");
    if (absl::Status s = CheckText(field, stop.stop(i), limits.max_stop_string_bytes); !s.ok()) {
      return s;
    }
    out.sampling.stop.push_back(stop.stop(i));
  }
  if (stop.stop_token_ids_size() > limits.max_stop_token_ids) {
    return Invalid("stop.stop_token_ids",
                   absl::StrCat("more than ", limits.max_stop_token_ids, " ids"));
  }
  if (absl::Status s =
          CheckTokenIds("stop.stop_token_ids", stop.stop_token_ids(), limits.vocab_size);
      !s.ok()) {
    return s;
  }
  out.sampling.stop_token_ids.assign(stop.stop_token_ids().begin(), stop.stop_token_ids().end());
  out.sampling.ignore_eos = stop.ignore_eos();

  const v1::MemShareOptions& ms = request.memshare();
  switch (ms.mode()) {
    case v1::MemShareOptions::MODE_UNSPECIFIED:
      out.memshare.mode = MemShareParams::Mode::kServerDefault;
      break;
    case v1::MemShareOptions::MODE_OFF:
      out.memshare.mode = MemShareParams::Mode::kOff;
      break;
    case v1::MemShareOptions::MODE_ON:
      out.memshare.mode = MemShareParams::Mode::kOn;
      break;
    default:
      return Invalid("memshare.mode", absl::StrCat("unknown mode ", ms.mode()));
  }
  if (ms.has_tau_lex()) {
    if (!InRange(ms.tau_lex(), 0.0f, 1.0f)) {
      return Invalid("memshare.tau_lex", absl::StrCat("must be in [0, 1], got ", ms.tau_lex()));
    }
    out.memshare.tau_lex = ms.tau_lex();
  }
  if (ms.has_tau_kv()) {
    if (!(ms.tau_kv() >= 0.0f && std::isfinite(ms.tau_kv()))) {
      return Invalid("memshare.tau_kv", absl::StrCat("must be >= 0, got ", ms.tau_kv()));
    }
    out.memshare.tau_kv = ms.tau_kv();
  }
  if (out.memshare.mode == MemShareParams::Mode::kOff && (ms.has_tau_lex() || ms.has_tau_kv())) {
    return Invalid("memshare", "thresholds given with mode MODE_OFF");
  }

  if (static_cast<int32_t>(request.session_id().size()) > limits.max_session_id_bytes) {
    return Invalid("session_id",
                   absl::StrCat("longer than ", limits.max_session_id_bytes, " bytes"));
  }
  if (static_cast<int32_t>(request.cache_salt().size()) > limits.max_cache_salt_bytes) {
    return Invalid("cache_salt",
                   absl::StrCat("longer than ", limits.max_cache_salt_bytes, " bytes"));
  }
  out.cache_salt = request.cache_salt();
  out.priority = request.priority();
  return out;
}

void AppendToChunk(const StreamEvent& event, v1::TokenChunk* chunk) {
  for (int32_t t : event.token_ids) chunk->add_token_ids(t);
  chunk->mutable_text()->append(event.text_delta);
  for (const TokenLogprob& lp : event.logprobs) {
    v1::TokenLogprob* out = chunk->add_logprobs();
    out->set_token_id(lp.token_id);
    out->set_logprob(lp.logprob);
    for (const auto& [token, logprob] : lp.top) {
      v1::TopLogprob* top = out->add_top();
      top->set_token_id(token);
      top->set_logprob(logprob);
    }
  }
}

v1::GenerateResult ToResult(const StreamEvent& event) {
  v1::GenerateResult result;
  switch (event.finish_reason) {
    case FinishReason::kStop:
      result.set_finish_reason(v1::FINISH_REASON_STOP);
      break;
    case FinishReason::kLength:
      result.set_finish_reason(v1::FINISH_REASON_LENGTH);
      break;
    case FinishReason::kAbort:
      result.set_finish_reason(v1::FINISH_REASON_ABORT);
      break;
    case FinishReason::kNone:
    case FinishReason::kError:
      result.set_finish_reason(v1::FINISH_REASON_UNSPECIFIED);
      break;
  }
  v1::Usage* u = result.mutable_usage();
  u->set_prompt_tokens(event.usage.prompt_tokens);
  u->set_completion_tokens(event.usage.completion_tokens);
  u->set_cached_prompt_tokens(event.usage.cached_prompt_tokens);
  u->set_kv_blocks_peak_physical(event.usage.kv_blocks_peak_physical);
  u->set_kv_blocks_peak_logical(event.usage.kv_blocks_peak_logical);
  u->set_shared_blocks(event.usage.shared_blocks);
  return result;
}

v1::ModelInfo ToProto(const ModelInfo& info) {
  v1::ModelInfo out;
  out.set_model_id(info.model_id);
  out.set_architecture(info.architecture);
  out.set_vocab_size(info.vocab_size);
  out.set_max_model_len(info.max_model_len);
  out.set_num_layers(info.num_layers);
  out.set_block_size(info.block_size);
  out.set_device(info.device);
  out.set_tensor_parallel_size(info.tensor_parallel_size);
  out.set_kv_block_bytes(info.kv_block_bytes);
  return out;
}

v1::LoadReport ToProto(const LoadReport& load) {
  v1::LoadReport out;
  out.set_running_requests(load.running_requests);
  out.set_waiting_requests(load.waiting_requests);
  out.set_waiting_tokens(load.waiting_tokens);
  out.set_kv_blocks_total(load.kv_blocks_total);
  out.set_kv_blocks_used(load.kv_blocks_used);
  out.set_kv_blocks_logical(load.kv_blocks_logical);
  out.set_kv_blocks_shared(load.kv_blocks_shared);
  out.set_kv_usage(load.kv_usage());
  out.set_bytes_saved(load.bytes_saved);
  out.set_dedup_candidates(load.dedup_candidates);
  out.set_dedup_verified(load.dedup_verified);
  out.set_dedup_rejected(load.dedup_rejected);
  out.set_dedup_remapped(load.dedup_remapped);
  out.set_prefix_cache_queries(load.prefix_cache_queries);
  out.set_prefix_cache_hits(load.prefix_cache_hits);
  out.set_preemptions(load.preemptions);
  return out;
}

}  // namespace memshare::engine
