#include "engine/tokenizer/internal/decoder.h"

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/internal/byte_level.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {
namespace {

constexpr absl::string_view kWhere = "decoder";

// "<0xNN>" -> NN, else -1.
int ParseByteToken(absl::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = token[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

absl::Status CheckSingleChar(const std::string& s, absl::string_view what) {
  size_t pos = 0;
  if (s.empty() || !IsValidUtf8(s) || (NextCodepoint(s, &pos), pos != s.size())) {
    return absl::InvalidArgumentError(absl::StrCat("decoder ", what, " must be one character"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Decoder::AddStep(const Json& config, bool after_fuse, Decoder* d) {
  if (!config.is_object()) return absl::InvalidArgumentError("decoder: expected an object");
  std::string type;
  if (absl::Status s = GetString(config, "type", kWhere, &type); !s.ok()) return s;
  if (after_fuse && type != "Strip" && type != "Fuse") {
    return absl::UnimplementedError(
        absl::StrCat("decoder: \"", type, "\" after Fuse is not supported"));
  }
  if (type == "ByteLevel") {
    d->steps_.push_back({Step::kByteLevel, "", "", 0, 0});
    return absl::OkStatus();
  }
  if (type == "ByteFallback") {
    d->steps_.push_back({Step::kByteFallback, "", "", 0, 0});
    return absl::OkStatus();
  }
  if (type == "Fuse") return absl::OkStatus();
  if (type == "Replace") {
    const Json* pattern = FindMember(config, "pattern");
    if (pattern == nullptr || !pattern->is_object()) {
      return absl::InvalidArgumentError("decoder Replace: missing object field \"pattern\"");
    }
    if (FindMember(*pattern, "String") == nullptr) {
      return absl::UnimplementedError("decoder Replace: only String patterns are supported");
    }
    Step step{Step::kReplace, "", "", 0, 0};
    if (absl::Status s = GetString(*pattern, "String", kWhere, &step.from); !s.ok()) return s;
    if (absl::Status s = GetString(config, "content", kWhere, &step.to); !s.ok()) return s;
    if (step.from.empty()) return absl::InvalidArgumentError("decoder Replace: empty pattern");
    d->steps_.push_back(std::move(step));
    return absl::OkStatus();
  }
  if (type == "Strip") {
    std::string content;
    int64_t start = 0, stop = 0;
    if (absl::Status s = GetString(config, "content", kWhere, &content); !s.ok()) return s;
    if (absl::Status s = CheckSingleChar(content, "Strip content"); !s.ok()) return s;
    if (absl::Status s = GetInt(config, "start", kWhere, &start); !s.ok()) return s;
    if (absl::Status s = GetInt(config, "stop", kWhere, &stop); !s.ok()) return s;
    if (start < 0 || stop < 0 || start > 1024 || stop > 1024) {
      return absl::InvalidArgumentError("decoder Strip: start/stop out of range");
    }
    if (after_fuse) {
      d->strip_char_ = content;
      d->strip_start_ = static_cast<int>(start);
      d->strip_stop_ = static_cast<int>(stop);
    } else {
      d->steps_.push_back(
          {Step::kStripEach, content, "", static_cast<int>(start), static_cast<int>(stop)});
    }
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    std::string replacement;
    if (absl::Status s = GetString(config, "replacement", kWhere, &replacement); !s.ok()) return s;
    if (absl::Status s = CheckSingleChar(replacement, "Metaspace replacement"); !s.ok()) return s;
    bool prepend = true;
    if (FindMember(config, "prepend_scheme") != nullptr) {
      std::string scheme;
      if (absl::Status s = GetString(config, "prepend_scheme", kWhere, &scheme); !s.ok()) return s;
      prepend = scheme != "never";
    } else if (absl::Status s = GetOptionalBool(config, "add_prefix_space", kWhere, &prepend);
               !s.ok()) {
      return s;
    }
    if (prepend) d->metaspace_first_ = replacement;
    d->steps_.push_back({Step::kMetaspace, replacement, " ", 0, 0});
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    const Json* list = FindMember(config, "decoders");
    if (list == nullptr || !list->is_array()) {
      return absl::InvalidArgumentError("decoder Sequence: missing array \"decoders\"");
    }
    bool fused = after_fuse;
    for (const Json& item : *list) {
      if (absl::Status s = AddStep(item, fused, d); !s.ok()) return s;
      const Json* t = FindMember(item, "type");
      if (t != nullptr && t->is_string() && t->get<std::string>() == "Fuse") fused = true;
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat("unsupported decoder type \"", type, "\""));
}

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::FromJson(const Json* config) {
  if (config == nullptr) {
    return absl::UnimplementedError("tokenizer.json has no decoder; this is not supported");
  }
  std::unique_ptr<Decoder> d(new Decoder());
  if (absl::Status s = AddStep(*config, false, d.get()); !s.ok()) return s;
  return d;
}

std::string Decoder::Apply(absl::string_view token, bool first) const {
  std::string t(token);
  bool is_byte = false;  // became a raw byte through ByteFallback
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Step::kReplace:
        if (!is_byte) absl::StrReplaceAll({{step.from, step.to}}, &t);
        break;
      case Step::kByteFallback:
        if (!is_byte) {
          const int b = ParseByteToken(t);
          if (b >= 0) {
            t.assign(1, static_cast<char>(b));
            is_byte = true;
          }
        }
        break;
      case Step::kStripEach: {
        if (is_byte) break;
        int n = 0;
        while (n < step.start && absl::StartsWith(t, step.from)) {
          t.erase(0, step.from.size());
          ++n;
        }
        n = 0;
        while (n < step.stop && absl::EndsWith(t, step.from)) {
          t.erase(t.size() - step.from.size());
          ++n;
        }
        break;
      }
      case Step::kMetaspace:
        if (!is_byte) {
          absl::StrReplaceAll({{step.from, first && metaspace_first_ ? "" : step.to}}, &t);
        }
        break;
      case Step::kByteLevel: {
        if (is_byte) break;
        std::string bytes;
        if (DecodeByteLevel(t, &bytes)) t = std::move(bytes);
        // Otherwise (an added token outside the alphabet) it stands for itself.
        break;
      }
    }
  }
  return t;
}

std::string Decoder::TokenBytes(absl::string_view token) const { return Apply(token, false); }

std::string Decoder::FirstTokenBytes(absl::string_view token) const { return Apply(token, true); }

void ApplyWholeTextStrip(const Decoder& decoder, std::string* text) {
  const std::string& c = decoder.strip_char();
  size_t begin = 0, end = text->size();
  for (int i = 0; i < decoder.strip_start() && text->compare(begin, c.size(), c) == 0 &&
                  begin + c.size() <= end;
       ++i) {
    begin += c.size();
  }
  for (int i = 0; i < decoder.strip_stop() && end >= begin + c.size() &&
                  text->compare(end - c.size(), c.size(), c) == 0;
       ++i) {
    end -= c.size();
  }
  *text = text->substr(begin, end - begin);
}

}  // namespace memshare::tokenizer::internal
