#include "engine/cpu/kernels.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::engine::cpu {
namespace {

std::vector<float> Random(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

TEST(KernelsTest, MatMulMatchesDoublePrecision) {
  std::mt19937 rng(1);
  ThreadPool pool(2);
  for (int64_t rows : {1, 3, 8}) {
    for (int64_t k : {1, 7, 8, 37, 256}) {
      for (int64_t n : {1, 4, 5, 11, 600}) {
        const std::vector<float> x = Random(rows * k, rng);
        const std::vector<float> w = Random(n * k, rng);
        std::vector<float> y(rows * n, NAN);
        MatMulTransposed(x.data(), rows, k, w.data(), n, y.data(), &pool);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < n; ++j) {
            double want = 0, mag = 0;
            for (int64_t i = 0; i < k; ++i) {
              want += double{x[r * k + i]} * w[j * k + i];
              mag += std::fabs(double{x[r * k + i]} * w[j * k + i]);
            }
            // float32 summation: error under k * 2^-24 of the absolute sum.
            ASSERT_NEAR(y[r * n + j], want, 1e-6 * k * mag + 1e-30)
                << rows << "x" << k << "x" << n << " at " << r << "," << j;
          }
        }
      }
    }
  }
}

TEST(KernelsTest, MatMulIsBatchAndThreadInvariant) {
  std::mt19937 rng(2);
  ThreadPool pool(2);
  const int64_t rows = 9, k = 83, n = 1031;  // parallel path, ragged tails
  const std::vector<float> x = Random(rows * k, rng);
  const std::vector<float> w = Random(n * k, rng);
  std::vector<float> all(rows * n), serial(rows * n), one(n);
  MatMulTransposed(x.data(), rows, k, w.data(), n, all.data(), &pool);
  MatMulTransposed(x.data(), rows, k, w.data(), n, serial.data(), nullptr);
  EXPECT_EQ(all, serial);
  for (int64_t r = 0; r < rows; ++r) {
    MatMulTransposed(x.data() + r * k, 1, k, w.data(), n, one.data(), &pool);
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(one[j], all[r * n + j]);
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(Dot(w.data() + j * k, x.data() + r * k, k), one[j]);
  }
}

TEST(KernelsTest, RmsNorm) {
  const std::vector<float> x = {1, -2, 3, 4, 0, 0, 0, 2};
  const std::vector<float> w = {1, 1, 1, 1, 1, 1, 1, 0.5f};
  std::vector<float> out(8);
  RmsNorm(x.data(), w.data(), 8, 1e-6f, out.data());
  const double rms = std::sqrt((1 + 4 + 9 + 16 + 4) / 8.0 + 1e-6);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(out[i], w[i] * x[i] / rms, 1e-6);
}

TEST(KernelsTest, RopeRotatesPairsOfHalves) {
  std::vector<float> x = {1, 2, 3, 4};  // pairs (1, 3) and (2, 4)
  const float cos[2] = {0.0f, 1.0f};
  const float sin[2] = {1.0f, 0.0f};
  ApplyRope(x.data(), 4, cos, sin);
  // Pair 0 by 90 degrees: (1, 3) -> (-3, 1); pair 1 unchanged.
  EXPECT_EQ(x, (std::vector<float>{-3, 2, 1, 4}));
}

TEST(KernelsTest, SiluMul) {
  const float g[3] = {0.0f, 1.0f, -2.0f};
  const float u[3] = {5.0f, 2.0f, 1.0f};
  float out[3];
  SiluMul(g, u, 3, out);
  EXPECT_FLOAT_EQ(out[0], 0.0f);
  EXPECT_FLOAT_EQ(out[1], 2.0f / (1.0f + std::exp(-1.0f)));
  EXPECT_FLOAT_EQ(out[2], -2.0f / (1.0f + std::exp(2.0f)));
}

}  // namespace
}  // namespace memshare::engine::cpu
