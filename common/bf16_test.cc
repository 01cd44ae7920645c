#include "common/bf16.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace memshare {
namespace {

TEST(Bf16Test, ExactValuesRoundTrip) {
  for (float f : {0.0f, 1.0f, -2.0f, 0.5f, 65536.0f, -0.125f}) {
    EXPECT_EQ(Bf16ToFloat(FloatToBf16(f)), f);
  }
}

TEST(Bf16Test, RoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even (1).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 0x1p-8f)), 1.0f);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: ties go up.
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 0x1p-8f + 0x1p-12f)), 1.0f + 0x1p-7f);
}

TEST(Bf16Test, RelativeErrorBounded) {
  for (float f = -1000.0f; f < 1000.0f; f += 0.37f) {
    const float r = Bf16ToFloat(FloatToBf16(f));
    EXPECT_LE(std::fabs(r - f), std::fabs(f) * 0x1p-8f) << f;
  }
}

TEST(Bf16Test, SpecialValues) {
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::infinity())),
            std::numeric_limits<float>::infinity());
  // The largest finite floats round up to infinity, as in hardware.
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::max()))));
}

}  // namespace
}  // namespace memshare
