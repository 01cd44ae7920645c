#include "engine/testing/fake_text_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace memshare::engine {
namespace {

class CharStream : public TokenTextStream {
 public:
  std::string Append(int32_t token_id) override {
    return FakeTextCodec::Decode(absl::Span<const int32_t>(&token_id, 1));
  }
  std::string Flush() override { return ""; }
};

}  // namespace

absl::StatusOr<std::vector<int32_t>> FakeTextCodec::EncodePrompt(absl::string_view text) const {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < text.size(); ++i) {
    const char* p = std::strchr(kAlphabet, text[i]);
    if (text[i] == '\0' || p == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_text: character at byte ", i, " is not in the vocabulary"));
    }
    ids.push_back(static_cast<int32_t>(p - kAlphabet));
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> FakeTextCodec::EncodeChat(
    absl::Span<const ChatMessage> messages) const {
  std::string text;
  for (const ChatMessage& m : messages) absl::StrAppend(&text, m.role, " ", m.content, " ");
  absl::StrAppend(&text, "assistant ");
  return EncodePrompt(text);
}

std::unique_ptr<TokenTextStream> FakeTextCodec::NewStream(absl::Span<const int32_t>) const {
  return std::make_unique<CharStream>();
}

std::string FakeTextCodec::Decode(absl::Span<const int32_t> ids) {
  std::string out;
  for (int32_t id : ids) out += (id >= 0 && id < 64) ? kAlphabet[id] : '?';
  return out;
}

}  // namespace memshare::engine
