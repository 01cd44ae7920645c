// The "pre_tokenizer" section of tokenizer.json: splits normalized text into
// words that the BPE model then encodes one by one.
//
// Supported types:
//   - Split: a Regex pattern applied with PCRE2 exactly as written in the
//     file (or a String pattern), every SplitDelimiterBehavior (Removed,
//     Isolated, MergedWithPrevious, MergedWithNext, Contiguous) and `invert`.
//   - ByteLevel: optional prefix space, optional GPT-2 regex, then every byte
//     mapped to the byte-level alphabet (Qwen, Llama 3, GPT-2).
//   - Metaspace: spaces to U+2581, prepend scheme always/first/never,
//     optional split (newer SentencePiece-style files).
//   - Digits, and Sequence of these.
// Others are rejected with UNIMPLEMENTED.
//
// Thread-safe: immutable after FromJson.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_PRE_TOKENIZER_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/internal/json_util.h"

namespace memshare::tokenizer::internal {

// One word of input on its way to the model.
struct Piece {
  std::string text;
  // True for the piece that begins at offset 0 of the original input (what
  // Metaspace's prepend_scheme "first" looks at).
  bool at_start = false;
};

class PreTokenizer {
 public:
  // Builds the pre-tokenizer described by `config` (a JSON object with "type").
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const Json& config);

  virtual ~PreTokenizer() = default;

  // Splits each of `pieces` further, in place, keeping their order. Pieces
  // that become empty are dropped.
  virtual absl::Status Apply(std::vector<Piece>* pieces) const = 0;
};

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_PRE_TOKENIZER_H_
