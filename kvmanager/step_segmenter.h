// Splits the generated text of a request into reasoning steps (DESIGN.md §4,
// MemShare step 1), token by token, at delimiter strings matched on the
// decoded token pieces.
//
// Rules:
//  - A delimiter made only of whitespace (the default "\n\n", a blank line)
//    ends a step: the next step begins at the token after the one that
//    completes it.
//  - Any other delimiter ("Wait", "Let me check", ...) begins a step: the new
//    step begins at the token holding its first byte. It must stand as whole
//    words: an ASCII letter or digit may not touch either end, so "But" does
//    not match in "Butter" or "rebut". The byte after the match is needed
//    for that, so such a boundary is found one token late.
//  - A boundary that would leave a step shorter than `min_step_tokens` is
//    ignored (the delimiter stays inside the current step).
//  - A step reaching `max_step_tokens` ends there (0: no limit), so long
//    stretches without a delimiter still get deduplicated.
//  - Matching is case-sensitive and bytewise (delimiters and pieces are
//    UTF-8); a delimiter may span several pieces.
//
// Steps are given as generated-token indices [begin, end); consecutive steps
// touch. The tokens after the last boundary form the current, unfinished
// step, which is never reported.
//
// StepSegmenter is immutable after Create and thread-safe; State is the
// per-sequence part (copyable, for fork), used by one thread at a time.
#ifndef MEMSHARE_KVMANAGER_STEP_SEGMENTER_H_
#define MEMSHARE_KVMANAGER_STEP_SEGMENTER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memshare::kvmanager {

class StepSegmenter {
 public:
  // "\n\n", "Wait", "Let me check", "Let me verify", "Alternatively", "Hmm",
  // "But", "So the answer".
  static std::vector<std::string> DefaultDelimiters();

  struct Options {
    // Non-empty strings of at most kMaxDelimiterBytes bytes.
    std::vector<std::string> delimiters = DefaultDelimiters();
    // Shortest step, in tokens; >= 1. Two 16-token blocks: on the 600
    // held-out problems 32 lost fewer answers than 16 for the same memory
    // (bench/RESULTS.md, "MemShare evaluation").
    int32_t min_step_tokens = 32;
    // Longest step, in tokens; 0 = unlimited, else >= min_step_tokens.
    // Long steps are cut so that their blocks are indexed while the request
    // still runs (bench/memshare_eval: 48 beat 32, 64 and unlimited).
    int32_t max_step_tokens = 48;
  };

  static constexpr int kMaxDelimiterBytes = 64;

  struct Step {
    int32_t begin = 0;  // first generated token of the step
    int32_t end = 0;    // one past the last
    friend bool operator==(const Step&, const Step&) = default;
  };

  // Per-sequence progress. Default-constructed = nothing generated yet.
  class State {
   public:
    // Generated tokens fed so far.
    int32_t num_tokens() const { return num_tokens_; }
    // First token of the current (unfinished) step.
    int32_t step_begin() const { return step_begin_; }

   private:
    friend class StepSegmenter;
    // The last bytes of the generated text (at least the longest delimiter
    // plus one, for the left word-boundary test) and the token each came
    // from.
    std::string tail_;
    std::vector<int32_t> tail_token_;
    int32_t num_tokens_ = 0;
    int32_t step_begin_ = 0;
    // A word delimiter matched, waiting for the byte after it: the token
    // that would begin the new step, or -1.
    int32_t pending_begin_ = -1;
  };

  static absl::StatusOr<std::unique_ptr<StepSegmenter>> Create(const Options& options);

  StepSegmenter(const StepSegmenter&) = delete;
  StepSegmenter& operator=(const StepSegmenter&) = delete;

  // Feeds the decoded piece of the next generated token (may be empty, e.g.
  // an incomplete UTF-8 sequence) and appends the steps it finishes to *out.
  void Feed(State* state, absl::string_view piece, std::vector<Step>* out) const;

  const Options& options() const { return options_; }

 private:
  explicit StepSegmenter(const Options& options);

  struct Delimiter {
    std::string text;
    bool ends_step;   // whitespace only: the boundary follows it
    bool word_start;  // first byte alphanumeric: needs a non-word byte before
    bool word_end;    // last byte alphanumeric: needs a non-word byte after
  };

  // Closes the current step at token `begin` (the first token of the next
  // one) if that leaves it at least min_step_tokens long.
  void Boundary(State* state, int32_t begin, std::vector<Step>* out) const;

  const Options options_;
  std::vector<Delimiter> delimiters_;
  // Delimiters by their last byte, so each byte of text checks only those
  // that can end there.
  std::array<std::vector<int16_t>, 256> by_last_byte_;
  size_t keep_bytes_ = 0;  // tail bytes kept between pieces
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_STEP_SEGMENTER_H_
