// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): turns one
// pre-tokenized word into token ids by applying merges in rank order.
//
// Algorithm: the word starts as one symbol per character (a character missing
// from the vocabulary becomes its <0xNN> byte tokens when byte_fallback is on,
// else the unknown token, else it is dropped, as in HF tokenizers); a min-heap
// keyed by (merge rank, position) picks the next merge, with stale entries
// skipped; O(n log n) per word. Results are memoized per word in a bounded
// cache, so text that repeats words costs one hash lookup per word.
//
// Thread-safe: the vocabulary and merges are immutable; the word cache is
// guarded by a mutex.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_BPE_MODEL_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_BPE_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace memshare::tokenizer::internal {

class BpeModel {
 public:
  struct Options {
    // Token -> id. Ids must be non-negative.
    absl::flat_hash_map<std::string, int32_t> vocab;
    // Merge rules, highest priority first: (left, right) token strings; both
    // and their concatenation must be in `vocab`.
    std::vector<std::pair<std::string, std::string>> merges;
    // Id of the unknown token, if the model has one.
    std::optional<int32_t> unk_id;
    // Merge consecutive unknown characters into one unknown token.
    bool fuse_unk = false;
    // Encode characters missing from the vocabulary as <0xNN> byte tokens.
    bool byte_fallback = false;
    // A word that is itself in the vocabulary is emitted as is, without merges
    // (Llama 3).
    bool ignore_merges = false;
    // Maximum number of words kept in the word cache (0 disables it).
    size_t cache_capacity = 1 << 16;
    // Words longer than this many bytes are not cached.
    size_t max_cached_word_bytes = 256;
  };

  // Validates the vocabulary and merges. INVALID_ARGUMENT names the first bad
  // entry.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(Options options);

  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of `word` (valid UTF-8) to `ids`.
  void Encode(absl::string_view word, std::vector<int32_t>* ids) const;

  // The id of `token` in the model's vocabulary.
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return options_.vocab; }

 private:
  struct MergeTarget {
    int32_t rank;
    int32_t new_id;
  };

  explicit BpeModel(Options options) : options_(std::move(options)) {}

  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  // Runs the merge loop without the cache.
  void EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const;

  Options options_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  // Ids of <0x00>..<0xFF> when byte_fallback is on and all exist, else empty.
  std::vector<int32_t> byte_ids_;

  mutable absl::Mutex cache_mu_;
  // Word -> ids. Grows to cache_capacity and then stops admitting words.
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_BPE_MODEL_H_
