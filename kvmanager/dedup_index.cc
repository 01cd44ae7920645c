#include "kvmanager/dedup_index.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kvmanager/min_hasher.h"
#include "xxhash.h"

namespace memshare::kvmanager {

absl::Status DedupIndex::Validate(const Options& options) {
  if (options.num_bands < 1 || options.rows_per_band < 1 ||
      int64_t{options.num_bands} * options.rows_per_band > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("LSH needs num_bands >= 1, rows_per_band >= 1 and at most 1024 hashes; got ",
                     options.num_bands, " x ", options.rows_per_band));
  }
  return absl::OkStatus();
}

uint64_t DedupIndex::BandKey(int32_t band, const uint32_t* signature) const {
  return XXH3_64bits_withSeed(signature + size_t{1} * band * rows_, sizeof(uint32_t) * rows_,
                              static_cast<uint64_t>(band));
}

void DedupIndex::Query(const uint32_t* signature, float tau_lex, int32_t max_candidates,
                       std::vector<Candidate>* out) const {
  out->clear();
  if (max_candidates <= 0 || spans_.empty()) return;
  std::vector<uint8_t> seen(spans_.size(), 0);
  const int32_t n = signature_size();
  for (int32_t band = 0; band < num_bands_; ++band) {
    const auto it = heads_.find(BandKey(band, signature));
    if (it == heads_.end()) continue;
    for (int32_t node = it->second; node >= 0; node = next_[node]) {
      const int32_t step = node / num_bands_;
      if (seen[step]) continue;
      seen[step] = 1;
      const float similarity = MinHasher::EstimateJaccard(signature, this->signature(step), n);
      if (similarity >= tau_lex) out->push_back(Candidate{step, similarity});
    }
  }
  std::sort(out->begin(), out->end(), [](const Candidate& x, const Candidate& y) {
    if (x.similarity != y.similarity) return x.similarity > y.similarity;
    return x.step > y.step;
  });
  if (static_cast<int32_t>(out->size()) > max_candidates) out->resize(max_candidates);
}

int32_t DedupIndex::Insert(StepSpan span, const uint32_t* signature) {
  const auto step = static_cast<int32_t>(spans_.size());
  spans_.push_back(span);
  signatures_.insert(signatures_.end(), signature, signature + signature_size());
  for (int32_t band = 0; band < num_bands_; ++band) {
    const int32_t node = step * num_bands_ + band;
    auto [it, inserted] = heads_.try_emplace(BandKey(band, signature), node);
    next_.push_back(inserted ? -1 : it->second);
    it->second = node;
  }
  return step;
}

}  // namespace memshare::kvmanager
