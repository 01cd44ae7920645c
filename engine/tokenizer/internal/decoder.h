// The "decoder" section of tokenizer.json, compiled into a per-token rule:
// every token id stands for a fixed byte string, and the text of a sequence is
// the concatenation of those bytes (made well-formed UTF-8), with a few rules
// that apply at the very start and end of the text only. That is what makes
// streaming detokenization possible: bytes can be emitted as soon as they
// form complete characters.
//
// Supported: ByteLevel (Qwen, Llama 3); Sequence of Replace (String pattern),
// ByteFallback, Fuse, Strip and Metaspace (SentencePiece-style, Llama 2). The
// semantics follow HF tokenizers (Rust): a ByteLevel token whose characters
// are not all in the byte alphabet stands for its own UTF-8; Metaspace drops
// the replacement character in the first token; Strip after Fuse trims the
// whole text.
//
// Thread-safe: immutable after FromJson.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_DECODER_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_DECODER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/internal/json_util.h"

namespace memshare::tokenizer::internal {

class Decoder {
 public:
  // `config` is the decoder JSON object; null (no decoder) is UNIMPLEMENTED.
  static absl::StatusOr<std::unique_ptr<Decoder>> FromJson(const Json* config);

  // The bytes that `token` (its vocabulary string) stands for anywhere but at
  // the start of the text.
  std::string TokenBytes(absl::string_view token) const;

  // The bytes of `token` when it is the first token of the text (differs from
  // TokenBytes only for Metaspace decoders).
  std::string FirstTokenBytes(absl::string_view token) const;

  // Whether FirstTokenBytes can differ from TokenBytes.
  bool has_first_token_rule() const { return metaspace_first_.has_value(); }

  // Whole-text Strip: remove up to strip_start() leading and strip_stop()
  // trailing copies of strip_char() (a single code point, UTF-8).
  int strip_start() const { return strip_start_; }
  int strip_stop() const { return strip_stop_; }
  const std::string& strip_char() const { return strip_char_; }

 private:
  struct Step {
    enum Kind { kReplace, kByteFallback, kStripEach, kMetaspace, kByteLevel } kind;
    std::string from, to;     // kReplace, kMetaspace (from = replacement)
    int start = 0, stop = 0;  // kStripEach
  };

  Decoder() = default;
  static absl::Status AddStep(const Json& config, bool after_fuse, Decoder* d);
  std::string Apply(absl::string_view token, bool first) const;

  std::vector<Step> steps_;
  // Replacement character of a Metaspace step whose prepend scheme is not
  // "never" (dropped from the first token).
  std::optional<std::string> metaspace_first_;
  int strip_start_ = 0;
  int strip_stop_ = 0;
  std::string strip_char_ = " ";
};

// Applies a Decoder's whole-text strip to `text`.
void ApplyWholeTextStrip(const Decoder& decoder, std::string* text);

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_DECODER_H_
