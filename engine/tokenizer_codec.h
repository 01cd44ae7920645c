// TextCodec over a model directory's tokenizer (engine/tokenizer/): plain
// prompts encoded with the model's special tokens (e.g. BOS), chat messages
// rendered with its chat template, generated tokens detokenized
// incrementally (UTF-8 safe, special tokens left out), and the EOS ids of
// generation_config.json, config.json and tokenizer_config.json together.
//
// Thread-safe (immutable after Create; the tokenizer is thread-safe).
#ifndef MEMSHARE_ENGINE_TOKENIZER_CODEC_H_
#define MEMSHARE_ENGINE_TOKENIZER_CODEC_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/text_codec.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"

namespace memshare::engine {

// The "eos_token_id" entries (an id or a list) of a model directory's
// generation_config.json and config.json, in that order, without repeats;
// files or fields that are missing or malformed contribute nothing.
std::vector<int32_t> ModelEosTokenIds(const std::string& model_dir);

class TokenizerCodec : public TextCodec {
 public:
  struct Options {
    // Directory with tokenizer.json (required), tokenizer_config.json,
    // config.json and generation_config.json (optional).
    std::string model_dir;
  };

  // NOT_FOUND without tokenizer.json; the tokenizer's errors for bad files.
  // A model without a chat template loads; EncodeChat then fails.
  static absl::StatusOr<std::unique_ptr<TokenizerCodec>> Create(const Options& options);

  absl::StatusOr<std::vector<int32_t>> EncodePrompt(absl::string_view text) const override;
  absl::StatusOr<std::vector<int32_t>> EncodeChat(
      absl::Span<const ChatMessage> messages) const override;
  std::unique_ptr<TokenTextStream> NewStream(absl::Span<const int32_t>) const override;
  std::string TokenPiece(int32_t token_id) const override;
  std::vector<int32_t> eos_token_ids() const override { return eos_; }

  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  bool has_chat_template() const { return chat_template_ != nullptr; }

 private:
  TokenizerCodec() = default;

  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<tokenizer::ChatTemplate> chat_template_;  // null: none
  std::string chat_template_error_;                         // why it is null
  std::vector<int32_t> eos_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_TOKENIZER_CODEC_H_
