#include "bench/memshare_eval/config_spec.h"

#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace memshare::bench {
namespace {

// "\n" -> newline, "\s" -> space, "\\" -> backslash.
std::string Unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[i + 1];
      if (c == 'n' || c == 's' || c == '\\') {
        out.push_back(c == 'n' ? '\n' : c == 's' ? ' ' : '\\');
        ++i;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string Escape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == ' ') {
      out += "\\s";
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

absl::Status Bad(int index, absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("config ", index, ": ", key, ": ", why));
}

absl::StatusOr<float> ParseFloat(int index, absl::string_view key, absl::string_view v, float lo,
                                 float hi, bool open_lo = false) {
  float f = 0;
  if (!absl::SimpleAtof(v, &f) || !std::isfinite(f) || f < lo || f > hi || (open_lo && f == lo)) {
    return Bad(index, key,
               absl::StrCat("expected a number in ", open_lo ? "(" : "[", lo, ", ", hi, "], got \"",
                            v, "\""));
  }
  return f;
}

absl::StatusOr<int32_t> ParseInt(int index, absl::string_view key, absl::string_view v,
                                 int32_t lo) {
  int32_t n = 0;
  if (!absl::SimpleAtoi(v, &n) || n < lo) {
    return Bad(index, key, absl::StrCat("expected an integer >= ", lo, ", got \"", v, "\""));
  }
  return n;
}

absl::Status Apply(int index, absl::string_view key, absl::string_view v, EvalConfig* c,
                   bool* named) {
  if (key == "name") {
    if (v.empty()) return Bad(index, key, "must not be empty");
    c->name = std::string(v);
    *named = true;
  } else if (key == "memshare") {
    if (v != "on" && v != "off") return Bad(index, key, "expected on or off");
    c->memshare = v == "on";
  } else if (key == "tau_lex") {
    absl::StatusOr<float> f = ParseFloat(index, key, v, 0, 1);
    if (!f.ok()) return f.status();
    c->tau_lex = *f;
  } else if (key == "tau_kv") {
    absl::StatusOr<float> f = ParseFloat(index, key, v, 0, 1e6);
    if (!f.ok()) return f.status();
    c->tau_kv = *f;
  } else if (key == "overlap") {
    absl::StatusOr<float> f = ParseFloat(index, key, v, 0, 1, /*open_lo=*/true);
    if (!f.ok()) return f.status();
    c->min_block_token_overlap = *f;
  } else if (key == "candidates") {
    absl::StatusOr<int32_t> n = ParseInt(index, key, v, 1);
    if (!n.ok()) return n.status();
    c->max_candidates_per_step = *n;
  } else if (key == "measure") {
    if (v != "any" && v != "anchored") return Bad(index, key, "expected any or anchored");
    c->overlap_measure =
        v == "any" ? kvmanager::OverlapMeasure::kAnySlots : kvmanager::OverlapMeasure::kAnchoredRun;
  } else if (key == "near_delay") {
    absl::StatusOr<int32_t> n = ParseInt(index, key, v, 0);
    if (!n.ok()) return n.status();
    c->near_match_delay_tokens = *n;
  } else if (key == "shifted") {
    if (v != "on" && v != "off") return Bad(index, key, "expected on or off");
    c->shifted_sharing = v == "on";
  } else if (key == "numbers") {
    if (v != "keep" && v != "any") return Bad(index, key, "expected keep or any");
    c->keep_numbers = v == "keep";
  } else if (key == "min_step") {
    absl::StatusOr<int32_t> n = ParseInt(index, key, v, 1);
    if (!n.ok()) return n.status();
    c->min_step_tokens = *n;
  } else if (key == "max_step") {
    absl::StatusOr<int32_t> n = ParseInt(index, key, v, 0);
    if (!n.ok()) return n.status();
    c->max_step_tokens = *n;
  } else if (key == "delims") {
    std::vector<std::string> delims;
    for (absl::string_view d : absl::StrSplit(v, '|')) {
      if (d.empty()) return Bad(index, key, "empty delimiter");
      delims.push_back(Unescape(d));
    }
    c->delimiters = std::move(delims);
  } else if (key == "groups") {
    absl::StatusOr<int32_t> n = ParseInt(index, key, v, 1);
    if (!n.ok()) return n.status();
    c->layer_groups = *n;
  } else if (key == "share") {
    c->share_groups.clear();
    for (absl::string_view g : absl::StrSplit(v, '+')) {
      absl::StatusOr<int32_t> n = ParseInt(index, key, g, 0);
      if (!n.ok()) return n.status();
      c->share_groups.push_back(*n);
    }
  } else {
    return Bad(index, key, "unknown key");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<EvalConfig>> ParseConfigSpecs(absl::string_view spec) {
  std::vector<EvalConfig> out;
  int index = 0;
  for (absl::string_view one : absl::StrSplit(spec, ';')) {
    if (absl::StripAsciiWhitespace(one).empty()) continue;
    std::vector<std::pair<std::string, std::vector<std::string>>> settings;
    for (absl::string_view token :
         absl::StrSplit(one, absl::ByAnyChar(" \t\n"), absl::SkipEmpty())) {
      const size_t eq = token.find('=');
      if (eq == absl::string_view::npos || eq == 0) {
        return Bad(index, token, "expected key=value");
      }
      const absl::string_view key = token.substr(0, eq);
      for (const auto& [k, unused] : settings) {
        if (k == key) return Bad(index, key, "set twice");
      }
      settings.emplace_back(std::string(key),
                            absl::StrSplit(token.substr(eq + 1), ',', absl::AllowEmpty()));
    }
    size_t combinations = 1;
    for (const auto& [key, values] : settings) {
      combinations *= values.size();
      if (key == "name" && values.size() > 1) return Bad(index, key, "cannot be a list");
      if (combinations > 10000) return Bad(index, key, "more than 10000 combinations");
    }
    for (size_t k = 0; k < combinations; ++k) {
      EvalConfig c;
      c.memshare = true;
      bool named = false;
      // Mixed-radix digits of k, the last key fastest.
      size_t rest = k;
      std::vector<size_t> pick(settings.size());
      for (size_t s = settings.size(); s-- > 0;) {
        pick[s] = rest % settings[s].second.size();
        rest /= settings[s].second.size();
      }
      for (size_t s = 0; s < settings.size(); ++s) {
        if (absl::Status st =
                Apply(index, settings[s].first, settings[s].second[pick[s]], &c, &named);
            !st.ok()) {
          return st;
        }
      }
      for (int32_t g : c.share_groups) {
        if (g >= c.layer_groups) {
          return Bad(index, "share", absl::StrCat("group ", g, " of ", c.layer_groups));
        }
      }
      if (!named) c.name = DescribeConfig(c);
      out.push_back(std::move(c));
    }
    ++index;
  }
  return out;
}

std::string DescribeConfig(const EvalConfig& c) {
  if (!c.memshare) return "memshare=off";
  std::vector<std::string> parts;
  if (c.tau_lex) parts.push_back(absl::StrCat("tau_lex=", *c.tau_lex));
  if (c.tau_kv) parts.push_back(absl::StrCat("tau_kv=", *c.tau_kv));
  if (c.min_block_token_overlap)
    parts.push_back(absl::StrCat("overlap=", *c.min_block_token_overlap));
  if (c.max_candidates_per_step) {
    parts.push_back(absl::StrCat("candidates=", *c.max_candidates_per_step));
  }
  if (c.overlap_measure) {
    parts.push_back(absl::StrCat(
        "measure=",
        *c.overlap_measure == kvmanager::OverlapMeasure::kAnySlots ? "any" : "anchored"));
  }
  if (c.near_match_delay_tokens) {
    parts.push_back(absl::StrCat("near_delay=", *c.near_match_delay_tokens));
  }
  if (c.shifted_sharing)
    parts.push_back(absl::StrCat("shifted=", *c.shifted_sharing ? "on" : "off"));
  if (c.keep_numbers) parts.push_back(absl::StrCat("numbers=", *c.keep_numbers ? "keep" : "any"));
  if (c.min_step_tokens) parts.push_back(absl::StrCat("min_step=", *c.min_step_tokens));
  if (c.max_step_tokens) parts.push_back(absl::StrCat("max_step=", *c.max_step_tokens));
  if (c.delimiters) {
    std::vector<std::string> escaped;
    for (const std::string& d : *c.delimiters) escaped.push_back(Escape(d));
    parts.push_back(absl::StrCat("delims=", absl::StrJoin(escaped, "|")));
  }
  if (c.layer_groups != 1) parts.push_back(absl::StrCat("groups=", c.layer_groups));
  if (!c.share_groups.empty()) {
    parts.push_back(absl::StrCat("share=", absl::StrJoin(c.share_groups, "+")));
  }
  if (parts.empty()) return "memshare=on";
  return absl::StrJoin(parts, " ");
}

}  // namespace memshare::bench
