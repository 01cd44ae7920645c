#include "kernels/rope.h"

#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace memshare::kernels {

absl::StatusOr<std::vector<float>> RopeInvFreq(const RopeConfig& config) {
  if (config.head_dim <= 0 || config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rope: head_dim must be even and positive, got ", config.head_dim));
  }
  if (!(config.theta > 1.)) {
    return absl::InvalidArgumentError(absl::StrCat("rope: rope_theta must be > 1, got ",
                                                   config.theta));
  }
  if (config.llama3_scaling &&
      !(config.factor > 0. && config.low_freq_factor > 0. &&
        config.high_freq_factor > config.low_freq_factor && config.original_max_position > 0.)) {
    return absl::InvalidArgumentError(
        "rope: llama3 rope_scaling needs factor > 0, low_freq_factor > 0, high_freq_factor > "
        "low_freq_factor and original_max_position_embeddings > 0");
  }
  const int half = config.head_dim / 2;
  std::vector<float> inv_freq(half);
  const double low_freq_wavelen = config.original_max_position / config.low_freq_factor;
  const double high_freq_wavelen = config.original_max_position / config.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(config.theta, 2.0 * i / config.head_dim);
    if (config.llama3_scaling) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_freq_wavelen) {
        f /= config.factor;  // low frequencies: fully interpolated
      } else if (wavelen >= high_freq_wavelen) {
        // Medium frequencies: a smooth blend of the two.
        const double smooth = (config.original_max_position / wavelen - config.low_freq_factor) /
                              (config.high_freq_factor - config.low_freq_factor);
        f = (1.0 - smooth) * f / config.factor + smooth * f;
      }  // high frequencies: unchanged
    }
    inv_freq[i] = static_cast<float>(f);
  }
  return inv_freq;
}

}  // namespace memshare::kernels
