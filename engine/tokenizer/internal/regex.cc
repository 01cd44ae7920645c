#include "engine/tokenizer/internal/regex.h"

#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {
namespace {

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), n);
}

// Frees match data on scope exit.
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Create(absl::string_view pattern) {
  if (!IsValidUtf8(pattern)) {
    return absl::InvalidArgumentError("split pattern is not valid UTF-8");
  }
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot compile regex \"", pattern, "\" at offset ", offset, ": ", Pcre2Message(error)));
  }
  const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<Regex>(new Regex(std::string(pattern), code, jit));
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::CreateLiteral(absl::string_view literal) {
  // \Q..\E quotes everything except a literal "\E", which is spliced in.
  std::string quoted = "\\Q";
  for (size_t i = 0; i < literal.size(); ++i) {
    if (literal[i] == '\\' && i + 1 < literal.size() && literal[i + 1] == 'E') {
      quoted += "\\E\\\\E\\Q";
      ++i;
    } else {
      quoted.push_back(literal[i]);
    }
  }
  quoted += "\\E";
  return Create(quoted);
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status Regex::FindAll(absl::string_view text,
                            std::vector<std::pair<size_t, size_t>>* matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(code, nullptr));
  if (md == nullptr) return absl::ResourceExhaustedError("cannot allocate PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    int rc;
    if (jit_) {
      rc = pcre2_jit_match(code, subject, text.size(), start, 0, md.get(), nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        // A pathological input for the JIT's fixed stack: the interpreter keeps
        // its backtracking frames on the heap.
        rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_JIT | PCRE2_NO_UTF_CHECK,
                         md.get(), nullptr);
      }
    } else {
      rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("regex \"", pattern_, "\" failed: ", Pcre2Message(rc)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      matches->emplace_back(b, e);
      start = e;
    } else {
      // Empty match: step over one character.
      if (b >= text.size()) break;
      size_t next = b;
      NextCodepoint(text, &next);
      start = next;
    }
  }
  return absl::OkStatus();
}

}  // namespace memshare::tokenizer::internal
