#include "engine/tokenizer/incremental_decoder.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/decoder.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer {

IncrementalDecoder::IncrementalDecoder(const Tokenizer* tokenizer, const Options& options)
    : tokenizer_(tokenizer),
      options_(options),
      seen_token_(false),
      strip_remaining_(options.at_text_start ? tokenizer->decoder().strip_start() : 0) {}

std::string IncrementalDecoder::Add(int32_t id) {
  const std::optional<absl::string_view> token = tokenizer_->IdToToken(id);
  if (!token.has_value()) return "";
  if (options_.skip_special_tokens && tokenizer_->IsSpecial(id)) return "";
  const internal::Decoder& decoder = tokenizer_->decoder();
  if (!seen_token_ && options_.at_text_start && decoder.has_first_token_rule()) {
    pending_ += decoder.FirstTokenBytes(*token);
  } else {
    absl::StrAppend(&pending_, tokenizer_->TokenPiece(id));
  }
  seen_token_ = true;
  return Emit();
}

std::string IncrementalDecoder::Add(absl::Span<const int32_t> ids) {
  std::string out;
  for (int32_t id : ids) out += Add(id);
  return out;
}

std::string IncrementalDecoder::Emit() {
  const size_t complete = internal::CompletePrefixLength(pending_);
  if (complete == 0) return "";
  std::string text = internal::ToValidUtf8(absl::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  if (strip_remaining_ > 0) {
    const std::string& c = tokenizer_->decoder().strip_char();
    size_t begin = 0;
    while (strip_remaining_ > 0 && text.compare(begin, c.size(), c) == 0) {
      begin += c.size();
      --strip_remaining_;
    }
    // Anything else seen first ends the leading run.
    if (begin < text.size()) strip_remaining_ = 0;
    text.erase(0, begin);
  }
  return text;
}

std::string IncrementalDecoder::Flush() {
  std::string text = internal::ToValidUtf8(pending_);
  pending_.clear();
  seen_token_ = false;
  strip_remaining_ = options_.at_text_start ? tokenizer_->decoder().strip_start() : 0;
  return text;
}

}  // namespace memshare::tokenizer
