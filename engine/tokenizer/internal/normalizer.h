// The "normalizer" section of tokenizer.json: text rewrites applied to each
// piece of input between added tokens, before pre-tokenization.
//
// Supported types: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Prepend,
// Replace (String or Regex pattern), Strip, and Sequence of these. Others
// (BertNormalizer, Precompiled, ...) are rejected with UNIMPLEMENTED.
//
// Thread-safe: immutable after FromJson.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_NORMALIZER_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_NORMALIZER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/internal/json_util.h"

namespace memshare::tokenizer::internal {

class Normalizer {
 public:
  // Builds the normalizer described by `config` (a JSON object with "type").
  static absl::StatusOr<std::unique_ptr<Normalizer>> FromJson(const Json& config);

  virtual ~Normalizer() = default;

  // Rewrites `text` (valid UTF-8) in place; the result is valid UTF-8.
  virtual absl::Status Normalize(std::string* text) const = 0;
};

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_NORMALIZER_H_
