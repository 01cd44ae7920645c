#include "engine/tokenizer/internal/added_vocabulary.h"

#include <utf8proc.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {
namespace {

bool IsWhitespace(char32_t c) {
  if ((c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85) return true;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

bool IsWordChar(char32_t c) {
  if (c == '_') return true;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

// Start of the code point that ends at `end` (exclusive).
size_t PrevCodepointStart(absl::string_view text, size_t end) {
  size_t p = end - 1;
  while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::Create(
    std::vector<AddedToken> tokens) {
  for (const AddedToken& t : tokens) {
    if (t.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("added token ", t.id, " has empty content"));
    }
    if (!IsValidUtf8(t.content)) {
      return absl::InvalidArgumentError(absl::StrCat("added token ", t.id, " is not UTF-8"));
    }
  }
  std::unique_ptr<AddedVocabulary> vocab(new AddedVocabulary(std::move(tokens)));
  for (int32_t i = 0; i < static_cast<int32_t>(vocab->tokens_.size()); ++i) {
    vocab->Insert(vocab->tokens_[i].normalized ? &vocab->normalized_ : &vocab->raw_, i);
  }
  return vocab;
}

void AddedVocabulary::Insert(Trie* trie, int32_t token_index) {
  const std::string& content = tokens_[token_index].content;
  trie->first_byte[static_cast<unsigned char>(content[0])] = true;
  int32_t node = 0;
  for (unsigned char b : content) {
    auto& children = trie->nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(b, INT32_MIN));
    if (it != children.end() && it->first == b) {
      node = it->second;
      continue;
    }
    const int32_t child = static_cast<int32_t>(trie->nodes.size());
    children.insert(it, {b, child});
    trie->nodes.emplace_back();
    node = child;
  }
  // A later duplicate of the same content replaces the earlier one.
  trie->nodes[node].token = token_index;
}

void AddedVocabulary::Split(absl::string_view text, bool normalized,
                            std::vector<Segment>* out) const {
  SplitWith(normalized ? normalized_ : raw_, text, out);
}

void AddedVocabulary::SplitWith(const Trie& trie, absl::string_view text,
                                std::vector<Segment>* out) const {
  const size_t n = text.size();
  size_t text_start = 0;  // start of the pending plain-text segment
  size_t pos = 0;
  auto emit_text = [&](size_t end) {
    if (end > text_start) out->push_back({text_start, end, -1});
  };
  while (pos < n) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    // Longest token starting at pos.
    int32_t node = 0, best = -1;
    size_t best_end = pos;
    for (size_t i = pos; i < n; ++i) {
      const auto& children = trie.nodes[node].children;
      const unsigned char b = static_cast<unsigned char>(text[i]);
      auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(b, INT32_MIN));
      if (it == children.end() || it->first != b) break;
      node = it->second;
      if (trie.nodes[node].token >= 0) {
        best = trie.nodes[node].token;
        best_end = i + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[best];
    if (token.single_word) {
      size_t after = best_end;
      const bool word_before = pos > 0 && [&] {
        size_t p = PrevCodepointStart(text, pos);
        return IsWordChar(NextCodepoint(text, &p));
      }();
      const bool word_after = best_end < n && IsWordChar(NextCodepoint(text, &after));
      if (word_before || word_after) {
        ++pos;
        continue;
      }
    }
    size_t begin = pos, end = best_end;
    if (token.lstrip) {
      while (begin > text_start) {
        size_t p = PrevCodepointStart(text, begin);
        size_t q = p;
        if (!IsWhitespace(NextCodepoint(text, &q))) break;
        begin = p;
      }
    }
    if (token.rstrip) {
      while (end < n) {
        size_t q = end;
        if (!IsWhitespace(NextCodepoint(text, &q))) break;
        end = q;
      }
    }
    emit_text(begin);
    out->push_back({pos, best_end, token.id});
    pos = end;
    text_start = end;
  }
  emit_text(n);
}

}  // namespace memshare::tokenizer::internal
