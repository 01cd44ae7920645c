// bfloat16 on the host: storage type of the KV pool and of weights.
// Conversion from float rounds to nearest even; NaN stays NaN.
#ifndef MEMSHARE_COMMON_BF16_H_
#define MEMSHARE_COMMON_BF16_H_

#include <cstdint>
#include <cstring>

namespace memshare {

struct Bf16 {
  uint16_t bits = 0;
};

inline float Bf16ToFloat(Bf16 v) {
  const uint32_t u = uint32_t{v.bits} << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline Bf16 FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return Bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};  // quiet NaN
  }
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return Bf16{static_cast<uint16_t>((u + rounding) >> 16)};
}

}  // namespace memshare

#endif  // MEMSHARE_COMMON_BF16_H_
