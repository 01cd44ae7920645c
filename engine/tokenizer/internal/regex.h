// A compiled PCRE2 pattern in UTF + UCP mode, used for the split patterns of
// tokenizer.json exactly as written there (Oniguruma syntax, which PCRE2
// accepts for everything these files use: \p{..}, (?i:..), (?!..), {m,n}).
//
// Thread-safe: the compiled pattern is immutable; each call allocates its own
// match data.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_REGEX_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memshare::tokenizer::internal {

class Regex {
 public:
  // Compiles `pattern` (UTF-8). Returns INVALID_ARGUMENT with PCRE2's message
  // and offset when it does not compile.
  static absl::StatusOr<std::unique_ptr<Regex>> Create(absl::string_view pattern);

  // Compiles a pattern that matches `literal` verbatim.
  static absl::StatusOr<std::unique_ptr<Regex>> CreateLiteral(absl::string_view literal);

  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte ranges of the successive non-overlapping
  // matches in `text` (valid UTF-8), scanning left to right. Empty matches are
  // skipped (the scan advances by one character). Fails on a PCRE2 resource
  // limit, never crashes.
  absl::Status FindAll(absl::string_view text,
                       std::vector<std::pair<size_t, size_t>>* matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex(std::string pattern, void* code, bool jit)
      : pattern_(std::move(pattern)), code_(code), jit_(jit) {}

  std::string pattern_;
  void* code_;  // pcre2_code*, owned
  bool jit_;    // JIT compilation succeeded
};

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_REGEX_H_
