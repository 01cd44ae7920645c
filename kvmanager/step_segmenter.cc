#include "kvmanager/step_segmenter.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace memshare::kvmanager {
namespace {

bool IsWordByte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool IsSpaceByte(unsigned char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

}  // namespace

std::vector<std::string> StepSegmenter::DefaultDelimiters() {
  return {"\n\n",          "Wait", "Let me check", "Let me verify",
          "Alternatively", "Hmm",  "But",          "So the answer"};
}

absl::StatusOr<std::unique_ptr<StepSegmenter>> StepSegmenter::Create(const Options& options) {
  if (options.min_step_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_step_tokens must be >= 1, got ", options.min_step_tokens));
  }
  if (options.max_step_tokens != 0 && options.max_step_tokens < options.min_step_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_step_tokens must be 0 or >= min_step_tokens (", options.min_step_tokens,
                     "), got ", options.max_step_tokens));
  }
  if (options.delimiters.size() > 1000) {
    return absl::InvalidArgumentError("at most 1000 step delimiters");
  }
  for (size_t i = 0; i < options.delimiters.size(); ++i) {
    const std::string& d = options.delimiters[i];
    if (d.empty() || d.size() > kMaxDelimiterBytes) {
      return absl::InvalidArgumentError(absl::StrCat("delimiters[", i, "] must have 1 to ",
                                                     kMaxDelimiterBytes, " bytes, has ", d.size()));
    }
  }
  return std::unique_ptr<StepSegmenter>(new StepSegmenter(options));
}

StepSegmenter::StepSegmenter(const Options& options) : options_(options) {
  size_t longest = 0;
  for (const std::string& text : options.delimiters) {
    Delimiter d;
    d.text = text;
    d.ends_step = std::all_of(text.begin(), text.end(),
                              [](char c) { return IsSpaceByte(static_cast<unsigned char>(c)); });
    d.word_start = IsWordByte(static_cast<unsigned char>(text.front()));
    d.word_end = IsWordByte(static_cast<unsigned char>(text.back()));
    by_last_byte_[static_cast<unsigned char>(text.back())].push_back(
        static_cast<int16_t>(delimiters_.size()));
    delimiters_.push_back(std::move(d));
    longest = std::max(longest, text.size());
  }
  keep_bytes_ = longest + 1;
}

void StepSegmenter::Boundary(State* state, int32_t begin, std::vector<Step>* out) const {
  if (begin - state->step_begin_ < options_.min_step_tokens) return;
  out->push_back(Step{state->step_begin_, begin});
  state->step_begin_ = begin;
}

void StepSegmenter::Feed(State* state, absl::string_view piece, std::vector<Step>* out) const {
  const int32_t token = state->num_tokens_;
  bool ends_after_token = false;
  for (const char ch : piece) {
    const auto c = static_cast<unsigned char>(ch);
    if (state->pending_begin_ >= 0) {
      // The byte after a word delimiter decides whether it was a whole word.
      if (!IsWordByte(c)) Boundary(state, state->pending_begin_, out);
      state->pending_begin_ = -1;
    }
    state->tail_.push_back(ch);
    state->tail_token_.push_back(token);
    const std::string& tail = state->tail_;
    for (const int16_t di : by_last_byte_[c]) {
      const Delimiter& d = delimiters_[di];
      if (d.text.size() > tail.size()) continue;
      const size_t start = tail.size() - d.text.size();
      if (tail.compare(start, d.text.size(), d.text) != 0) continue;
      if (d.word_start && start > 0 && IsWordByte(static_cast<unsigned char>(tail[start - 1]))) {
        continue;
      }
      if (d.ends_step) {
        ends_after_token = true;
      } else if (d.word_end) {
        // Keep the earliest pending start if two delimiters end here.
        const int32_t begin = state->tail_token_[start];
        if (state->pending_begin_ < 0 || begin < state->pending_begin_) {
          state->pending_begin_ = begin;
        }
      } else {
        Boundary(state, state->tail_token_[start], out);
      }
    }
  }
  // Keep the tail short: the longest delimiter plus one byte of context.
  if (state->tail_.size() > 4 * keep_bytes_) {
    const size_t drop = state->tail_.size() - keep_bytes_;
    state->tail_.erase(0, drop);
    state->tail_token_.erase(state->tail_token_.begin(), state->tail_token_.begin() + drop);
  }
  state->num_tokens_ = token + 1;
  // A blank line ends the step after this token, unless a word delimiter
  // that begins in this very token is waiting to begin the next step here.
  if (ends_after_token && state->pending_begin_ != token) Boundary(state, token + 1, out);
  if (options_.max_step_tokens > 0 &&
      state->num_tokens_ - state->step_begin_ >= options_.max_step_tokens) {
    // A pending word match inside the step being closed would begin an
    // empty step: drop it.
    Boundary(state, state->num_tokens_, out);
    if (state->pending_begin_ >= 0 && state->pending_begin_ < state->step_begin_) {
      state->pending_begin_ = -1;
    }
  }
}

}  // namespace memshare::kvmanager
