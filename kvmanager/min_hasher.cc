#include "kvmanager/min_hasher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace memshare::kvmanager {
namespace {

// SplitMix64: a deterministic stream of well-mixed 64-bit values.
uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MinHasher>> MinHasher::Create(const Options& options) {
  if (options.num_hashes < 1 || options.num_hashes > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_hashes must be in [1, 1024], got ", options.num_hashes));
  }
  if (options.shingle_size < 1 || options.shingle_size > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("shingle_size must be in [1, 16], got ", options.shingle_size));
  }
  return std::unique_ptr<MinHasher>(new MinHasher(options));
}

MinHasher::MinHasher(const Options& options) : shingle_size_(options.shingle_size) {
  uint64_t state = options.seed;
  a_.resize(options.num_hashes);
  b_.resize(options.num_hashes);
  for (int32_t k = 0; k < options.num_hashes; ++k) {
    a_[k] = SplitMix64(&state) | 1;
    b_[k] = SplitMix64(&state);
  }
}

void MinHasher::Sign(absl::Span<const int32_t> tokens, uint32_t* out) const {
  const int32_t n = num_hashes();
  std::fill(out, out + n, UINT32_MAX);
  if (tokens.empty()) return;
  const size_t width = std::min<size_t>(shingle_size_, tokens.size());
  const size_t shingles = tokens.size() - width + 1;
  const uint64_t* a = a_.data();
  const uint64_t* b = b_.data();
  for (size_t s = 0; s < shingles; ++s) {
    const uint64_t x = XXH3_64bits(tokens.data() + s, width * sizeof(int32_t));
    for (int32_t k = 0; k < n; ++k) {
      const auto h = static_cast<uint32_t>((a[k] * x + b[k]) >> 32);
      out[k] = std::min(out[k], h);
    }
  }
}

float MinHasher::EstimateJaccard(const uint32_t* a, const uint32_t* b, int32_t n) {
  int32_t equal = 0;
  for (int32_t k = 0; k < n; ++k) equal += a[k] == b[k];
  return n > 0 ? static_cast<float>(equal) / static_cast<float>(n) : 0.0f;
}

}  // namespace memshare::kvmanager
