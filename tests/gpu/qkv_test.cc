// GPU tests of kernels/qkv: QKV bias and q/k RMSNorm in place, and the
// write of K and V into paged slots.
#include "kernels/qkv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"
#include "kernels/kv_block_shape.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::kernels {
namespace {

using testing::DeviceBuffer;

void RunBiasNorm(int n, int qh, int kvh, int D, bool bias, bool norm, uint32_t seed) {
  std::mt19937 rng(seed);
  const int width = (qh + 2 * kvh) * D;
  const int64_t stride = width + 8;  // a few extra columns that must stay untouched
  const auto qkv = testing::RandomBf16(size_t(n) * stride, rng, 2.f);
  const auto b = testing::RandomBf16(width, rng, 1.f);
  const auto qn = testing::RandomBf16(D, rng, 1.f);
  const auto kn = testing::RandomBf16(D, rng, 1.f);
  DeviceBuffer<Bf16> d(qkv), db(b), dqn(qn), dkn(kn);
  const float eps = 1e-6f;
  ASSERT_TRUE(LaunchQkvBiasNorm(d.get(), stride, n, qh, kvh, D, bias ? db.get() : nullptr,
                                norm ? dqn.get() : nullptr, norm ? dkn.get() : nullptr, eps,
                                nullptr)
                  .ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto got = d.Download();
  std::vector<double> ref(got.size()), gotd(got.size());
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < qh + 2 * kvh; ++h) {
      std::vector<double> v(D);
      for (int i = 0; i < D; ++i) {
        float x = Bf16ToFloat(qkv[t * stride + h * D + i]);
        // The projection's output, bias included, is bf16.
        if (bias) x = Bf16ToFloat(FloatToBf16(x + Bf16ToFloat(b[h * D + i])));
        v[i] = x;
      }
      if (norm && h < qh + kvh) {
        double ss = 0;
        for (double x : v) ss += x * x;
        const double inv = 1.0 / std::sqrt(ss / D + eps);
        const auto& w = h < qh ? qn : kn;
        for (int i = 0; i < D; ++i) v[i] *= inv * Bf16ToFloat(w[i]);
      }
      for (int i = 0; i < D; ++i) ref[t * stride + h * D + i] = v[i];
    }
    for (int64_t i = width; i < stride; ++i) {
      ASSERT_EQ(got[t * stride + i].bits, qkv[t * stride + i].bits) << "padding column written";
      ref[t * stride + i] = Bf16ToFloat(qkv[t * stride + i]);
    }
  }
  for (size_t i = 0; i < got.size(); ++i) gotd[i] = Bf16ToFloat(got[i]);
  const auto e = testing::Compare(gotd, ref);
  EXPECT_EQ(e.nan_count, 0);
  EXPECT_LT(e.rel_l2, 5e-3);
}

TEST(QkvBiasNormGpuTest, Qwen2Bias) { RunBiasNorm(37, 28, 4, 128, true, false, 1); }
TEST(QkvBiasNormGpuTest, Qwen3Norm) { RunBiasNorm(64, 32, 8, 128, false, true, 2); }
TEST(QkvBiasNormGpuTest, BothHeadDim64) { RunBiasNorm(5, 16, 4, 64, true, true, 3); }

TEST(QkvBiasNormGpuTest, RejectsOneNormWithoutTheOther) {
  Bf16 w[2];
  EXPECT_FALSE(LaunchQkvBiasNorm(nullptr, 384, 1, 1, 1, 128, nullptr, w, nullptr, 1e-6f, nullptr).ok());
}

void RunWriteKv(int n, int kvh, int D, int layers, int layer, uint32_t seed) {
  std::mt19937 rng(seed);
  const KvBlockShape shape{layers, kvh, 16, D};
  const int num_blocks = 40;
  const int qh = 2 * kvh;
  const int64_t stride = int64_t{qh + 2 * kvh} * D;
  const auto qkv = testing::RandomBf16(size_t(n) * stride, rng);
  // Distinct slots in random blocks; every fifth token is padding.
  std::vector<int32_t> slots(num_blocks * 16);
  for (size_t i = 0; i < slots.size(); ++i) slots[i] = int32_t(i);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(n);
  for (int t = 0; t < n; t += 5) slots[t] = -1;
  DeviceBuffer<Bf16> dqkv(qkv), pool(size_t(num_blocks) * shape.BlockElements());
  DeviceBuffer<int32_t> dslots(slots);
  pool.Poison();
  ASSERT_TRUE(LaunchWriteKvCache(dqkv.get() + qh * D, dqkv.get() + (qh + kvh) * D, stride, n,
                                 dslots.get(), pool.get(), shape, layer, nullptr)
                  .ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto got = pool.Download();
  std::vector<uint16_t> want(got.size(), 0xffff);
  for (int t = 0; t < n; ++t) {
    if (slots[t] < 0) continue;
    const int64_t block = slots[t] / 16, off = slots[t] % 16;
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < kvh; ++h) {
        for (int d = 0; d < D; ++d) {
          want[block * shape.BlockElements() + (int64_t{layer} * 2 + kv) * shape.SlabElements() +
               (h * 16 + off) * D + d] = qkv[t * stride + (qh + kv * kvh + h) * D + d].bits;
        }
      }
    }
  }
  int64_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) mismatches += got[i].bits != want[i];
  EXPECT_EQ(mismatches, 0) << "bytes differ from a bit-exact copy into the slots";
}

TEST(WriteKvCacheGpuTest, SevenBShape) { RunWriteKv(300, 4, 128, 3, 2, 10); }
TEST(WriteKvCacheGpuTest, ManyHeadsDim64) { RunWriteKv(77, 32, 64, 1, 0, 11); }

}  // namespace
}  // namespace memshare::kernels
