#include "engine/tokenizer/internal/bpe_model.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer::internal {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(Options options) {
  for (const auto& [token, id] : options.vocab) {
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab: token \"", token, "\" has negative id ", id));
    }
  }
  std::unique_ptr<BpeModel> model(new BpeModel(std::move(options)));
  const Options& o = model->options_;
  model->merges_.reserve(o.merges.size());
  for (size_t rank = 0; rank < o.merges.size(); ++rank) {
    const auto& [left, right] = o.merges[rank];
    auto l = o.vocab.find(left);
    auto r = o.vocab.find(right);
    auto m = o.vocab.find(absl::StrCat(left, right));
    if (l == o.vocab.end() || r == o.vocab.end() || m == o.vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.merges[", rank, "] \"", left, " ",
                                                     right, "\" uses a token not in the vocab"));
    }
    // The first (highest-priority) rule for a pair wins, as in HF tokenizers.
    model->merges_.try_emplace(PairKey(l->second, r->second),
                               MergeTarget{static_cast<int32_t>(rank), m->second});
  }
  if (o.byte_fallback) {
    std::vector<int32_t> ids(256, -1);
    bool complete = true;
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      auto it = o.vocab.find(name);
      if (it == o.vocab.end()) {
        complete = false;
        break;
      }
      ids[b] = it->second;
    }
    if (complete) model->byte_ids_ = std::move(ids);
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = options_.vocab.find(token);
  if (it == options_.vocab.end()) return std::nullopt;
  return it->second;
}

void BpeModel::Encode(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto it = options_.vocab.find(word); it != options_.vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable =
      options_.cache_capacity > 0 && word.size() <= options_.max_cached_word_bytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  EncodeUncached(word, ids);
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() < options_.cache_capacity) {
      cache_.try_emplace(word, ids->begin() + first, ids->end());
    }
  }
}

void BpeModel::EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the front
    int32_t next;  // index of the next live symbol, -1 at the back
    bool live;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto push = [&symbols](int32_t id) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };
  bool last_was_unk = false;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    NextCodepoint(word, &pos);
    const absl::string_view ch = word.substr(start, pos - start);
    if (auto it = options_.vocab.find(ch); it != options_.vocab.end()) {
      push(it->second);
      last_was_unk = false;
      continue;
    }
    if (!byte_ids_.empty()) {
      for (unsigned char b : ch) push(byte_ids_[b]);
      last_was_unk = false;
      continue;
    }
    if (options_.unk_id.has_value()) {
      if (!(options_.fuse_unk && last_was_unk)) push(*options_.unk_id);
      last_was_unk = true;
    }
    // Without an unknown token the character is dropped, as HF tokenizers do.
  }
  if (symbols.empty()) return;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.live || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Stale entry: the pair at this position changed since it was queued.
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.live = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace memshare::tokenizer::internal
