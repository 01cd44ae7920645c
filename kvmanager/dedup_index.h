// The lexical index of one request's finished reasoning steps (DESIGN.md §4,
// MemShare step 2): MinHash signatures in an LSH banding index.
//
// A signature of num_bands * rows_per_band values is cut into bands; two
// steps collide when any band is equal in full, which happens with
// probability 1 - (1 - J^rows)^bands for Jaccard similarity J. The default
// 32 bands x 2 rows (64 hashes) finds a pair with J = 0.5 with probability
// 0.9999, J = 0.3 with 0.95, J = 0.1 with 0.28: the index only prunes the
// scan; colliding steps are then kept when their estimated similarity (the
// fraction of equal signature values) reaches tau_lex.
//
// Steps are numbered 0, 1, ... in insertion order; each carries the token
// positions it covers.
//
// Thread-compatible; copyable (a forked sequence copies its parent's index).
#ifndef MEMSHARE_KVMANAGER_DEDUP_INDEX_H_
#define MEMSHARE_KVMANAGER_DEDUP_INDEX_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace memshare::kvmanager {

class DedupIndex {
 public:
  struct Options {
    // Bands x rows = the MinHasher's num_hashes. Both >= 1.
    int32_t num_bands = 32;
    int32_t rows_per_band = 2;
  };

  // Token positions [begin, end) of a step in its sequence.
  struct StepSpan {
    int32_t begin = 0;
    int32_t end = 0;
  };

  struct Candidate {
    int32_t step = 0;
    float similarity = 0;  // estimated Jaccard similarity
  };

  static absl::Status Validate(const Options& options);

  // Options must have passed Validate().
  explicit DedupIndex(const Options& options)
      : num_bands_(options.num_bands), rows_(options.rows_per_band) {}

  int32_t num_steps() const { return static_cast<int32_t>(spans_.size()); }
  int32_t signature_size() const { return num_bands_ * rows_; }
  const StepSpan& span(int32_t step) const { return spans_[step]; }
  const uint32_t* signature(int32_t step) const {
    return &signatures_[size_t{1} * step * signature_size()];
  }

  // Replaces *out with the indexed steps that share a band with `signature`
  // and whose estimated similarity to it is >= tau_lex, most similar first
  // (ties: most recent first), at most max_candidates. A step sharing no band
  // is never returned, even at tau_lex 0 (the probabilities above).
  void Query(const uint32_t* signature, float tau_lex, int32_t max_candidates,
             std::vector<Candidate>* out) const;

  // Adds a step; returns its number.
  int32_t Insert(StepSpan span, const uint32_t* signature);

 private:
  uint64_t BandKey(int32_t band, const uint32_t* signature) const;

  int32_t num_bands_;
  int32_t rows_;
  std::vector<StepSpan> spans_;
  // [step][signature_size]
  std::vector<uint32_t> signatures_;
  // Buckets: band key -> most recent node; node = step * num_bands + band,
  // chained through next_ (-1 ends a chain).
  absl::flat_hash_map<uint64_t, int32_t> heads_;
  std::vector<int32_t> next_;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_DEDUP_INDEX_H_
