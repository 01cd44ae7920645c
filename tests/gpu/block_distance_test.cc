// GPU test of kernels/block_distance against a float64 CPU reference.
#include "kernels/block_distance.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"
#include "kernels/kv_block_shape.h"

namespace memshare::kernels {
namespace {

#define ASSERT_CUDA(expr)                                              \
  do {                                                                 \
    const cudaError_t err__ = (expr);                                  \
    ASSERT_EQ(err__, cudaSuccess) << #expr << ": " << cudaGetErrorString(err__); \
  } while (0)

struct RefSums {
  double k_diff_sq = 0, k_norm_sq = 0, v_diff_sq = 0, v_norm_sq = 0;
};

RefSums Reference(const std::vector<Bf16>& pool, const KvBlockShape& s, int cand, int ref) {
  RefSums r;
  if (cand < 0 || ref < 0) return r;
  const int64_t slab = s.SlabElements();
  for (int l = 0; l < s.layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const int64_t off = (int64_t{l} * 2 + kv) * slab;
      for (int64_t i = 0; i < slab; ++i) {
        const double a = Bf16ToFloat(pool[cand * s.BlockElements() + off + i]);
        const double b = Bf16ToFloat(pool[ref * s.BlockElements() + off + i]);
        (kv == 0 ? r.k_diff_sq : r.v_diff_sq) += (a - b) * (a - b);
        (kv == 0 ? r.k_norm_sq : r.v_norm_sq) += b * b;
      }
    }
  }
  return r;
}

void ExpectClose(double got, double want, const char* what, int pair) {
  ASSERT_FALSE(std::isnan(got)) << what << " pair " << pair;
  // float32 accumulation of up to ~1e6 terms of similar size: relative error
  // well under 1e-4; identical blocks must give exactly zero difference.
  if (want == 0) {
    EXPECT_EQ(got, 0.0) << what << " pair " << pair;
  } else {
    EXPECT_NEAR(got, want, 1e-4 * want) << what << " pair " << pair;
  }
}

void RunCase(const KvBlockShape& shape, int num_blocks, int num_pairs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t n = shape.BlockElements() * num_blocks;
  std::vector<Bf16> pool(n);
  for (auto& v : pool) v = FloatToBf16(normal(rng));
  // Block 1 is a near copy of block 0 (the case MemShare looks for), block 2
  // an exact copy of block 0 (a shared physical block reads the same bytes).
  for (int64_t i = 0; i < shape.BlockElements(); ++i) {
    pool[shape.BlockElements() + i] =
        FloatToBf16(Bf16ToFloat(pool[i]) + 0.01f * normal(rng));
    pool[2 * shape.BlockElements() + i] = pool[i];
  }
  std::vector<int32_t> pairs = {1, 0, 2, 0, 0, 0, -1, 3};
  std::uniform_int_distribution<int> pick(0, num_blocks - 1);
  while (static_cast<int>(pairs.size()) < 2 * num_pairs) pairs.push_back(pick(rng));
  pairs.resize(2 * num_pairs);

  void* d_pool = nullptr;
  int32_t* d_pairs = nullptr;
  void* d_ws = nullptr;
  BlockPairSums* d_out = nullptr;
  const size_t ws = BlockDistanceWorkspaceBytes(shape, num_pairs);
  ASSERT_CUDA(cudaMalloc(&d_pool, n * sizeof(Bf16)));
  ASSERT_CUDA(cudaMalloc(&d_pairs, pairs.size() * sizeof(int32_t)));
  ASSERT_CUDA(cudaMalloc(&d_ws, ws));
  ASSERT_CUDA(cudaMalloc(&d_out, num_pairs * sizeof(BlockPairSums)));
  ASSERT_CUDA(cudaMemcpy(d_pool, pool.data(), n * sizeof(Bf16), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(d_pairs, pairs.data(), pairs.size() * sizeof(int32_t),
                         cudaMemcpyHostToDevice));
  // Poison: NaN in every output and workspace byte, so an unwritten result fails.
  ASSERT_CUDA(cudaMemset(d_out, 0xff, num_pairs * sizeof(BlockPairSums)));
  ASSERT_CUDA(cudaMemset(d_ws, 0xff, ws));

  ASSERT_TRUE(LaunchBlockDistance(d_pool, shape, num_blocks, d_pairs, num_pairs, d_ws, d_out,
                                  /*stream=*/nullptr)
                  .ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<BlockPairSums> out(num_pairs);
  ASSERT_CUDA(cudaMemcpy(out.data(), d_out, num_pairs * sizeof(BlockPairSums),
                         cudaMemcpyDeviceToHost));

  // Deterministic: a second run gives the same bits.
  ASSERT_TRUE(LaunchBlockDistance(d_pool, shape, num_blocks, d_pairs, num_pairs, d_ws, d_out,
                                  nullptr)
                  .ok());
  std::vector<BlockPairSums> again(num_pairs);
  ASSERT_CUDA(cudaMemcpy(again.data(), d_out, num_pairs * sizeof(BlockPairSums),
                         cudaMemcpyDeviceToHost));
  EXPECT_EQ(std::memcmp(out.data(), again.data(), num_pairs * sizeof(BlockPairSums)), 0);

  for (int p = 0; p < num_pairs; ++p) {
    const RefSums r = Reference(pool, shape, pairs[2 * p], pairs[2 * p + 1]);
    ExpectClose(out[p].k_diff_sq, r.k_diff_sq, "k_diff_sq", p);
    ExpectClose(out[p].k_norm_sq, r.k_norm_sq, "k_norm_sq", p);
    ExpectClose(out[p].v_diff_sq, r.v_diff_sq, "v_diff_sq", p);
    ExpectClose(out[p].v_norm_sq, r.v_norm_sq, "v_norm_sq", p);
  }
  // The near copy is near, the exact copy is at distance zero.
  EXPECT_LT(out[0].k_diff_sq / out[0].k_norm_sq, 1e-3);
  EXPECT_GT(out[0].k_diff_sq, 0.f);
  EXPECT_EQ(out[1].k_diff_sq, 0.f);
  EXPECT_EQ(out[1].v_diff_sq, 0.f);

  cudaFree(d_pool);
  cudaFree(d_pairs);
  cudaFree(d_ws);
  cudaFree(d_out);
}

TEST(BlockDistanceGpuTest, SmallShape) {
  RunCase({/*layers=*/2, /*kv_heads=*/2, /*block_size=*/16, /*head_dim=*/64}, 8, 6, 1);
}

TEST(BlockDistanceGpuTest, SevenBGroupShape) {
  // R1-Distill-Qwen-7B with one layer group: 28 layers, 4 KV heads, dim 128.
  RunCase({28, 4, 16, 128}, 6, 9, 2);
}

TEST(BlockDistanceGpuTest, ManyPairs) { RunCase({4, 8, 16, 128}, 64, 700, 3); }

TEST(BlockDistanceGpuTest, RejectsUnsupportedShape) {
  const absl::Status s =
      LaunchBlockDistance(nullptr, {1, 1, 3, 5}, 1, nullptr, 1, nullptr, nullptr, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::kernels
