// MinHash signatures of token sequences (DESIGN.md §4, MemShare step 2).
//
// A step is the set of its token shingles (every run of `shingle_size`
// consecutive token ids; a step shorter than that is one shingle of all its
// tokens). Each shingle is hashed once to 64 bits (xxHash); hash function k
// is then h_k(x) = high 32 bits of (a_k * x + b_k) mod 2^64 with random odd
// a_k (multiply-shift, a universal family), and signature[k] is the minimum
// of h_k over the shingles. The fraction of equal entries of two signatures
// estimates the Jaccard similarity of the two shingle sets, with standard
// error sqrt(J(1-J)/num_hashes).
//
// Immutable after Create; thread-safe.
#ifndef MEMSHARE_KVMANAGER_MIN_HASHER_H_
#define MEMSHARE_KVMANAGER_MIN_HASHER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace memshare::kvmanager {

class MinHasher {
 public:
  struct Options {
    // Signature length; 1 .. 1024.
    int32_t num_hashes = 64;
    // Tokens per shingle; 1 .. 16.
    int32_t shingle_size = 3;
    // Seed of the hash family (every rank and every run uses the same one,
    // so decisions are reproducible).
    uint64_t seed = 0x5eed5eed5eed5eedULL;
  };

  static absl::StatusOr<std::unique_ptr<MinHasher>> Create(const Options& options);

  MinHasher(const MinHasher&) = delete;
  MinHasher& operator=(const MinHasher&) = delete;

  int32_t num_hashes() const { return static_cast<int32_t>(a_.size()); }
  int32_t shingle_size() const { return shingle_size_; }

  // Writes the signature of `tokens` to out[0 .. num_hashes). An empty
  // token list gives all 0xffffffff (similar to nothing: callers skip it).
  void Sign(absl::Span<const int32_t> tokens, uint32_t* out) const;

  // Fraction of equal entries of two signatures of length n.
  static float EstimateJaccard(const uint32_t* a, const uint32_t* b, int32_t n);

 private:
  explicit MinHasher(const Options& options);

  int32_t shingle_size_;
  std::vector<uint64_t> a_;  // odd multipliers
  std::vector<uint64_t> b_;
};

}  // namespace memshare::kvmanager

#endif  // MEMSHARE_KVMANAGER_MIN_HASHER_H_
