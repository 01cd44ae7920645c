// A Hugging Face tokenizer loaded from tokenizer.json (+ tokenizer_config.json),
// implemented natively: no Python, no Rust, no JavaScript at run time.
//
// Pipeline of Encode, as in HF tokenizers:
//   1. cut the input at added tokens (special tokens such as <|im_start|> and
//      added ordinary ones such as <think>; leftmost-longest);
//   2. normalize each remaining piece (NFC, SentencePiece Prepend/Replace, ...);
//   3. pre-tokenize into words (the file's Split regex run with PCRE2 exactly
//      as written, ByteLevel, Metaspace, ...);
//   4. BPE each word (byte-level vocabularies, or SentencePiece-style with
//      <0xNN> byte fallback);
//   5. if add_special_tokens, wrap with the post-processor's tokens (e.g. BOS).
// See internal/*.h for the exact set of supported components; anything else
// in the file is a clear UNIMPLEMENTED error at load time, never a crash.
//
// Known differences from HF tokenizers: truncation/padding settings are
// ignored; `clean_up_tokenization_spaces` is never applied (Decode is the
// exact inverse of Encode's text, as streaming needs); BPE dropout is ignored.
//
// Thread-safe: every method is const and may be called concurrently (the BPE
// word cache is internally locked).
#ifndef MEMSHARE_ENGINE_TOKENIZER_TOKENIZER_H_
#define MEMSHARE_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace memshare::tokenizer {

namespace internal {
class AddedVocabulary;
class BpeModel;
class Decoder;
class Normalizer;
class PreTokenizer;
}  // namespace internal

class Tokenizer {
 public:
  struct Options {
    // Directory with tokenizer.json and, optionally, tokenizer_config.json.
    // When empty, the two *_json fields below are used instead.
    std::string directory;
    // Contents of tokenizer.json (used when `directory` is empty).
    std::string tokenizer_json;
    // Contents of tokenizer_config.json; may be empty (no BOS/EOS names).
    std::string tokenizer_config_json;
    // Words kept in the BPE word cache (0 disables it).
    size_t word_cache_capacity = 1 << 16;
  };

  // Loads and validates a tokenizer. NOT_FOUND when tokenizer.json is missing,
  // INVALID_ARGUMENT for malformed files, UNIMPLEMENTED for components this
  // implementation does not support.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const Options& options);

  // Shorthand for Create with Options::directory = `directory`.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& directory);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. Added and special tokens written in the text are
  // recognised (as HF tokenizers do). With `add_special_tokens`, the
  // post-processor's tokens are added (e.g. BOS for Llama). INVALID_ARGUMENT
  // if `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool add_special_tokens) const;

  // The text of `ids`. Ids with no token (out of range, or holes in the
  // vocabulary, e.g. the padding rows of an embedding matrix) are skipped, as
  // in HF tokenizers. Invalid UTF-8 produced by the bytes of the tokens
  // becomes U+FFFD.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  // The raw bytes that token `id` stands for in the middle of a text: what the
  // reasoning-step segmenter reads. May be part of a UTF-8 character (byte-level
  // and byte-fallback tokens). Empty for an id with no token.
  absl::string_view TokenPiece(int32_t id) const;

  // The vocabulary string of `id` (e.g. "Ġthe", "▁the", "<|im_end|>"), or
  // nullopt for an id with no token.
  std::optional<absl::string_view> IdToToken(int32_t id) const;

  // The id of a vocabulary string or added token, or nullopt.
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  // True for ids of added tokens marked special (dropped by Decode with
  // skip_special_tokens).
  bool IsSpecial(int32_t id) const;

  // Ids of the tokens named in tokenizer_config.json, when it names them and
  // they exist.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }

  // One past the largest token id (vocabulary plus added tokens).
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }

  // tokenizer_config.json, as loaded (empty object when absent); the chat
  // template reads it.
  const std::string& config_json() const { return config_json_; }

  // Internal: used by IncrementalDecoder.
  const internal::Decoder& decoder() const { return *decoder_; }

 private:
  Tokenizer();
  absl::Status Load(const std::string& tokenizer_json, const std::string& config_json,
                    size_t word_cache_capacity);
  absl::Status EncodeText(absl::string_view text, bool at_start, std::vector<int32_t>* ids) const;

  std::unique_ptr<internal::Normalizer> normalizer_;       // may be null
  std::unique_ptr<internal::PreTokenizer> pre_tokenizer_;  // may be null
  std::unique_ptr<internal::BpeModel> model_;
  std::unique_ptr<internal::AddedVocabulary> added_;
  std::unique_ptr<internal::Decoder> decoder_;
  bool has_normalized_added_tokens_ = false;

  // Post-processor for a single sequence: prefix + ids + suffix.
  std::vector<int32_t> prefix_ids_;
  std::vector<int32_t> suffix_ids_;

  // Indexed by id. A hole has has_token_[id] == false.
  std::vector<std::string> id_to_token_;
  std::vector<std::string> token_bytes_;
  std::vector<bool> has_token_;
  std::vector<bool> special_;

  // Added token content -> id.
  absl::flat_hash_map<std::string, int32_t> added_ids_;

  std::optional<int32_t> bos_id_, eos_id_, pad_id_;
  std::string config_json_;
};

}  // namespace memshare::tokenizer

#endif  // MEMSHARE_ENGINE_TOKENIZER_TOKENIZER_H_
