// GPU tests of the elementwise kernels: embedding gather (vocab-parallel),
// SiLU-and-multiply, whole-block copies.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"
#include "kernels/activation.h"
#include "kernels/block_copy.h"
#include "kernels/embedding.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::kernels {
namespace {

using testing::DeviceBuffer;

TEST(EmbeddingGpuTest, GathersOwnRowsAndZerosOthers) {
  std::mt19937 rng(1);
  const int rows = 1000, hidden = 3584, vocab_begin = 2000;
  const auto table = testing::RandomBf16(size_t(rows) * hidden, rng);
  std::vector<int32_t> ids = {2000, 2999, 1999, 3000, -1, 2500, 2500, 0, 2001};
  std::uniform_int_distribution<int> any(0, 5000);
  for (int i = 0; i < 50; ++i) ids.push_back(any(rng));
  DeviceBuffer<Bf16> dt(table), out(ids.size() * hidden);
  DeviceBuffer<int32_t> did(ids);
  out.Poison();
  ASSERT_TRUE(LaunchEmbeddingGather(dt.get(), vocab_begin, rows, hidden, did.get(),
                                    int(ids.size()), out.get(), nullptr)
                  .ok());
  const auto got = out.Download();
  for (size_t t = 0; t < ids.size(); ++t) {
    const int row = ids[t] - vocab_begin;
    const bool mine = ids[t] >= 0 && row >= 0 && row < rows;
    for (int i = 0; i < hidden; ++i) {
      const uint16_t want = mine ? table[size_t(row) * hidden + i].bits : 0;
      ASSERT_EQ(got[t * hidden + i].bits, want) << "token " << t << " dim " << i;
    }
  }
}

TEST(EmbeddingGpuTest, SumsOfSquaresPerPart) {
  // With sumsq: each 128-column part's sum of squares of each gathered row
  // ([part][token], zeros for rows not held), as a residual-mode skinny GEMM
  // writes them. hidden 3584 (28 parts) and 200 (a last part of 72).
  std::mt19937 rng(4);
  for (int hidden : {3584, 200}) {
    const int rows = 100;
    const auto table = testing::RandomBf16(size_t(rows) * hidden, rng);
    const std::vector<int32_t> ids = {0, 99, -1, 50, 100, 7, 7};
    const int n = static_cast<int>(ids.size());
    const int parts = (hidden + 127) / 128;
    DeviceBuffer<Bf16> dt(table), out(size_t(n) * hidden);
    DeviceBuffer<int32_t> did(ids);
    DeviceBuffer<float> ss(size_t(parts) * n);
    ss.Poison();
    ASSERT_TRUE(
        LaunchEmbeddingGather(dt.get(), 0, rows, hidden, did.get(), n, out.get(), nullptr, ss.get())
            .ok());
    const auto got = ss.Download();
    for (int t = 0; t < n; ++t) {
      const bool mine = ids[t] >= 0 && ids[t] < rows;
      for (int p = 0; p < parts; ++p) {
        double want = 0;
        for (int i = 128 * p; mine && i < std::min(hidden, 128 * (p + 1)); ++i) {
          const double v = Bf16ToFloat(table[size_t(ids[t]) * hidden + i]);
          want += v * v;
        }
        EXPECT_NEAR(got[size_t(p) * n + t], want, 1e-5 * want)
            << "hidden " << hidden << " token " << t << " part " << p;
      }
    }
  }
}

TEST(SiluAndMulGpuTest, MatchesReference) {
  std::mt19937 rng(2);
  for (int inter : {8, 18944, 2048 + 8}) {
    for (int n : {1, 13, 64}) {
      const auto gu = testing::RandomBf16(size_t(n) * 2 * inter, rng, 3.f);
      DeviceBuffer<Bf16> dgu(gu), out(size_t(n) * inter);
      out.Poison();
      ASSERT_TRUE(LaunchSiluAndMul(dgu.get(), out.get(), n, inter, nullptr).ok());
      const auto got = testing::ToDouble(out.Download());
      std::vector<double> ref(got.size());
      for (int r = 0; r < n; ++r) {
        for (int i = 0; i < inter; ++i) {
          const double g = Bf16ToFloat(gu[size_t(r) * 2 * inter + i]);
          const double u = Bf16ToFloat(gu[size_t(r) * 2 * inter + inter + i]);
          ref[size_t(r) * inter + i] = g / (1 + std::exp(-g)) * u;
        }
      }
      const auto e = testing::Compare(got, ref);
      EXPECT_EQ(e.nan_count, 0);
      EXPECT_LT(e.rel_l2, 5e-3) << "inter " << inter << " n " << n;
    }
  }
}

TEST(CopyBlocksGpuTest, CopiesWholeBlocksOnly) {
  std::mt19937 rng(3);
  // 7B group block: 28 layers x 2 x 4 heads x 16 x 128 bf16 = 917504 bytes;
  // and a small odd one.
  for (int64_t block_bytes : {int64_t{917504}, int64_t{16 * 37}}) {
    const int blocks = 12;
    std::vector<uint8_t> pool(size_t(blocks) * block_bytes);
    for (auto& b : pool) b = uint8_t(rng());
    const std::vector<int32_t> pairs = {0, 5, 3, 7, -1, 8, 2, 11, 9, -1};
    DeviceBuffer<uint8_t> dpool(pool);
    DeviceBuffer<int32_t> dpairs(pairs);
    ASSERT_TRUE(LaunchCopyBlocks(dpool.get(), block_bytes, dpairs.get(), int(pairs.size() / 2),
                                 nullptr)
                    .ok());
    const auto got = dpool.Download();
    std::vector<uint8_t> want = pool;
    for (size_t p = 0; p < pairs.size(); p += 2) {
      if (pairs[p] < 0 || pairs[p + 1] < 0) continue;
      std::copy(pool.begin() + pairs[p] * block_bytes, pool.begin() + (pairs[p] + 1) * block_bytes,
                want.begin() + pairs[p + 1] * block_bytes);
    }
    EXPECT_TRUE(got == want) << "block_bytes " << block_bytes;
  }
}

}  // namespace
}  // namespace memshare::kernels
