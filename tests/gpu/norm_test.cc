// GPU tests of kernels/norm against a float64 CPU reference.
#include "kernels/norm.h"

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::kernels {
namespace {

using testing::DeviceBuffer;

// unit_weight: no weight given (ones: the weight folded into the next
// product, LaunchFoldNormWeight).
void RunCase(int n, int hidden, bool add, bool in_place, uint32_t seed, bool unit_weight = false) {
  std::mt19937 rng(seed);
  const float eps = 1e-6f;
  const auto x = testing::RandomBf16(size_t(n) * hidden, rng, 3.f);
  const auto res = testing::RandomBf16(size_t(n) * hidden, rng, 2.f);
  const auto w = testing::RandomBf16(hidden, rng, 1.f);
  DeviceBuffer<Bf16> dx(x), dres(res), dw(w), dout(size_t(n) * hidden);
  dout.Poison();
  void* out = in_place ? static_cast<void*>(dx.get()) : static_cast<void*>(dout.get());
  const void* weight = unit_weight ? nullptr : dw.get();
  const absl::Status s =
      add ? LaunchAddRmsNorm(dx.get(), dres.get(), weight, out, n, hidden, eps, nullptr)
          : LaunchRmsNorm(dx.get(), weight, out, n, hidden, eps, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto got = testing::ToDouble(in_place ? dx.Download() : dout.Download());
  const auto got_res = dres.Download();

  std::vector<double> ref(size_t(n) * hidden);
  for (int r = 0; r < n; ++r) {
    std::vector<double> row(hidden);
    for (int i = 0; i < hidden; ++i) {
      const size_t j = size_t(r) * hidden + i;
      if (add) {
        // The new residual is stored in bf16, as HF's residual stream is.
        const Bf16 sum = FloatToBf16(Bf16ToFloat(x[j]) + Bf16ToFloat(res[j]));
        ASSERT_EQ(got_res[j].bits, sum.bits) << "residual " << r << "," << i;
        row[i] = Bf16ToFloat(sum);
      } else {
        row[i] = Bf16ToFloat(x[j]);
      }
    }
    double ss = 0;
    for (double v : row) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / hidden + eps);
    for (int i = 0; i < hidden; ++i) {
      ref[size_t(r) * hidden + i] = row[i] * inv * (unit_weight ? 1.0 : Bf16ToFloat(w[i]));
    }
  }
  const auto e = testing::Compare(got, ref);
  EXPECT_EQ(e.nan_count, 0);
  EXPECT_LT(e.rel_l2, 5e-3) << "n " << n << " hidden " << hidden;
}

TEST(RmsNormGpuTest, Sizes) {
  uint32_t seed = 1;
  for (int hidden : {64, 3584, 4096, 5120, 8192, 16384}) {
    for (int n : {1, 7, 64}) RunCase(n, hidden, /*add=*/false, /*in_place=*/false, seed++);
  }
}

TEST(RmsNormGpuTest, InPlace) { RunCase(5, 3584, false, true, 40); }

TEST(AddRmsNormGpuTest, Sizes) {
  uint32_t seed = 100;
  for (int hidden : {64, 3584, 8192, 16384}) {
    for (int n : {1, 33}) RunCase(n, hidden, /*add=*/true, /*in_place=*/false, seed++);
  }
  RunCase(9, 5120, true, /*in_place=*/true, seed++);
}

TEST(RmsNormGpuTest, UnitWeight) {
  RunCase(7, 3584, /*add=*/false, false, 60, /*unit_weight=*/true);
  RunCase(33, 512, /*add=*/true, false, 61, /*unit_weight=*/true);
}

TEST(FoldNormWeightGpuTest, ScalesEveryColumnOnce) {
  // W [rows][ld] (cols used) times gamma per column, rounded once to bf16;
  // the padding columns untouched.
  std::mt19937 rng(70);
  for (const auto& [rows, cols, ld] : {std::tuple{3, 64, 64}, {37, 3584, 3592}, {1000, 512, 512}}) {
    const auto w = testing::RandomBf16(size_t(rows) * ld, rng, 0.05f);
    const auto g = testing::RandomBf16(cols, rng, 1.f);
    DeviceBuffer<Bf16> dw(w), dg(g);
    const absl::Status s = LaunchFoldNormWeight(dw.get(), rows, cols, ld, dg.get(), nullptr);
    ASSERT_TRUE(s.ok()) << s;
    const auto got = dw.Download();
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < ld; ++c) {
        const size_t at = size_t(r) * ld + c;
        const Bf16 want = c < cols ? FloatToBf16(Bf16ToFloat(w[at]) * Bf16ToFloat(g[c])) : w[at];
        ASSERT_EQ(got[at].bits, want.bits) << rows << "x" << cols << " at " << r << "," << c;
      }
    }
  }
  DeviceBuffer<Bf16> buf(64);
  EXPECT_EQ(LaunchFoldNormWeight(buf.get(), 1, 60, 64, buf.get(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // columns not a multiple of 8
  EXPECT_EQ(LaunchFoldNormWeight(buf.get(), 1, 64, 56, buf.get(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // ld < columns
  EXPECT_EQ(LaunchFoldNormWeight(buf.get(), 1, 64, 64, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RmsNormGpuTest, RejectsBadShapes) {
  EXPECT_FALSE(LaunchRmsNorm(nullptr, nullptr, nullptr, 1, 100, 1e-6f, nullptr).ok());
  EXPECT_FALSE(LaunchRmsNorm(nullptr, nullptr, nullptr, 1, 16392, 1e-6f, nullptr).ok());
}

}  // namespace
}  // namespace memshare::kernels
