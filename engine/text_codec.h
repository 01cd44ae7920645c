// What the engine needs from the tokenizer: prompts to token ids (plain text
// or chat messages through the model's chat template), streamed token ids to
// UTF-8-safe text, and the end-of-sequence ids. Implemented over
// engine/tokenizer/ for real models and by a fake in the engine's tests.
//
// Thread-safety: TextCodec is thread-safe (Submit encodes on RPC threads);
// a TokenTextStream belongs to one request and the scheduler thread.
#ifndef MEMSHARE_ENGINE_TEXT_CODEC_H_
#define MEMSHARE_ENGINE_TEXT_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/request.h"

namespace memshare::engine {

// Detokenizes one sequence's generated tokens as they come.
class TokenTextStream {
 public:
  virtual ~TokenTextStream() = default;
  // The text that `token_id` completes: bytes of an unfinished UTF-8
  // character are held until the character completes.
  virtual std::string Append(int32_t token_id) = 0;
  // What is still held back when the stream ends.
  virtual std::string Flush() = 0;
};

class TextCodec {
 public:
  virtual ~TextCodec() = default;

  // A plain-text prompt, with the special tokens the model expects around
  // it (e.g. BOS). INVALID_ARGUMENT naming the field for text it cannot
  // encode.
  virtual absl::StatusOr<std::vector<int32_t>> EncodePrompt(absl::string_view text) const = 0;

  // Chat messages rendered with the model's chat template, ending with the
  // prompt of the assistant's turn. INVALID_ARGUMENT naming the field.
  virtual absl::StatusOr<std::vector<int32_t>> EncodeChat(
      absl::Span<const ChatMessage> messages) const = 0;

  // A detokenizer for the tokens generated after `prompt_token_ids`.
  virtual std::unique_ptr<TokenTextStream> NewStream(
      absl::Span<const int32_t> prompt_token_ids) const = 0;

  // The text one token stands for in the middle of a text (maybe part of a
  // UTF-8 character): what MemShare's reasoning-step segmenter reads.
  virtual std::string TokenPiece(int32_t token_id) const = 0;

  // Ids that end generation (EOS and the model's other end-of-turn ids).
  virtual std::vector<int32_t> eos_token_ids() const = 0;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_TEXT_CODEC_H_
