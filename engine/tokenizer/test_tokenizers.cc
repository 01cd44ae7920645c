#include "engine/tokenizer/test_tokenizers.h"

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/internal/byte_level.h"

namespace memshare::tokenizer::testing {
namespace {

using nlohmann::json;

std::string Char(uint8_t b) {
  std::string s;
  internal::AppendByteLevel(std::string(1, static_cast<char>(b)), &s);
  return s;
}

json Added(int id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

}  // namespace

json ByteLevelTokenizerJson() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[Char(static_cast<uint8_t>(b))] = b;
  const std::string ni = "\xE4\xBD\xA0";  // 你
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "t"},
      {"h", "e"},
      {"Ġt", "he"},
      {"l", "l"},
      {"he", "ll"},
      {"hell", "o"},
      {"Ġ", "Ġ"},
      {"b", "c"},
      {"a", "b"},
      {Char(0xE4), Char(0xBD)},
      {Char(0xE4) + Char(0xBD), Char(0xA0)},
      {"Ġ", "hello"}};
  json merge_list = json::array();
  int id = 256;
  for (const auto& [l, r] : merges) {
    vocab[l + r] = id++;
    merge_list.push_back({l, r});
  }
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {Added(300, "<|endoftext|>", true), Added(301, "<|im_start|>", true),
        Added(302, "<|im_end|>", true), Added(303, "<think>", false),
        Added(304, "</think>", false)}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern",
            {{"Regex",
              R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", false},
           {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", false},
        {"use_regex", false}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", false},
        {"use_regex", false}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
}

json ByteLevelConfigJson() {
  return {
      {"add_prefix_space", false},
      {"bos_token", nullptr},
      {"eos_token", "<|im_end|>"},
      {"pad_token", "<|endoftext|>"},
      {"unk_token", nullptr},
      {"tokenizer_class", "Qwen2Tokenizer"},
      {"chat_template",
       "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
       "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
       "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
       "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
  };
}

json ByteFallbackTokenizerJson() {
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d"}) vocab[t] = id++;
  const std::string sp = "\xE2\x96\x81";  // ▁
  const std::vector<std::pair<std::string, std::string>> merges = {
      {sp, "h"}, {"l", "l"}, {sp + "h", "e"},  {sp + "he", "ll"}, {sp + "hell", "o"},
      {sp, "w"}, {"o", "r"}, {sp + "w", "or"}, {sp + "wor", "l"}, {sp + "worl", "d"}};
  json merge_list = json::array();  // legacy "left right" strings
  for (const auto& [l, r] : merges) {
    vocab[l + r] = id++;
    merge_list.push_back(l + " " + r);
  }
  return {
      {"version", "1.0"},
      {"added_tokens", {Added(0, "<unk>", true), Added(1, "<s>", true), Added(2, "</s>", true)}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
}

json ByteFallbackConfigJson() {
  return {
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"unk_token", "<unk>"},
      {"legacy", true},
      {"tokenizer_class", "LlamaTokenizer"},
  };
}

}  // namespace memshare::tokenizer::testing
