// Rotary position embedding: the inverse frequencies, computed on the host
// once per model and passed to the attention kernels (which rotate Q and K
// while they read them). Neox-style rotate-half, as Hugging Face Llama, Qwen2
// and Qwen3 apply it: dimension i pairs with i + head_dim / 2 and rotates by
// the angle position * inv_freq[i].
#ifndef MEMSHARE_KERNELS_ROPE_H_
#define MEMSHARE_KERNELS_ROPE_H_

#include <vector>

#include "absl/status/statusor.h"

namespace memshare::kernels {

struct RopeConfig {
  int head_dim = 128;     // rotated dimensions (the whole head); even
  double theta = 10000.;  // config.json rope_theta
  // config.json rope_scaling with rope_type "llama3" (Llama 3.1+); the other
  // fields below are read only when this is set.
  bool llama3_scaling = false;
  double factor = 8.;                        // rope_scaling.factor
  double low_freq_factor = 1.;               // rope_scaling.low_freq_factor
  double high_freq_factor = 4.;              // rope_scaling.high_freq_factor
  double original_max_position = 8192.;      // original_max_position_embeddings
};

// inv_freq[i] = theta^(-2i / head_dim), i < head_dim / 2, then the llama3
// wavelength-dependent scaling (Hugging Face `_compute_llama3_parameters`).
// INVALID_ARGUMENT for an odd or non-positive head_dim, theta <= 1, or
// llama3 factors that are not positive with high_freq_factor > low_freq_factor.
absl::StatusOr<std::vector<float>> RopeInvFreq(const RopeConfig& config);

}  // namespace memshare::kernels

#endif  // MEMSHARE_KERNELS_ROPE_H_
