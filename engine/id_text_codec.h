// A TextCodec for checkpoints that ship no tokenizer (the golden test
// models, dummy-weight benchmarks): the text of a prompt is its token ids in
// decimal, separated by white space ("1 17 42"), and each generated token
// streams as " <id>". Chat messages are refused (no template).
//
// Thread-safe (immutable).
#ifndef MEMSHARE_ENGINE_ID_TEXT_CODEC_H_
#define MEMSHARE_ENGINE_ID_TEXT_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/text_codec.h"

namespace memshare::engine {

class IdTextCodec : public TextCodec {
 public:
  // `vocab_size` bounds the ids a prompt may name; `eos_token_ids` come from
  // the model's config.
  IdTextCodec(int32_t vocab_size, std::vector<int32_t> eos_token_ids)
      : vocab_size_(vocab_size), eos_(std::move(eos_token_ids)) {}

  absl::StatusOr<std::vector<int32_t>> EncodePrompt(absl::string_view text) const override;
  absl::StatusOr<std::vector<int32_t>> EncodeChat(
      absl::Span<const ChatMessage> messages) const override;
  std::unique_ptr<TokenTextStream> NewStream(absl::Span<const int32_t>) const override;
  std::string TokenPiece(int32_t token_id) const override;
  std::vector<int32_t> eos_token_ids() const override { return eos_; }

 private:
  const int32_t vocab_size_;
  const std::vector<int32_t> eos_;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_ID_TEXT_CODEC_H_
