#include "engine/id_text_codec.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace memshare::engine {
namespace {

class IdStream : public TokenTextStream {
 public:
  std::string Append(int32_t token_id) override { return absl::StrCat(" ", token_id); }
  std::string Flush() override { return ""; }
};

}  // namespace

absl::StatusOr<std::vector<int32_t>> IdTextCodec::EncodePrompt(absl::string_view text) const {
  std::vector<int32_t> ids;
  for (absl::string_view word :
       absl::StrSplit(text, absl::ByAnyChar(" \t\r\n,"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(word, &id) || id < 0 || id >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt_text: this model has no tokenizer; the prompt must be token ids in [0, ",
          vocab_size_, ") separated by spaces, got \"", word, "\""));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> IdTextCodec::EncodeChat(absl::Span<const ChatMessage>) const {
  return absl::InvalidArgumentError(
      "messages: this model has no tokenizer and no chat template; send token ids");
}

std::unique_ptr<TokenTextStream> IdTextCodec::NewStream(absl::Span<const int32_t>) const {
  return std::make_unique<IdStream>();
}

std::string IdTextCodec::TokenPiece(int32_t token_id) const { return absl::StrCat(" ", token_id); }

}  // namespace memshare::engine
