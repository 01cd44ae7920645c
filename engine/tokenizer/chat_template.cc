#include "engine/tokenizer/chat_template.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "engine/tokenizer/internal/json_util.h"

namespace memshare::tokenizer {

using internal::Json;

namespace {

constexpr absl::string_view kSupported =
    "supported chat templates: ChatML (Qwen2, Qwen2.5, QwQ), Qwen3, Llama 3 / 3.1, DeepSeek-R1";

// Python's str.strip / lstrip / rstrip with an explicit character set.
absl::string_view LStrip(absl::string_view s, absl::string_view chars) {
  while (!s.empty() && chars.find(s.front()) != absl::string_view::npos) s.remove_prefix(1);
  return s;
}
absl::string_view RStrip(absl::string_view s, absl::string_view chars) {
  while (!s.empty() && chars.find(s.back()) != absl::string_view::npos) s.remove_suffix(1);
  return s;
}
absl::string_view Strip(absl::string_view s, absl::string_view chars) {
  return LStrip(RStrip(s, chars), chars);
}

// Jinja's `trim` (Python str.strip()): ASCII whitespace and the common Unicode
// spaces.
std::string Trim(absl::string_view s) {
  static const char* const kSpaces[] = {" ",
                                        "\t",
                                        "\n",
                                        "\r",
                                        "\v",
                                        "\f",
                                        "\x1c",
                                        "\x1d",
                                        "\x1e",
                                        "\x1f",
                                        "\xC2\x85",
                                        "\xC2\xA0",
                                        "\xE1\x9A\x80",
                                        "\xE2\x80\x80",
                                        "\xE2\x80\x81",
                                        "\xE2\x80\x82",
                                        "\xE2\x80\x83",
                                        "\xE2\x80\x84",
                                        "\xE2\x80\x85",
                                        "\xE2\x80\x86",
                                        "\xE2\x80\x87",
                                        "\xE2\x80\x88",
                                        "\xE2\x80\x89",
                                        "\xE2\x80\x8A",
                                        "\xE2\x80\xA8",
                                        "\xE2\x80\xA9",
                                        "\xE2\x80\xAF",
                                        "\xE2\x81\x9F",
                                        "\xE3\x80\x80"};
  bool changed = true;
  while (changed && !s.empty()) {
    changed = false;
    for (const char* sp : kSpaces) {
      if (absl::ConsumePrefix(&s, sp)) changed = true;
      if (absl::ConsumeSuffix(&s, sp)) changed = true;
    }
  }
  return std::string(s);
}

// text.split(sep)[-1] and text.split(sep)[0].
absl::string_view AfterLast(absl::string_view text, absl::string_view sep) {
  const size_t at = text.rfind(sep);
  return at == absl::string_view::npos ? text : text.substr(at + sep.size());
}
absl::string_view BeforeFirst(absl::string_view text, absl::string_view sep) {
  const size_t at = text.find(sep);
  return at == absl::string_view::npos ? text : text.substr(0, at);
}

// The value of a Jinja string literal's body: \n, \t, \', \", \\ unescaped.
std::string Unescape(absl::string_view s) {
  return absl::StrReplaceAll(
      s, {{"\\n", "\n"}, {"\\t", "\t"}, {"\\'", "'"}, {"\\\"", "\""}, {"\\\\", "\\"}});
}

// The literal text between `prefix` and `terminator` in a template, if it is
// plain text (no Jinja expression in between).
std::optional<std::string> LiteralBetween(absl::string_view tmpl, absl::string_view prefix,
                                          absl::string_view terminator) {
  size_t from = 0;
  while ((from = tmpl.find(prefix, from)) != absl::string_view::npos) {
    from += prefix.size();
    const size_t end = tmpl.find(terminator, from);
    if (end == absl::string_view::npos) return std::nullopt;
    absl::string_view body = tmpl.substr(from, end - from);
    if (body.find_first_of("'\"+{}") == absl::string_view::npos) return Unescape(body);
  }
  return std::nullopt;
}

absl::Status BadRole(absl::string_view family, const ChatMessage& m) {
  return absl::InvalidArgumentError(
      absl::StrCat(family, " chat template: unsupported role \"", m.role, "\""));
}

absl::StatusOr<std::string> TokenName(const Json& config, const char* key) {
  const Json* v = internal::FindMember(config, key);
  if (v == nullptr) return std::string();
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) {
    std::string content;
    if (absl::Status s = internal::GetString(*v, "content", key, &content); !s.ok()) return s;
    return content;
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.", key, " has a bad type"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromDirectory(
    const std::string& directory) {
  Options options;
  auto config = internal::ReadFile(directory + "/tokenizer_config.json");
  if (config.ok()) {
    options.tokenizer_config_json = std::move(*config);
  } else if (!absl::IsNotFound(config.status())) {
    return config.status();
  }
  auto jinja = internal::ReadFile(directory + "/chat_template.jinja");
  if (jinja.ok()) {
    options.chat_template_jinja = std::move(*jinja);
  } else if (!absl::IsNotFound(jinja.status())) {
    return jinja.status();
  }
  return Create(options);
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(const Options& options) {
  Json config = Json::object();
  if (!options.tokenizer_config_json.empty()) {
    auto parsed = internal::ParseJson(options.tokenizer_config_json, "tokenizer_config.json");
    if (!parsed.ok()) return parsed.status();
    if (!parsed->is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
    }
    config = std::move(*parsed);
  }
  std::string tmpl;
  if (const Json* t = internal::FindMember(config, "chat_template"); t != nullptr) {
    if (t->is_string()) {
      tmpl = t->get<std::string>();
    } else if (t->is_array()) {
      // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
      for (const Json& item : *t) {
        const Json* name = internal::FindMember(item, "name");
        const Json* body = internal::FindMember(item, "template");
        if (name != nullptr && name->is_string() && name->get<std::string>() == "default" &&
            body != nullptr && body->is_string()) {
          tmpl = body->get<std::string>();
        }
      }
      if (tmpl.empty()) {
        return absl::InvalidArgumentError("tokenizer_config.chat_template has no \"default\"");
      }
    } else {
      return absl::InvalidArgumentError("tokenizer_config.chat_template has a bad type");
    }
  }
  if (tmpl.empty()) tmpl = options.chat_template_jinja;

  std::unique_ptr<ChatTemplate> ct(new ChatTemplate());
  auto bos = TokenName(config, "bos_token");
  if (!bos.ok()) return bos.status();
  ct->bos_token_ = std::move(*bos);

  std::optional<Family> family = options.family;
  if (!family.has_value()) {
    if (tmpl.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the model has no chat template; ", kSupported));
    }
    if (absl::StrContains(tmpl, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>") &&
        absl::StrContains(tmpl,
                          "<\xEF\xBD\x9C"
                          "Assistant\xEF\xBD\x9C>")) {
      family = Family::kDeepSeek;
    } else if (absl::StrContains(tmpl, "<|start_header_id|>")) {
      family = Family::kLlama3;
    } else if (absl::StrContains(tmpl, "<|im_start|>")) {
      family =
          absl::StrContains(tmpl, "enable_thinking") || absl::StrContains(tmpl, "reasoning_content")
              ? Family::kQwen3
              : Family::kChatML;
    } else {
      return absl::UnimplementedError(absl::StrCat("unrecognised chat template; ", kSupported));
    }
  }
  ct->family_ = *family;
  switch (ct->family_) {
    case Family::kChatML:
      ct->end_of_turn_ = "<|im_end|>";
      if (auto sys = LiteralBetween(tmpl, "<|im_start|>system\\n", "<|im_end|>"); sys) {
        ct->default_system_ = *sys;
      } else if (auto sys2 = LiteralBetween(tmpl, "<|im_start|>system\n", "<|im_end|>"); sys2) {
        ct->default_system_ = *sys2;
      }
      ct->strip_think_in_history_ = absl::StrContains(tmpl, "</think>");
      ct->think_in_generation_prompt_ =
          absl::StrContains(tmpl, "<|im_start|>assistant\\n<think>") ||
          absl::StrContains(tmpl, "<|im_start|>assistant\n<think>");
      break;
    case Family::kQwen3:
      ct->end_of_turn_ = "<|im_end|>";
      break;
    case Family::kLlama3:
      ct->end_of_turn_ = "<|eot_id|>";
      ct->generation_prompt_optional_ =
          tmpl.empty() || absl::StrContains(tmpl, "add_generation_prompt");
      if (absl::StrContains(tmpl, "Cutting Knowledge Date: ")) {
        auto knowledge = LiteralBetween(tmpl, "Cutting Knowledge Date: ", "\\n");
        auto today = LiteralBetween(tmpl, "set date_string = \"", "\"");
        if (!knowledge || !today) {
          return absl::UnimplementedError(
              "Llama 3.1-style chat template without literal dates is not supported");
        }
        ct->knowledge_date_ = *knowledge;
        ct->today_date_ = *today;
      }
      break;
    case Family::kDeepSeek:
      ct->end_of_turn_ =
          "<\xEF\xBD\x9C"
          "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
      ct->strip_think_in_history_ = tmpl.empty() || absl::StrContains(tmpl, "</think>");
      ct->think_in_generation_prompt_ =
          tmpl.empty() || absl::StrContains(tmpl,
                                            "<\xEF\xBD\x9C"
                                            "Assistant\xEF\xBD\x9C><think>");
      ct->join_system_prompts_ = tmpl.empty() || absl::StrContains(tmpl, "is_first_sp");
      break;
  }
  return ct;
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 const RenderOptions& options) const {
  switch (family_) {
    case Family::kChatML:
      return RenderChatML(messages, options);
    case Family::kQwen3:
      return RenderQwen3(messages, options);
    case Family::kLlama3:
      return RenderLlama3(messages, options);
    case Family::kDeepSeek:
      return RenderDeepSeek(messages, options);
  }
  return absl::InternalError("unknown chat template family");
}

absl::StatusOr<std::string> ChatTemplate::RenderChatML(absl::Span<const ChatMessage> messages,
                                                       const RenderOptions& options) const {
  std::string out;
  if (!default_system_.empty() && (messages.empty() || messages[0].role != "system")) {
    absl::StrAppend(&out, "<|im_start|>system\n", default_system_, "<|im_end|>\n");
  }
  for (const ChatMessage& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return BadRole("ChatML", m);
    }
    absl::string_view content = m.content;
    if (m.role == "assistant" && strip_think_in_history_) {
      content = LStrip(AfterLast(content, "</think>"), "\n");
    }
    absl::StrAppend(&out, "<|im_start|>", m.role, "\n", content, "<|im_end|>\n");
  }
  if (options.add_generation_prompt) {
    absl::StrAppend(&out, "<|im_start|>assistant\n",
                    think_in_generation_prompt_ ? "<think>\n" : "");
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderQwen3(absl::Span<const ChatMessage> messages,
                                                      const RenderOptions& options) const {
  const int n = static_cast<int>(messages.size());
  std::string out;
  if (n > 0 && messages[0].role == "system") {
    absl::StrAppend(&out, "<|im_start|>system\n", messages[0].content, "<|im_end|>\n");
  }
  // The last user message that is not a tool response.
  int last_query = n - 1;
  for (int i = n - 1; i >= 0; --i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" && !(absl::StartsWith(m.content, "<tool_response>") &&
                              absl::EndsWith(m.content, "</tool_response>"))) {
      last_query = i;
      break;
    }
  }
  for (int i = 0; i < n; ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
    } else if (m.role == "system") {
      // Rendered above.
    } else if (m.role == "assistant") {
      absl::string_view content = m.content;
      std::string reasoning;
      if (m.reasoning_content.has_value()) {
        reasoning = *m.reasoning_content;
      } else if (absl::StrContains(m.content, "</think>")) {
        content = LStrip(AfterLast(m.content, "</think>"), "\n");
        reasoning = std::string(
            LStrip(AfterLast(RStrip(BeforeFirst(m.content, "</think>"), "\n"), "<think>"), "\n"));
      }
      if (i > last_query && (i == n - 1 || !reasoning.empty())) {
        absl::StrAppend(&out, "<|im_start|>assistant\n<think>\n", Strip(reasoning, "\n"),
                        "\n</think>\n\n", LStrip(content, "\n"));
      } else {
        absl::StrAppend(&out, "<|im_start|>assistant\n", content);
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      absl::StrAppend(&out, "\n<tool_response>\n", m.content, "\n</tool_response>");
      if (i == n - 1 || messages[i + 1].role != "tool") out += "<|im_end|>\n";
    } else {
      return BadRole("Qwen3", m);
    }
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderLlama3(absl::Span<const ChatMessage> messages,
                                                       const RenderOptions& options) const {
  std::string out;
  size_t first = 0;
  if (!today_date_.empty()) {
    // Llama 3.1: BOS, then a system header that is always present.
    std::string system;
    if (!messages.empty() && messages[0].role == "system") {
      system = Trim(messages[0].content);
      first = 1;
    }
    absl::StrAppend(&out, bos_token_, "<|start_header_id|>system<|end_header_id|>\n\n",
                    "Cutting Knowledge Date: ", knowledge_date_, "\n", "Today Date: ", today_date_,
                    "\n\n", system, "<|eot_id|>");
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return BadRole("Llama 3", m);
    }
    if (i == 0 && today_date_.empty()) out += bos_token_;
    absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", Trim(m.content),
                    "<|eot_id|>");
  }
  if (options.add_generation_prompt || !generation_prompt_optional_) {
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderDeepSeek(absl::Span<const ChatMessage> messages,
                                                         const RenderOptions& options) const {
  static const std::string kUser = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
  static const std::string kAssistant =
      "<\xEF\xBD\x9C"
      "Assistant\xEF\xBD\x9C>";
  static const std::string kOutputsBegin =
      "<\xEF\xBD\x9Ctool\xE2\x96\x81outputs\xE2\x96\x81"
      "begin\xEF\xBD\x9C>";
  static const std::string kOutputsEnd =
      "<\xEF\xBD\x9Ctool\xE2\x96\x81outputs\xE2\x96\x81"
      "end\xEF\xBD\x9C>";
  static const std::string kOutputBegin =
      "<\xEF\xBD\x9Ctool\xE2\x96\x81output\xE2\x96\x81"
      "begin\xEF\xBD\x9C>";
  static const std::string kOutputEnd =
      "<\xEF\xBD\x9Ctool\xE2\x96\x81output\xE2\x96\x81"
      "end\xEF\xBD\x9C>";
  std::string system;
  bool first_system = true;
  for (const ChatMessage& m : messages) {
    if (m.role != "system") continue;
    if (join_system_prompts_ && !first_system) {
      absl::StrAppend(&system, "\n\n", m.content);
    } else {
      system = m.content;
    }
    first_system = false;
  }
  std::string out = absl::StrCat(bos_token_, system);
  bool is_tool = false, is_output_first = true;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") continue;
    if (m.role == "user") {
      is_tool = false;
      absl::StrAppend(&out, kUser, m.content);
    } else if (m.role == "assistant") {
      if (is_tool) {
        absl::StrAppend(&out, kOutputsEnd, m.content, end_of_turn_);
        is_tool = false;
      } else {
        absl::string_view content = m.content;
        if (strip_think_in_history_) content = AfterLast(content, "</think>");
        absl::StrAppend(&out, kAssistant, content, end_of_turn_);
      }
    } else if (m.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        absl::StrAppend(&out, kOutputsBegin, kOutputBegin, m.content, kOutputEnd);
        is_output_first = false;
      } else {
        absl::StrAppend(&out, "\n", kOutputBegin, m.content, kOutputEnd);
      }
    } else {
      return BadRole("DeepSeek", m);
    }
  }
  if (is_tool) out += kOutputsEnd;
  if (options.add_generation_prompt && !is_tool) {
    absl::StrAppend(&out, kAssistant, think_in_generation_prompt_ ? "<think>\n" : "");
  }
  return out;
}

}  // namespace memshare::tokenizer
