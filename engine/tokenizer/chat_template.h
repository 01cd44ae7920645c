// Renders chat messages into a model's prompt text, for the families whose
// templates MemShare serves. The template in tokenizer_config.json (or
// chat_template.jinja) is not interpreted: it is recognised by its text and
// the family is rendered in C++, byte-for-byte as the official Jinja would
// for the supported inputs (text messages; no tool definitions):
//
//   kChatML     Qwen2 / Qwen2.5 / QwQ and other <|im_start|> templates without
//               Qwen3's thinking logic. The template's default system prompt
//               (Qwen2.5: "You are Qwen, created by Alibaba Cloud. ...") is
//               used when the conversation has none; earlier assistant turns
//               lose their <think> part and the generation prompt opens
//               <think> when the template does so (QwQ).
//   kQwen3      Qwen3: reasoning_content / <think> blocks kept only after the
//               last user query, enable_thinking = false appends an empty
//               think block, tool responses folded into user turns.
//   kLlama3     Llama 3 / 3.1 style headers, BOS first, content trimmed; the
//               Llama 3.1 system header with its knowledge and today dates
//               when the template has one.
//   kDeepSeek   DeepSeek-R1 / R1-Distill (and V3): BOS + system prompt,
//               <｜User｜> / <｜Assistant｜> turns, earlier answers stripped to
//               the text after </think>, generation prompt
//               "<｜Assistant｜><think>\n" when the template opens think.
//
// The rendered text already holds BOS where the family wants it: encode it
// with add_special_tokens = false.
//
// Thread-safe: immutable after Create.
#ifndef MEMSHARE_ENGINE_TOKENIZER_CHAT_TEMPLATE_H_
#define MEMSHARE_ENGINE_TOKENIZER_CHAT_TEMPLATE_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace memshare::tokenizer {

struct ChatMessage {
  // "system", "user", "assistant", or "tool" (Qwen3 and DeepSeek only).
  std::string role;
  std::string content;
  // An assistant turn's reasoning given apart from its content (OpenAI-style
  // reasoning_content); Qwen3 renders it inside <think>.
  std::optional<std::string> reasoning_content;
};

class ChatTemplate {
 public:
  enum class Family { kChatML, kQwen3, kLlama3, kDeepSeek };

  struct Options {
    // Contents of tokenizer_config.json (chat_template, bos_token, ...).
    std::string tokenizer_config_json;
    // Contents of chat_template.jinja, used when the config has no
    // chat_template (newer Hugging Face repositories).
    std::string chat_template_jinja;
    // Use this family instead of recognising the template (e.g. a model whose
    // files carry no template).
    std::optional<Family> family;
  };

  struct RenderOptions {
    // End with the opening of an assistant turn.
    bool add_generation_prompt = true;
    // Qwen3's enable_thinking: false appends "<think>\n\n</think>\n\n" to the
    // generation prompt.
    bool enable_thinking = true;
  };

  // FAILED_PRECONDITION when there is no template and no family override;
  // UNIMPLEMENTED (listing the supported families) for an unknown template;
  // INVALID_ARGUMENT for a malformed config.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(const Options& options);

  // Reads tokenizer_config.json and chat_template.jinja (if present) from a
  // model directory.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromDirectory(const std::string& directory);

  // The prompt for `messages`. INVALID_ARGUMENT for a role the family does
  // not render.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     const RenderOptions& options) const;

  Family family() const { return family_; }

  // The text that closes an assistant turn: a stop string for generation
  // ("<|im_end|>", "<|eot_id|>", "<｜end▁of▁sentence｜>").
  const std::string& end_of_turn() const { return end_of_turn_; }

  // True when the generation prompt itself opens a <think> block, so the
  // model's output starts inside its reasoning (DeepSeek-R1, QwQ).
  bool generation_opens_think() const { return think_in_generation_prompt_; }

 private:
  ChatTemplate() = default;
  absl::StatusOr<std::string> RenderChatML(absl::Span<const ChatMessage> messages,
                                           const RenderOptions& options) const;
  absl::StatusOr<std::string> RenderQwen3(absl::Span<const ChatMessage> messages,
                                          const RenderOptions& options) const;
  absl::StatusOr<std::string> RenderLlama3(absl::Span<const ChatMessage> messages,
                                           const RenderOptions& options) const;
  absl::StatusOr<std::string> RenderDeepSeek(absl::Span<const ChatMessage> messages,
                                             const RenderOptions& options) const;

  Family family_ = Family::kChatML;
  std::string bos_token_;
  std::string end_of_turn_;
  // ChatML: system prompt used when the conversation has none (may be empty).
  std::string default_system_;
  // ChatML, DeepSeek: earlier assistant turns keep only the text after </think>.
  bool strip_think_in_history_ = false;
  bool think_in_generation_prompt_ = false;
  // Llama 3: whether the generation prompt depends on add_generation_prompt
  // (the plain Llama 3 template appends it unconditionally).
  bool generation_prompt_optional_ = true;
  // Llama 3.1: dates of the system header; empty for Llama 3.
  std::string knowledge_date_;
  std::string today_date_;
  // DeepSeek: several system messages are joined with "\n\n" (else the last
  // one wins, as in the first R1 template).
  bool join_system_prompts_ = false;
};

}  // namespace memshare::tokenizer

#endif  // MEMSHARE_ENGINE_TOKENIZER_CHAT_TEMPLATE_H_
