// A TextCodec for engine tests: one character per token over a 64-character
// alphabet (a-z, A-Z, 0-9, space, '.'), so token ids and text map one to one.
// Chat messages render as "<role> <content> " for each message followed by
// "assistant ". EOS ids are whatever the test says.
//
// Thread-safe (immutable).
#ifndef MEMSHARE_ENGINE_TESTING_FAKE_TEXT_CODEC_H_
#define MEMSHARE_ENGINE_TESTING_FAKE_TEXT_CODEC_H_

#include <string>
#include <vector>

#include "engine/text_codec.h"

namespace memshare::engine {

class FakeTextCodec : public TextCodec {
 public:
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";

  explicit FakeTextCodec(std::vector<int32_t> eos_token_ids = {})
      : eos_(std::move(eos_token_ids)) {}

  absl::StatusOr<std::vector<int32_t>> EncodePrompt(absl::string_view text) const override;
  absl::StatusOr<std::vector<int32_t>> EncodeChat(
      absl::Span<const ChatMessage> messages) const override;
  std::unique_ptr<TokenTextStream> NewStream(absl::Span<const int32_t>) const override;
  std::string TokenPiece(int32_t token_id) const override {
    return Decode(absl::Span<const int32_t>(&token_id, 1));
  }
  std::vector<int32_t> eos_token_ids() const override { return eos_; }

  // Text of a token sequence.
  static std::string Decode(absl::Span<const int32_t> ids);

 private:
  std::vector<int32_t> eos_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_TESTING_FAKE_TEXT_CODEC_H_
