#include "kernels/rope.h"

#include <cmath>

#include "gtest/gtest.h"

namespace memshare::kernels {
namespace {

TEST(RopeInvFreqTest, DefaultMatchesFormula) {
  auto f = RopeInvFreq({/*head_dim=*/128, /*theta=*/1000000.});
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->size(), 64u);
  EXPECT_FLOAT_EQ((*f)[0], 1.0f);
  EXPECT_FLOAT_EQ((*f)[1], static_cast<float>(std::pow(1e6, -2.0 / 128)));
  EXPECT_FLOAT_EQ((*f)[63], static_cast<float>(std::pow(1e6, -126.0 / 128)));
  for (size_t i = 1; i < f->size(); ++i) EXPECT_LT((*f)[i], (*f)[i - 1]);
}

TEST(RopeInvFreqTest, Llama3ScalingKeepsHighAndDividesLowFrequencies) {
  RopeConfig c;
  c.head_dim = 128;
  c.theta = 500000.;
  c.llama3_scaling = true;  // Llama 3.1: factor 8, 1, 4, 8192
  auto scaled = RopeInvFreq(c);
  c.llama3_scaling = false;
  auto plain = RopeInvFreq(c);
  ASSERT_TRUE(scaled.ok() && plain.ok());
  int high = 0, low = 0, medium = 0;
  for (int i = 0; i < 64; ++i) {
    const double p = (*plain)[i];
    const double s = (*scaled)[i];
    const double wavelen = 2 * M_PI / p;
    if (wavelen < 8192. / 4) {
      EXPECT_FLOAT_EQ(s, p) << i;
      ++high;
    } else if (wavelen > 8192.) {
      EXPECT_NEAR(s, p / 8, 1e-6 * p) << i;
      ++low;
    } else {
      const double smooth = (8192. / wavelen - 1.) / 3.;
      EXPECT_NEAR(s, (1 - smooth) * p / 8 + smooth * p, 1e-6 * p) << i;
      EXPECT_LT(s, p);
      EXPECT_GT(s, p / 8);
      ++medium;
    }
  }
  // Llama 3.1 8B: all three regimes occur.
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(medium, 0);
}

TEST(RopeInvFreqTest, RejectsBadConfigs) {
  EXPECT_FALSE(RopeInvFreq({/*head_dim=*/127, 10000.}).ok());
  EXPECT_FALSE(RopeInvFreq({/*head_dim=*/0, 10000.}).ok());
  EXPECT_FALSE(RopeInvFreq({/*head_dim=*/64, 0.5}).ok());
  RopeConfig c;
  c.llama3_scaling = true;
  c.high_freq_factor = 1.;
  EXPECT_FALSE(RopeInvFreq(c).ok());
}

}  // namespace
}  // namespace memshare::kernels
