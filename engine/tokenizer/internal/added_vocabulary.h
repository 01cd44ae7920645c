// The added tokens of tokenizer.json ("added_tokens"): special tokens such as
// <|im_start|> and added ordinary tokens such as <think>. Input text is cut at
// every occurrence of one of them before normalization and pre-tokenization,
// so they are always recognised inside text, never split by BPE.
//
// Matching is leftmost-longest over a byte trie (the same result as HF
// tokenizers' Aho-Corasick LeftmostLongest), honouring each token's
// single_word, lstrip and rstrip flags.
//
// Thread-safe: immutable after Create.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_ADDED_VOCABULARY_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_ADDED_VOCABULARY_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memshare::tokenizer::internal {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  // Special tokens are dropped by Decode(skip_special_tokens = true).
  bool special = false;
  // Matches only when not inside a word.
  bool single_word = false;
  // Swallows whitespace on its left / right.
  bool lstrip = false;
  bool rstrip = false;
  // Matched against normalized text rather than the raw input.
  bool normalized = false;
};

// A piece of input: either plain text [begin, end) or one added token.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
  // The added token's id, or -1 for plain text.
  int32_t token_id = -1;
};

class AddedVocabulary {
 public:
  // INVALID_ARGUMENT on an empty or non-UTF-8 content.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> Create(std::vector<AddedToken> tokens);

  AddedVocabulary(const AddedVocabulary&) = delete;
  AddedVocabulary& operator=(const AddedVocabulary&) = delete;

  // Cuts `text` at the tokens whose `normalized` flag equals `normalized`,
  // appending segments that cover it in order (whitespace swallowed by
  // lstrip/rstrip is left out; empty text segments are not emitted).
  void Split(absl::string_view text, bool normalized, std::vector<Segment>* out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  struct Node {
    // Sorted by byte.
    std::vector<std::pair<unsigned char, int32_t>> children;
    // Index into tokens_ of the token ending here, or -1.
    int32_t token = -1;
  };
  struct Trie {
    std::vector<Node> nodes{Node{}};
    std::array<bool, 256> first_byte{};
  };

  explicit AddedVocabulary(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {}
  void Insert(Trie* trie, int32_t token_index);
  void SplitWith(const Trie& trie, absl::string_view text, std::vector<Segment>* out) const;

  std::vector<AddedToken> tokens_;
  Trie raw_;         // tokens with normalized = false
  Trie normalized_;  // tokens with normalized = true
};

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_ADDED_VOCABULARY_H_
