// The tiny reasoner's held-out problems (tests/data/tiny_reasoner/
// heldout.jsonl, tools/tiny_reasoner/README.md) and the answer parser of
// tools/tiny_reasoner/datagen.py, for the MemShare evaluation.
//
// Pure functions; thread-safe.
#ifndef MEMSHARE_BENCH_MEMSHARE_EVAL_HELDOUT_H_
#define MEMSHARE_BENCH_MEMSHARE_EVAL_HELDOUT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memshare::bench {

struct HeldoutProblem {
  int32_t id = 0;
  std::string problem;  // the user message
  int64_t answer = 0;
};

// Reads one JSON object per line with "id", "problem" and "answer" (other
// fields are ignored); at most `limit` problems (0: all). NOT_FOUND for a
// missing file, INVALID_ARGUMENT naming the line for a malformed one.
absl::StatusOr<std::vector<HeldoutProblem>> LoadHeldout(const std::string& path, int32_t limit);

// datagen.parse_answer: the integer of the last `Final answer:\s*(-?\d+)`
// match in `text`, or nullopt (also when the digits overflow int64).
std::optional<int64_t> ParseFinalAnswer(absl::string_view text);

}  // namespace memshare::bench

#endif  // MEMSHARE_BENCH_MEMSHARE_EVAL_HELDOUT_H_
