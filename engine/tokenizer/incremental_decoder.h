// Streaming detokenizer: feed token ids one at a time as they are generated,
// get back the text that became complete. Never emits part of a UTF-8
// character: the bytes of a character split across byte-level or <0xNN>
// byte-fallback tokens are held until the character is complete.
//
// Contract: with Options::at_text_start = true, the concatenation of every
// Add() result and Flush() equals Tokenizer::Decode(all ids,
// skip_special_tokens) (except a decoder's trailing Strip, which a stream
// cannot know about; no supported family uses one). Bytes that can never form
// a character come out as U+FFFD as soon as that is certain.
//
// Thread-compatible: one decoder per sequence; the Tokenizer must outlive it
// and may be shared.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INCREMENTAL_DECODER_H_
#define MEMSHARE_ENGINE_TOKENIZER_INCREMENTAL_DECODER_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/types/span.h"
#include "engine/tokenizer/tokenizer.h"

namespace memshare::tokenizer {

class IncrementalDecoder {
 public:
  struct Options {
    // Leave special tokens (e.g. <|im_end|>) out of the text.
    bool skip_special_tokens = true;
    // True when the first id fed begins the text (nothing before it), so the
    // decoder's start-of-text rules apply (SentencePiece's leading-space
    // strip). False, the default, suits generated tokens that follow a prompt:
    // they decode as they would inside a text ("▁Hello" -> " Hello").
    bool at_text_start = false;
  };

  // `tokenizer` is not owned and must outlive the decoder.
  IncrementalDecoder(const Tokenizer* tokenizer, const Options& options);

  // Feeds one id and returns the newly completed text (possibly empty). Ids
  // with no token are ignored, as in Tokenizer::Decode.
  std::string Add(int32_t id);

  // Feeds several ids; returns the concatenation of their Add() results.
  std::string Add(absl::Span<const int32_t> ids);

  // Ends the stream: bytes still held (an incomplete character) come out as
  // U+FFFD. The decoder may be reused afterwards for a new text.
  std::string Flush();

  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  std::string Emit();

  const Tokenizer* tokenizer_;
  Options options_;
  std::string pending_;  // bytes of an incomplete character
  bool seen_token_;      // a token has been fed since the start/Flush
  int strip_remaining_;  // leading strip characters still to remove
};

}  // namespace memshare::tokenizer

#endif  // MEMSHARE_ENGINE_TOKENIZER_INCREMENTAL_DECODER_H_
