#include "common/testing/prometheus_text.h"

#include <cctype>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace memshare::testing {
namespace {

bool IsNameStart(char c, bool colon) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (colon && c == ':');
}
bool IsNameChar(char c, bool colon) {
  return IsNameStart(c, colon) || std::isdigit(static_cast<unsigned char>(c));
}

// Reads a metric (colon = true) or label name at `pos`.
bool ReadName(absl::string_view line, size_t& pos, bool colon, std::string* out) {
  if (pos >= line.size() || !IsNameStart(line[pos], colon)) return false;
  const size_t start = pos;
  while (pos < line.size() && IsNameChar(line[pos], colon)) ++pos;
  *out = std::string(line.substr(start, pos - start));
  return true;
}

absl::StatusOr<double> ParseValue(absl::string_view s) {
  if (s == "+Inf" || s == "Inf") return std::numeric_limits<double>::infinity();
  if (s == "-Inf") return -std::numeric_limits<double>::infinity();
  if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  double v = 0;
  if (!absl::SimpleAtod(s, &v))
    return absl::InvalidArgumentError(absl::StrCat("bad value '", s, "'"));
  return v;
}

absl::Status ParseSample(absl::string_view line, PromSample* sample) {
  size_t pos = 0;
  if (!ReadName(line, pos, true, &sample->name)) {
    return absl::InvalidArgumentError("bad metric name");
  }
  if (pos < line.size() && line[pos] == '{') {
    ++pos;
    while (true) {
      if (pos < line.size() && line[pos] == '}') {
        ++pos;
        break;
      }
      std::string label;
      if (!ReadName(line, pos, false, &label)) return absl::InvalidArgumentError("bad label name");
      if (pos + 1 >= line.size() || line[pos] != '=' || line[pos + 1] != '"') {
        return absl::InvalidArgumentError("expected =\" after label name");
      }
      pos += 2;
      std::string value;
      bool closed = false;
      while (pos < line.size()) {
        const char c = line[pos++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (pos >= line.size()) return absl::InvalidArgumentError("dangling escape");
          const char e = line[pos++];
          if (e == 'n') {
            value += '\n';
          } else if (e == '\\' || e == '"') {
            value += e;
          } else {
            return absl::InvalidArgumentError("bad escape in label value");
          }
        } else {
          value += c;
        }
      }
      if (!closed) return absl::InvalidArgumentError("unterminated label value");
      if (!sample->labels.emplace(label, value).second) {
        return absl::InvalidArgumentError(absl::StrCat("duplicate label ", label));
      }
      if (pos < line.size() && line[pos] == ',') ++pos;
    }
  }
  if (pos >= line.size() || line[pos] != ' ') return absl::InvalidArgumentError("expected value");
  std::vector<absl::string_view> rest =
      absl::StrSplit(line.substr(pos + 1), ' ', absl::SkipEmpty());
  if (rest.empty() || rest.size() > 2)
    return absl::InvalidArgumentError("expected value [timestamp]");
  absl::StatusOr<double> v = ParseValue(rest[0]);
  if (!v.ok()) return v.status();
  sample->value = *v;
  if (rest.size() == 2) {
    int64_t ts = 0;
    if (!absl::SimpleAtoi(rest[1], &ts)) return absl::InvalidArgumentError("bad timestamp");
  }
  return absl::OkStatus();
}

// The family a sample name belongs to, given the declared families.
std::string FamilyOf(const std::string& name, const std::map<std::string, PromFamily>& families) {
  if (families.contains(name)) return name;
  for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(name, suffix)) {
      std::string base = name.substr(0, name.size() - suffix.size());
      auto it = families.find(base);
      if (it != families.end() &&
          (it->second.type == "histogram" || it->second.type == "summary")) {
        return base;
      }
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<double> PromPage::Value(const std::string& name,
                                       const std::map<std::string, std::string>& labels) const {
  for (const auto& [family_name, family] : families) {
    for (const PromSample& s : family.samples) {
      if (s.name != name) continue;
      bool match = true;
      for (const auto& [k, v] : labels) {
        auto it = s.labels.find(k);
        if (it == s.labels.end() || it->second != v) match = false;
      }
      if (match) return s.value;
    }
  }
  return absl::NotFoundError(absl::StrCat("no sample ", name));
}

absl::StatusOr<PromPage> ParsePrometheusText(const std::string& text) {
  PromPage page;
  int line_no = 0;
  auto error = [&line_no](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": ", what));
  };
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() >= 3 && (parts[1] == "HELP" || parts[1] == "TYPE")) {
        std::string name(parts[2]);
        size_t pos = 0;
        std::string checked;
        if (!ReadName(name, pos, true, &checked) || pos != name.size()) {
          return error("bad family name");
        }
        PromFamily& family = page.families[name];
        if (parts[1] == "HELP") {
          if (!family.help.empty()) return error(absl::StrCat("second HELP for ", name));
          family.help = parts.size() == 4 ? std::string(parts[3]) : " ";
        } else {
          if (parts.size() != 4) return error("TYPE without a type");
          if (!family.type.empty()) return error(absl::StrCat("second TYPE for ", name));
          if (!family.samples.empty()) return error(absl::StrCat("TYPE after samples of ", name));
          const absl::string_view t = parts[3];
          if (t != "counter" && t != "gauge" && t != "histogram" && t != "summary" &&
              t != "untyped") {
            return error(absl::StrCat("unknown type ", t));
          }
          family.type = std::string(t);
        }
      }
      continue;
    }
    PromSample sample;
    if (absl::Status s = ParseSample(line, &sample); !s.ok()) return error(s.message());
    const std::string family_name = FamilyOf(sample.name, page.families);
    if (family_name.empty())
      return error(absl::StrCat("sample of undeclared family ", sample.name));
    PromFamily& family = page.families[family_name];
    if (family.type.empty()) return error(absl::StrCat("sample before TYPE of ", family_name));
    if (family.type == "histogram" && absl::EndsWith(sample.name, "_bucket") &&
        !sample.labels.contains("le")) {
      return error(absl::StrCat("bucket without le: ", sample.name));
    }
    family.samples.push_back(std::move(sample));
  }
  for (const auto& [name, family] : page.families) {
    if (family.type.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no TYPE"));
    if (family.type != "histogram") continue;
    // Each label set's buckets must end with +Inf.
    std::map<std::map<std::string, std::string>, bool> has_inf;
    for (const PromSample& s : family.samples) {
      if (!absl::EndsWith(s.name, "_bucket")) continue;
      auto labels = s.labels;
      const std::string le = labels["le"];
      labels.erase("le");
      has_inf[labels] = has_inf[labels] || le == "+Inf";
    }
    for (const auto& [labels, inf] : has_inf) {
      if (!inf) return absl::InvalidArgumentError(absl::StrCat(name, ": no +Inf bucket"));
    }
  }
  return page;
}

}  // namespace memshare::testing
