#include "engine/tokenizer/internal/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/internal/regex.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {
namespace {

bool IsAscii(const std::string& s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}

  absl::Status Normalize(std::string* text) const override {
    // ASCII is invariant under every normalization form.
    if (IsAscii(*text)) return absl::OkStatus();
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text->data()), text->size(), &out,
                     static_cast<utf8proc_option_t>(options_));
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Unicode normalization failed: ", utf8proc_errmsg(n)));
    }
    text->assign(reinterpret_cast<const char*>(out), n);
    std::free(out);
    return absl::OkStatus();
  }

 private:
  int options_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override {
    std::string out;
    out.reserve(text->size());
    size_t pos = 0;
    while (pos < text->size()) {
      AppendCodepoint(static_cast<char32_t>(utf8proc_tolower(NextCodepoint(*text, &pos))), &out);
    }
    *text = std::move(out);
    return absl::OkStatus();
  }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}

  absl::Status Normalize(std::string* text) const override {
    if (regex_ == nullptr) {
      if (!literal_.empty()) absl::StrReplaceAll({{literal_, content_}}, text);
      return absl::OkStatus();
    }
    std::vector<std::pair<size_t, size_t>> matches;
    if (absl::Status s = regex_->FindAll(*text, &matches); !s.ok()) return s;
    if (matches.empty()) return absl::OkStatus();
    std::string out;
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      out.append(*text, prev, b - prev);
      out.append(content_);
      prev = e;
    }
    out.append(*text, prev, std::string::npos);
    *text = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;  // null for a String pattern
  std::string content_;
};

bool IsUnicodeWhitespace(char32_t c) {
  const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || cat == UTF8PROC_CATEGORY_ZS ||
         cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}

  absl::Status Normalize(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!IsUnicodeWhitespace(NextCodepoint(*text, &next))) break;
        begin = next;
      }
    }
    if (right_) {
      // Walk code points forward, remembering where trailing whitespace starts.
      size_t pos = begin, ws_start = end;
      bool in_ws = false;
      while (pos < end) {
        const size_t at = pos;
        const bool ws = IsUnicodeWhitespace(NextCodepoint(*text, &pos));
        if (ws && !in_ws) ws_start = at;
        in_ws = ws;
      }
      if (in_ws) end = ws_start;
    }
    *text = text->substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& step : steps_) {
      if (absl::Status s = step->Normalize(text); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> Normalizer::FromJson(const Json& config) {
  constexpr absl::string_view kWhere = "normalizer";
  if (!config.is_object()) {
    return absl::InvalidArgumentError("normalizer: expected an object");
  }
  std::string type;
  if (absl::Status s = GetString(config, "type", kWhere, &type); !s.ok()) return s;
  if (type == "NFC") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  }
  if (type == "NFD") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  }
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend") {
    std::string prefix;
    if (absl::Status s = GetString(config, "prepend", kWhere, &prefix); !s.ok()) return s;
    if (!IsValidUtf8(prefix)) return absl::InvalidArgumentError("normalizer: prepend is not UTF-8");
    return std::make_unique<PrependNormalizer>(std::move(prefix));
  }
  if (type == "Replace") {
    const Json* pattern = FindMember(config, "pattern");
    if (pattern == nullptr || !pattern->is_object()) {
      return absl::InvalidArgumentError("normalizer Replace: missing object field \"pattern\"");
    }
    std::string content;
    if (absl::Status s = GetString(config, "content", kWhere, &content); !s.ok()) return s;
    if (FindMember(*pattern, "String") != nullptr) {
      std::string literal;
      if (absl::Status s = GetString(*pattern, "String", kWhere, &literal); !s.ok()) return s;
      return std::make_unique<ReplaceNormalizer>(std::move(literal), nullptr, std::move(content));
    }
    std::string re;
    if (absl::Status s = GetString(*pattern, "Regex", kWhere, &re); !s.ok()) return s;
    auto regex = Regex::Create(re);
    if (!regex.ok()) return regex.status();
    return std::make_unique<ReplaceNormalizer>("", std::move(*regex), std::move(content));
  }
  if (type == "Strip") {
    bool left = true, right = true;
    if (absl::Status s = GetOptionalBool(config, "strip_left", kWhere, &left); !s.ok()) return s;
    if (absl::Status s = GetOptionalBool(config, "strip_right", kWhere, &right); !s.ok()) return s;
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Sequence") {
    const Json* list = FindMember(config, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return absl::InvalidArgumentError("normalizer Sequence: missing array \"normalizers\"");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const Json& item : *list) {
      auto step = FromJson(item);
      if (!step.ok()) return step.status();
      steps.push_back(std::move(*step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported normalizer type \"", type, "\""));
}

}  // namespace memshare::tokenizer::internal
