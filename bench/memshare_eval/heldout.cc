#include "bench/memshare_eval/heldout.h"

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace memshare::bench {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

}  // namespace

absl::StatusOr<std::vector<HeldoutProblem>> LoadHeldout(const std::string& path, int32_t limit) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::vector<HeldoutProblem> out;
  std::string line;
  int64_t line_no = 0;
  while ((limit <= 0 || static_cast<int32_t>(out.size()) < limit) && std::getline(file, line)) {
    ++line_no;
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_number_integer() ||
        !j.contains("problem") || !j["problem"].is_string() || !j.contains("answer") ||
        !j["answer"].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no,
                       ": expected a JSON object with integer id, string problem and "
                       "integer answer"));
    }
    out.push_back(
        {j["id"].get<int32_t>(), j["problem"].get<std::string>(), j["answer"].get<int64_t>()});
  }
  return out;
}

std::optional<int64_t> ParseFinalAnswer(absl::string_view text) {
  static constexpr absl::string_view kTag = "Final answer:";
  std::optional<int64_t> last;
  size_t from = 0;
  while (true) {
    const size_t at = text.find(kTag, from);
    if (at == absl::string_view::npos) break;
    size_t i = at + kTag.size();
    while (i < text.size() && IsSpace(text[i])) ++i;
    const bool negative = i < text.size() && text[i] == '-';
    if (negative) ++i;
    const size_t digits = i;
    // Accumulate as a negative number so that INT64_MIN parses too.
    int64_t value = 0;
    bool overflow = false;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      const int d = text[i] - '0';
      if (value < (std::numeric_limits<int64_t>::min() + d) / 10) overflow = true;
      if (!overflow) value = value * 10 - d;
      ++i;
    }
    if (i > digits) {
      // A regex match: it consumes the text up to i (findall resumes there).
      if (overflow || (!negative && value == std::numeric_limits<int64_t>::min())) {
        last.reset();
      } else {
        last = negative ? value : -value;
      }
      from = i;
    } else {
      from = at + 1;
    }
  }
  return last;
}

}  // namespace memshare::bench
