#include "engine/tokenizer/internal/pre_tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/internal/byte_level.h"
#include "engine/tokenizer/internal/regex.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {
namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<Behavior> ParseBehavior(const std::string& s) {
  if (s == "Removed") return Behavior::kRemoved;
  if (s == "Isolated") return Behavior::kIsolated;
  if (s == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::kMergedWithNext;
  if (s == "Contiguous") return Behavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat("pre_tokenizer: unknown split behavior \"", s, "\""));
}

// Splits every piece at the matches of `regex` according to `behavior`, the
// way HF tokenizers' NormalizedString::split does.
absl::Status SplitPieces(const Regex& regex, Behavior behavior, bool invert,
                         std::vector<Piece>* pieces) {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  std::vector<std::pair<size_t, size_t>> matches;
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  for (Piece& piece : *pieces) {
    matches.clear();
    if (absl::Status s = regex.FindAll(piece.text, &matches); !s.ok()) return s;
    // Cover the whole piece with alternating gap / match spans.
    spans.clear();
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      if (b > prev) spans.push_back({prev, b, false});
      spans.push_back({b, e, true});
      prev = e;
    }
    if (prev < piece.text.size()) spans.push_back({prev, piece.text.size(), false});
    if (invert) {
      for (Span& s : spans) s.is_match = !s.is_match;
    }
    // Group spans into output ranges.
    std::vector<std::pair<size_t, size_t>> ranges;
    switch (behavior) {
      case Behavior::kRemoved:
        for (const Span& s : spans) {
          if (!s.is_match) ranges.emplace_back(s.begin, s.end);
        }
        break;
      case Behavior::kIsolated:
        for (const Span& s : spans) ranges.emplace_back(s.begin, s.end);
        break;
      case Behavior::kMergedWithPrevious: {
        bool prev_was_match = false;
        for (const Span& s : spans) {
          if (s.is_match && !ranges.empty() && !prev_was_match) {
            ranges.back().second = s.end;
          } else {
            ranges.emplace_back(s.begin, s.end);
          }
          prev_was_match = s.is_match;
        }
        break;
      }
      case Behavior::kMergedWithNext: {
        bool prev_was_match = false;
        for (const Span& s : spans) {
          if (!s.is_match && !ranges.empty() && prev_was_match) {
            ranges.back().second = s.end;
          } else {
            ranges.emplace_back(s.begin, s.end);
          }
          prev_was_match = s.is_match;
        }
        break;
      }
      case Behavior::kContiguous: {
        bool prev_was_match = false;
        for (const Span& s : spans) {
          if (s.is_match && prev_was_match && !ranges.empty()) {
            ranges.back().second = s.end;
          } else {
            ranges.emplace_back(s.begin, s.end);
          }
          prev_was_match = s.is_match;
        }
        break;
      }
    }
    for (const auto& [b, e] : ranges) {
      if (e <= b) continue;
      out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
    }
  }
  *pieces = std::move(out);
  return absl::OkStatus();
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, Behavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  absl::Status Apply(std::vector<Piece>* pieces) const override {
    return SplitPieces(*regex_, behavior_, invert_, pieces);
  }

 private:
  std::unique_ptr<Regex> regex_;
  Behavior behavior_;
  bool invert_;
};

// GPT-2's word pattern, used by ByteLevel when use_regex is true.
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  absl::Status Apply(std::vector<Piece>* pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : *pieces) {
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, " ");
      }
    }
    if (regex_ != nullptr) {
      if (absl::Status s = SplitPieces(*regex_, Behavior::kIsolated, false, pieces); !s.ok()) {
        return s;
      }
    }
    for (Piece& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      AppendByteLevel(p.text, &mapped);
      p.text = std::move(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // null when use_regex is false
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, std::unique_ptr<Regex> split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(std::move(split)) {}

  absl::Status Apply(std::vector<Piece>* pieces) const override {
    for (Piece& p : *pieces) {
      absl::StrReplaceAll({{" ", replacement_}}, &p.text);
      const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start))) {
        p.text.insert(0, replacement_);
      }
    }
    if (split_ != nullptr) {
      return SplitPieces(*split_, Behavior::kMergedWithNext, false, pieces);
    }
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  std::unique_ptr<Regex> split_;  // null when split is false
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  DigitsPreTokenizer(std::unique_ptr<Regex> regex, bool individual)
      : regex_(std::move(regex)), individual_(individual) {}
  absl::Status Apply(std::vector<Piece>* pieces) const override {
    return SplitPieces(*regex_, individual_ ? Behavior::kIsolated : Behavior::kContiguous, false,
                       pieces);
  }

 private:
  std::unique_ptr<Regex> regex_;
  bool individual_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Apply(std::vector<Piece>* pieces) const override {
    for (const auto& step : steps_) {
      if (absl::Status s = step->Apply(pieces); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const Json& config) {
  constexpr absl::string_view kWhere = "pre_tokenizer";
  if (!config.is_object()) return absl::InvalidArgumentError("pre_tokenizer: expected an object");
  std::string type;
  if (absl::Status s = GetString(config, "type", kWhere, &type); !s.ok()) return s;

  if (type == "Split") {
    const Json* pattern = FindMember(config, "pattern");
    if (pattern == nullptr || !pattern->is_object()) {
      return absl::InvalidArgumentError("pre_tokenizer Split: missing object field \"pattern\"");
    }
    absl::StatusOr<std::unique_ptr<Regex>> regex;
    if (FindMember(*pattern, "Regex") != nullptr) {
      std::string re;
      if (absl::Status s = GetString(*pattern, "Regex", kWhere, &re); !s.ok()) return s;
      regex = Regex::Create(re);
    } else {
      std::string literal;
      if (absl::Status s = GetString(*pattern, "String", kWhere, &literal); !s.ok()) return s;
      regex = Regex::CreateLiteral(literal);
    }
    if (!regex.ok()) return regex.status();
    std::string behavior_name = "Isolated";
    bool invert = false;
    if (absl::Status s = GetOptionalString(config, "behavior", kWhere, &behavior_name); !s.ok()) {
      return s;
    }
    if (absl::Status s = GetOptionalBool(config, "invert", kWhere, &invert); !s.ok()) return s;
    auto behavior = ParseBehavior(behavior_name);
    if (!behavior.ok()) return behavior.status();
    return std::make_unique<SplitPreTokenizer>(std::move(*regex), *behavior, invert);
  }

  if (type == "ByteLevel") {
    bool add_prefix_space = true, use_regex = true;
    if (absl::Status s = GetOptionalBool(config, "add_prefix_space", kWhere, &add_prefix_space);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = GetOptionalBool(config, "use_regex", kWhere, &use_regex); !s.ok()) {
      return s;
    }
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      auto r = Regex::Create(kGpt2Pattern);
      if (!r.ok()) return r.status();
      regex = std::move(*r);
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }

  if (type == "Metaspace") {
    std::string replacement;
    if (absl::Status s = GetString(config, "replacement", kWhere, &replacement); !s.ok()) return s;
    if (replacement.empty() || !IsValidUtf8(replacement)) {
      return absl::InvalidArgumentError("pre_tokenizer Metaspace: bad replacement");
    }
    PrependScheme scheme = PrependScheme::kAlways;
    if (FindMember(config, "prepend_scheme") != nullptr) {
      std::string name;
      if (absl::Status s = GetString(config, "prepend_scheme", kWhere, &name); !s.ok()) return s;
      if (name == "always") {
        scheme = PrependScheme::kAlways;
      } else if (name == "first") {
        scheme = PrependScheme::kFirst;
      } else if (name == "never") {
        scheme = PrependScheme::kNever;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("pre_tokenizer Metaspace: unknown prepend_scheme \"", name, "\""));
      }
    } else {
      // Files older than prepend_scheme carry add_prefix_space instead.
      bool add_prefix_space = true;
      if (absl::Status s = GetOptionalBool(config, "add_prefix_space", kWhere, &add_prefix_space);
          !s.ok()) {
        return s;
      }
      scheme = add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
    }
    bool split = true;
    if (absl::Status s = GetOptionalBool(config, "split", kWhere, &split); !s.ok()) return s;
    std::unique_ptr<Regex> split_regex;
    if (split) {
      auto r = Regex::CreateLiteral(replacement);
      if (!r.ok()) return r.status();
      split_regex = std::move(*r);
    }
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme,
                                                   std::move(split_regex));
  }

  if (type == "Digits") {
    bool individual = false;
    if (absl::Status s = GetOptionalBool(config, "individual_digits", kWhere, &individual);
        !s.ok()) {
      return s;
    }
    auto r = Regex::Create("[0-9]");
    if (!r.ok()) return r.status();
    return std::make_unique<DigitsPreTokenizer>(std::move(*r), individual);
  }

  if (type == "Sequence") {
    const Json* list = FindMember(config, "pretokenizers");
    if (list == nullptr || !list->is_array()) {
      return absl::InvalidArgumentError("pre_tokenizer Sequence: missing array \"pretokenizers\"");
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const Json& item : *list) {
      auto step = FromJson(item);
      if (!step.ok()) return step.status();
      steps.push_back(std::move(*step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }

  return absl::UnimplementedError(absl::StrCat("unsupported pre_tokenizer type \"", type, "\""));
}

}  // namespace memshare::tokenizer::internal
