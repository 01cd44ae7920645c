#include "router/openai_api.h"

#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace memshare::router::openai {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(std::string_view param, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(absl::string_view(param.data(), param.size()), ": ",
                   absl::string_view(problem.data(), problem.size())));
}

const char* TypeName(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "object";
    case Json::value_t::array:
      return "array";
    case Json::value_t::string:
      return "string";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    default:
      return "value";
  }
}

absl::Status WrongType(std::string_view param, const char* expected, const Json& v) {
  return Invalid(param, absl::StrCat("expected ", expected, ", got ", TypeName(v)));
}

// Reads optional fields of one JSON object, refusing wrong types.
class Fields {
 public:
  explicit Fields(const Json& object) : object_(object) {}

  // The value, or nullptr when absent or null.
  const Json* Get(const std::string& name) const {
    auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::Status Int(const std::string& name, int64_t lo, int64_t hi, std::optional<int64_t>* out,
                   const std::string& prefix = "") const {
    const Json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    const std::string param = prefix + name;
    if (!v->is_number_integer()) return WrongType(param, "an integer", *v);
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
      return Invalid(param, absl::StrCat("must be at most ", hi));
    }
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) return Invalid(param, absl::StrCat("must be in [", lo, ", ", hi, "]"));
    *out = x;
    return absl::OkStatus();
  }

  absl::Status Number(const std::string& name, std::optional<double>* out,
                      const std::string& prefix = "") const {
    const Json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return WrongType(prefix + name, "a number", *v);
    *out = v->get<double>();
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& name, std::optional<bool>* out) const {
    const Json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return WrongType(name, "a boolean", *v);
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const std::string& name, std::optional<std::string>* out,
                      const std::string& prefix = "") const {
    const Json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return WrongType(prefix + name, "a string", *v);
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  absl::Status OnlyKnown(const std::set<std::string>& known, const std::string& prefix = "") const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (!known.contains(it.key())) {
        return Invalid(prefix + it.key(), "unrecognized request argument");
      }
    }
    return absl::OkStatus();
  }

 private:
  const Json& object_;
};

#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    if (absl::Status _s = (expr); !_s.ok()) { \
      return _s;                              \
    }                                         \
  } while (0)

const std::set<std::string>& CommonParams() {
  static const auto* params = new std::set<std::string>{
      "model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop",
      "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user",
      // MemShare extensions.
      "top_k", "min_p", "repetition_penalty", "ignore_eos", "stop_token_ids", "session_id",
      "cache_salt", "priority", "request_id", "memshare"};
  return *params;
}

absl::Status ParseStop(const Json* stop, v1::StopParams* out) {
  if (stop == nullptr) return absl::OkStatus();
  if (stop->is_string()) {
    out->add_stop(stop->get<std::string>());
    return absl::OkStatus();
  }
  if (!stop->is_array()) return WrongType("stop", "a string or an array of strings", *stop);
  for (size_t i = 0; i < stop->size(); ++i) {
    const Json& s = (*stop)[i];
    if (!s.is_string()) return WrongType(absl::StrCat("stop[", i, "]"), "a string", s);
    out->add_stop(s.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseCommon(const Fields& f, ParsedRequest* out) {
  v1::GenerateRequest& r = out->request;
  v1::SamplingParams* s = r.mutable_sampling();
  std::optional<std::string> model;
  RETURN_IF_ERROR(f.String("model", &model));
  out->model = model.value_or("");

  std::optional<int64_t> i;
  std::optional<double> d;
  std::optional<bool> b;
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  RETURN_IF_ERROR(f.Int("max_tokens", 1, kInt32Max, &i));
  if (i) s->set_max_tokens(static_cast<int32_t>(*i));
  if (out->endpoint == Endpoint::kChatCompletions) {
    i.reset();
    RETURN_IF_ERROR(f.Int("max_completion_tokens", 1, kInt32Max, &i));
    if (i) s->set_max_tokens(static_cast<int32_t>(*i));
  }
  d.reset();
  RETURN_IF_ERROR(f.Number("temperature", &d));
  if (d) s->set_temperature(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(f.Number("top_p", &d));
  if (d) s->set_top_p(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(f.Number("presence_penalty", &d));
  if (d) s->set_presence_penalty(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(f.Number("frequency_penalty", &d));
  if (d) s->set_frequency_penalty(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(f.Number("min_p", &d));
  if (d) s->set_min_p(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(f.Number("repetition_penalty", &d));
  if (d) s->set_repetition_penalty(static_cast<float>(*d));
  i.reset();
  RETURN_IF_ERROR(f.Int("top_k", 0, kInt32Max, &i));
  if (i) s->set_top_k(static_cast<int32_t>(*i));
  i.reset();
  RETURN_IF_ERROR(f.Int("seed", 0, std::numeric_limits<int64_t>::max(), &i));
  if (i) s->set_seed(static_cast<uint64_t>(*i));
  i.reset();
  RETURN_IF_ERROR(f.Int("n", 1, kInt32Max, &i));
  if (i && *i != 1) return Invalid("n", "only n = 1 is supported; send one request per choice");
  if (const Json* bias = f.Get("logit_bias"); bias != nullptr) {
    if (!bias->is_object()) return WrongType("logit_bias", "an object", *bias);
    if (!bias->empty()) return Invalid("logit_bias", "is not supported");
  }
  std::optional<std::string> user;
  RETURN_IF_ERROR(f.String("user", &user));  // accepted, unused

  RETURN_IF_ERROR(f.Bool("stream", &b));
  out->stream = b.value_or(false);
  if (const Json* so = f.Get("stream_options"); so != nullptr) {
    if (!so->is_object()) return WrongType("stream_options", "an object", *so);
    Fields sf(*so);
    RETURN_IF_ERROR(sf.OnlyKnown({"include_usage"}, "stream_options."));
    std::optional<bool> usage;
    if (const Json* u = sf.Get("include_usage"); u != nullptr) {
      if (!u->is_boolean()) return WrongType("stream_options.include_usage", "a boolean", *u);
      usage = u->get<bool>();
    }
    out->include_usage = usage.value_or(false);
  }

  RETURN_IF_ERROR(ParseStop(f.Get("stop"), r.mutable_stop()));
  b.reset();
  RETURN_IF_ERROR(f.Bool("ignore_eos", &b));
  if (b) r.mutable_stop()->set_ignore_eos(*b);
  if (const Json* ids = f.Get("stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return WrongType("stop_token_ids", "an array of integers", *ids);
    for (size_t k = 0; k < ids->size(); ++k) {
      const Json& t = (*ids)[k];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > kInt32Max) {
        return Invalid(absl::StrCat("stop_token_ids[", k, "]"), "expected a token id");
      }
      r.mutable_stop()->add_stop_token_ids(static_cast<int32_t>(t.get<int64_t>()));
    }
  }

  std::optional<std::string> str;
  RETURN_IF_ERROR(f.String("session_id", &str));
  if (str) r.set_session_id(*str);
  str.reset();
  RETURN_IF_ERROR(f.String("cache_salt", &str));
  if (str) r.set_cache_salt(*str);
  str.reset();
  RETURN_IF_ERROR(f.String("request_id", &str));
  if (str) r.set_request_id(*str);
  i.reset();
  RETURN_IF_ERROR(f.Int("priority", std::numeric_limits<int32_t>::min(), kInt32Max, &i));
  if (i) r.set_priority(static_cast<int32_t>(*i));

  if (const Json* ms = f.Get("memshare"); ms != nullptr) {
    if (!ms->is_object()) return WrongType("memshare", "an object", *ms);
    Fields mf(*ms);
    RETURN_IF_ERROR(mf.OnlyKnown({"mode", "tau_lex", "tau_kv"}, "memshare."));
    std::optional<std::string> mode;
    RETURN_IF_ERROR(mf.String("mode", &mode, "memshare."));
    v1::MemShareOptions* o = r.mutable_memshare();
    if (mode) {
      if (*mode == "on") {
        o->set_mode(v1::MemShareOptions::MODE_ON);
      } else if (*mode == "off") {
        o->set_mode(v1::MemShareOptions::MODE_OFF);
      } else if (*mode != "default") {
        return Invalid("memshare.mode", "must be \"default\", \"on\" or \"off\"");
      }
    }
    d.reset();
    RETURN_IF_ERROR(mf.Number("tau_lex", &d, "memshare."));
    if (d) o->set_tau_lex(static_cast<float>(*d));
    d.reset();
    RETURN_IF_ERROR(mf.Number("tau_kv", &d, "memshare."));
    if (d) o->set_tau_kv(static_cast<float>(*d));
  }
  return absl::OkStatus();
}

absl::Status ParseCompletions(const Fields& f, ParsedRequest* out) {
  std::set<std::string> known = CommonParams();
  known.insert({"prompt", "logprobs", "echo", "best_of", "suffix"});
  RETURN_IF_ERROR(f.OnlyKnown(known));
  RETURN_IF_ERROR(ParseCommon(f, out));
  v1::GenerateRequest& r = out->request;
  const Json* prompt = f.Get("prompt");
  if (prompt == nullptr) return Invalid("prompt", "is required");
  // One prompt: a string, token ids, or a one-element array of either.
  const Json* p = prompt;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) {
    p = &(*p)[0];
  }
  if (p->is_string()) {
    if (p->get_ref<const std::string&>().empty()) return Invalid("prompt", "must not be empty");
    r.set_text(p->get<std::string>());
  } else if (p->is_array()) {
    if (p->empty()) return Invalid("prompt", "must not be empty");
    for (size_t k = 0; k < p->size(); ++k) {
      const Json& t = (*p)[k];
      if (t.is_string() || t.is_array()) {
        return Invalid("prompt", "batched prompts are not supported; send one request per prompt");
      }
      if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
          t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Invalid(absl::StrCat("prompt[", k, "]"), "expected a token id");
      }
      r.mutable_token_ids()->add_ids(static_cast<int32_t>(t.get<int64_t>()));
    }
  } else {
    return WrongType("prompt", "a string or an array of token ids", *p);
  }
  std::optional<int64_t> logprobs;
  RETURN_IF_ERROR(f.Int("logprobs", 0, 20, &logprobs));
  if (logprobs) {
    out->logprobs = true;
    // OpenAI: logprobs = n returns n alternatives; 0 only the sampled one's.
    r.mutable_sampling()->set_logprobs(std::max<int32_t>(1, static_cast<int32_t>(*logprobs)));
  }
  std::optional<bool> echo;
  RETURN_IF_ERROR(f.Bool("echo", &echo));
  if (echo.value_or(false)) return Invalid("echo", "is not supported");
  std::optional<int64_t> best_of;
  RETURN_IF_ERROR(f.Int("best_of", 1, 1, &best_of));
  std::optional<std::string> suffix;
  RETURN_IF_ERROR(f.String("suffix", &suffix));
  if (suffix && !suffix->empty()) return Invalid("suffix", "is not supported");
  return absl::OkStatus();
}

absl::Status ParseChat(const Fields& f, ParsedRequest* out) {
  std::set<std::string> known = CommonParams();
  known.insert({"messages", "logprobs", "top_logprobs", "max_completion_tokens", "response_format",
                "tools", "tool_choice", "parallel_tool_calls"});
  RETURN_IF_ERROR(f.OnlyKnown(known));
  RETURN_IF_ERROR(ParseCommon(f, out));
  const Json* messages = f.Get("messages");
  if (messages == nullptr) return Invalid("messages", "is required");
  if (!messages->is_array()) return WrongType("messages", "an array", *messages);
  if (messages->empty()) return Invalid("messages", "must not be empty");
  v1::ChatMessages* chat = out->request.mutable_chat();
  for (size_t k = 0; k < messages->size(); ++k) {
    const std::string param = absl::StrCat("messages[", k, "]");
    const Json& m = (*messages)[k];
    if (!m.is_object()) return WrongType(param, "an object", m);
    Fields mf(m);
    RETURN_IF_ERROR(mf.OnlyKnown({"role", "content", "name"}, param + "."));
    std::optional<std::string> role;
    RETURN_IF_ERROR(mf.String("role", &role, param + "."));
    if (!role) return Invalid(param + ".role", "is required");
    if (*role == "developer") role = "system";
    if (*role != "system" && *role != "user" && *role != "assistant" && *role != "tool") {
      return Invalid(param + ".role", "must be system, developer, user, assistant or tool");
    }
    std::string content;
    const Json* c = mf.Get("content");
    if (c == nullptr) return Invalid(param + ".content", "is required");
    if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      for (size_t j = 0; j < c->size(); ++j) {
        const std::string part_param = absl::StrCat(param, ".content[", j, "]");
        const Json& part = (*c)[j];
        if (!part.is_object()) return WrongType(part_param, "an object", part);
        Fields pf(part);
        RETURN_IF_ERROR(pf.OnlyKnown({"type", "text"}, part_param + "."));
        std::optional<std::string> type, text;
        RETURN_IF_ERROR(pf.String("type", &type, part_param + "."));
        if (type.value_or("") != "text") {
          return Invalid(part_param + ".type", "only \"text\" parts are supported");
        }
        RETURN_IF_ERROR(pf.String("text", &text, part_param + "."));
        content += text.value_or("");
      }
    } else {
      return WrongType(param + ".content", "a string or an array of text parts", *c);
    }
    v1::ChatMessage* out_message = chat->add_messages();
    out_message->set_role(*role);
    out_message->set_content(content);
  }
  std::optional<bool> logprobs;
  RETURN_IF_ERROR(f.Bool("logprobs", &logprobs));
  std::optional<int64_t> top;
  RETURN_IF_ERROR(f.Int("top_logprobs", 0, 20, &top));
  if (top && !logprobs.value_or(false)) {
    return Invalid("top_logprobs", "requires logprobs = true");
  }
  if (logprobs.value_or(false)) {
    out->logprobs = true;
    out->request.mutable_sampling()->set_logprobs(
        std::max<int32_t>(1, static_cast<int32_t>(top.value_or(0))));
  }
  if (const Json* rf = f.Get("response_format"); rf != nullptr) {
    if (!rf->is_object() || !rf->contains("type") || (*rf)["type"] != "text") {
      return Invalid("response_format", "only {\"type\": \"text\"} is supported");
    }
  }
  if (const Json* tools = f.Get("tools"); tools != nullptr && !tools->empty()) {
    return Invalid("tools", "tool calls are not supported");
  }
  if (f.Get("tool_choice") != nullptr) return Invalid("tool_choice", "is not supported");
  return absl::OkStatus();
}

const char* FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    default:
      return nullptr;
  }
}

Json FinishReasonJson(const v1::GenerateResult& result) {
  const char* name = FinishReasonName(result.finish_reason());
  return name == nullptr ? Json(nullptr) : Json(name);
}

std::string TokenName(int32_t id) { return absl::StrCat("token_id:", id); }

// OpenAI's completions logprobs object for these tokens.
Json CompletionLogprobs(const std::vector<v1::TokenLogprob>& lps) {
  Json tokens = Json::array(), logprobs = Json::array(), tops = Json::array();
  for (const v1::TokenLogprob& lp : lps) {
    tokens.push_back(TokenName(lp.token_id()));
    logprobs.push_back(lp.logprob());
    Json top = Json::object();
    for (const v1::TopLogprob& t : lp.top()) top[TokenName(t.token_id())] = t.logprob();
    tops.push_back(std::move(top));
  }
  return Json{{"tokens", tokens}, {"token_logprobs", logprobs}, {"top_logprobs", tops}};
}

// OpenAI's chat logprobs object for these tokens.
Json ChatLogprobs(const std::vector<v1::TokenLogprob>& lps) {
  Json content = Json::array();
  for (const v1::TokenLogprob& lp : lps) {
    Json top = Json::array();
    for (const v1::TopLogprob& t : lp.top()) {
      top.push_back(
          {{"token", TokenName(t.token_id())}, {"logprob", t.logprob()}, {"bytes", nullptr}});
    }
    content.push_back({{"token", TokenName(lp.token_id())},
                       {"logprob", lp.logprob()},
                       {"bytes", nullptr},
                       {"top_logprobs", top}});
  }
  return Json{{"content", content}};
}

std::string Event(const Json& j) {
  return absl::StrCat("data: ", j.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n");
}

}  // namespace

absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body,
                                           const std::string& served_model) {
  Json j = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError("body: not valid JSON (or not UTF-8)");
  }
  if (!j.is_object()) return WrongType("body", "a JSON object", j);
  ParsedRequest out;
  out.endpoint = endpoint;
  Fields f(j);
  RETURN_IF_ERROR(endpoint == Endpoint::kCompletions ? ParseCompletions(f, &out)
                                                     : ParseChat(f, &out));
  if (!out.model.empty() && !served_model.empty() && out.model != served_model) {
    return absl::NotFoundError(
        absl::StrCat("model: '", out.model, "' is not served here (serving '", served_model, "')"));
  }
  if (out.model.empty()) out.model = served_model;
  return out;
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(const absl::Status& status) {
  const std::string message(status.message());
  Json param = nullptr;
  // "<param>: problem" names the parameter.
  if (const size_t colon = message.find(": "); colon != std::string::npos && colon > 0) {
    const std::string head = message.substr(0, colon);
    if (head.find(' ') == std::string::npos) param = head;
  }
  const char* type = "server_error";
  Json code = nullptr;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      type = "invalid_request_error";
      break;
    case absl::StatusCode::kNotFound:
      type = "invalid_request_error";
      code = param == "model" ? "model_not_found" : "not_found";
      break;
    case absl::StatusCode::kUnauthenticated:
      type = "authentication_error";
      code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      type = "permission_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      type = "rate_limit_error";
      code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      type = "timeout_error";
      break;
    default:
      break;
  }
  Json error = {
      {"error", {{"message", message}, {"type", type}, {"param", param}, {"code", code}}}};
  return error.dump(-1, ' ', false, Json::error_handler_t::replace);
}

ResponseBuilder::ResponseBuilder(const ParsedRequest& request, std::string id, int64_t created)
    : endpoint_(request.endpoint),
      id_(std::move(id)),
      created_(created),
      model_(request.model),
      include_usage_(request.include_usage),
      logprobs_(request.logprobs) {}

std::string ResponseBuilder::UsageJson() const {
  const v1::Usage& u = result_.usage();
  Json usage = {
      {"prompt_tokens", u.prompt_tokens()},
      {"completion_tokens", u.completion_tokens()},
      {"total_tokens", u.prompt_tokens() + u.completion_tokens()},
      {"prompt_tokens_details", {{"cached_tokens", u.cached_prompt_tokens()}}},
      {"memshare",
       {{"kv_blocks_peak_physical", u.kv_blocks_peak_physical()},
        {"kv_blocks_peak_logical", u.kv_blocks_peak_logical()},
        {"shared_blocks", u.shared_blocks()}}},
  };
  return usage.dump();
}

std::string ResponseBuilder::StreamEvents(const v1::GenerateResponse& message) {
  const bool chat = endpoint_ == Endpoint::kChatCompletions;
  Json base = {{"id", id_},
               {"object", chat ? "chat.completion.chunk" : "text_completion"},
               {"created", created_},
               {"model", model_}};
  std::string events;
  if (chat && !sent_role_) {
    sent_role_ = true;
    Json first = base;
    first["choices"] = Json::array({{{"index", 0},
                                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", nullptr}}});
    events += Event(first);
  }
  Json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (message.has_chunk()) {
    const v1::TokenChunk& c = message.chunk();
    if (c.text().empty() && c.logprobs_size() == 0) return events;
    std::vector<v1::TokenLogprob> lps(c.logprobs().begin(), c.logprobs().end());
    if (chat) {
      choice["delta"] = {{"content", c.text()}};
      if (logprobs_) choice["logprobs"] = ChatLogprobs(lps);
    } else {
      choice["text"] = c.text();
      if (logprobs_) choice["logprobs"] = CompletionLogprobs(lps);
    }
  } else if (message.has_result()) {
    result_ = message.result();
    has_result_ = true;
    if (chat) {
      choice["delta"] = Json::object();
    } else {
      choice["text"] = "";
    }
    choice["finish_reason"] = FinishReasonJson(result_);
  } else {
    return events;
  }
  base["choices"] = Json::array({choice});
  events += Event(base);
  return events;
}

std::string ResponseBuilder::StreamEnd() const {
  std::string events;
  if (include_usage_ && has_result_) {
    Json usage_chunk = {{"id", id_},
                        {"object", endpoint_ == Endpoint::kChatCompletions ? "chat.completion.chunk"
                                                                           : "text_completion"},
                        {"created", created_},
                        {"model", model_},
                        {"choices", Json::array()},
                        {"usage", Json::parse(UsageJson())}};
    events += Event(usage_chunk);
  }
  events += "data: [DONE]\n\n";
  return events;
}

std::string ResponseBuilder::StreamError(const absl::Status& status) {
  return absl::StrCat("data: ", ErrorJson(status), "\n\ndata: [DONE]\n\n");
}

void ResponseBuilder::Collect(const v1::GenerateResponse& message) {
  if (message.has_chunk()) {
    text_ += message.chunk().text();
    token_logprobs_.insert(token_logprobs_.end(), message.chunk().logprobs().begin(),
                           message.chunk().logprobs().end());
  } else if (message.has_result()) {
    result_ = message.result();
    has_result_ = true;
  }
}

std::string ResponseBuilder::Body() const {
  const bool chat = endpoint_ == Endpoint::kChatCompletions;
  Json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishReasonJson(result_)}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text_}};
    if (logprobs_) choice["logprobs"] = ChatLogprobs(token_logprobs_);
  } else {
    choice["text"] = text_;
    if (logprobs_) choice["logprobs"] = CompletionLogprobs(token_logprobs_);
  }
  Json body = {{"id", id_},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", created_},
               {"model", model_},
               {"choices", Json::array({choice})},
               {"usage", Json::parse(UsageJson())}};
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ModelsJson(const v1::ModelInfo& model, int64_t created) {
  Json data = Json::array();
  if (!model.model_id().empty()) {
    data.push_back({{"id", model.model_id()},
                    {"object", "model"},
                    {"created", created},
                    {"owned_by", "memshare"},
                    {"max_model_len", model.max_model_len()}});
  }
  return Json{{"object", "list"}, {"data", data}}.dump();
}

}  // namespace memshare::router::openai
