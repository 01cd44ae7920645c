// GPU test of kernels/block_distance against a float64 CPU reference, with
// whole-block references and shifted windows over two blocks.
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
#include "tests/gpu/gpu_test_util.h"

namespace memshare::kernels {
namespace {

struct RefSums {
  double k_diff_sq = 0, k_norm_sq = 0, v_diff_sq = 0, v_norm_sq = 0;
};

// Element i of a (layer, K|V) slab of the reference window: the whole
// block `ref` when shift is 0, else slot + shift of `ref` or of `next`.
int64_t WindowElement(const KvBlockShape& s, int ref, int next, int shift, int64_t off,
                      int64_t i) {
  const int64_t row = i / s.head_dim;  // head * block_size + slot
  const int64_t slot = row % s.block_size + shift;
  const int64_t block = slot < s.block_size ? ref : next;
  return block * s.BlockElements() + off + (row - row % s.block_size) * s.head_dim +
         (slot % s.block_size) * s.head_dim + i % s.head_dim;
}

RefSums Reference(const std::vector<Bf16>& pool, const KvBlockShape& s, int cand, int ref,
                  int next = -1, int shift = 0) {
  RefSums r;
  if (cand < 0 || ref < 0 || (shift > 0 && next < 0)) return r;
  const int64_t slab = s.SlabElements();
  for (int l = 0; l < s.layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const int64_t off = (int64_t{l} * 2 + kv) * slab;
      for (int64_t i = 0; i < slab; ++i) {
        const double a = Bf16ToFloat(pool[cand * s.BlockElements() + off + i]);
        const double b = Bf16ToFloat(pool[WindowElement(s, ref, next, shift, off, i)]);
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

// Shifted windows (LaunchBlockDistanceWindows, pairs of 4 ints): block 3
// is an exact copy of the window at shift 5 over blocks 0 and 1, block 4 a
// near copy of the window at shift 11; shift 0 pairs must give the bits
// LaunchBlockDistance gives; padding and bad shifts as documented.
void RunWindowCase(const KvBlockShape& shape, int num_blocks, int num_pairs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t n = shape.BlockElements() * num_blocks;
  std::vector<Bf16> pool(n);
  for (auto& v : pool) v = FloatToBf16(normal(rng));
  const int64_t slab = shape.SlabElements();
  for (int l = 0; l < shape.layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const int64_t off = (int64_t{l} * 2 + kv) * slab;
      for (int64_t i = 0; i < slab; ++i) {
        pool[3 * shape.BlockElements() + off + i] = pool[WindowElement(shape, 0, 1, 5, off, i)];
        pool[4 * shape.BlockElements() + off + i] = FloatToBf16(
            Bf16ToFloat(pool[WindowElement(shape, 0, 1, 11, off, i)]) + 0.01f * normal(rng));
      }
    }
  }
  // (candidate, reference, reference_next, shift)
  std::vector<int32_t> pairs = {3, 0, 1, 5,    // exact window: zero difference
                                4, 0, 1, 11,   // near window
                                3, 0, 1, 6,    // off by one slot: far
                                2, 0, -1, 0,   // shift 0: reference_next unused
                                -1, 0, 1, 3,   // padding
                                2, 0, -1, 3,   // padding: no second block
                                2, 0, 1, 16};  // bad shift: NaN
  const int fixed = static_cast<int>(pairs.size()) / 4;
  std::uniform_int_distribution<int> pick(0, num_blocks - 1), shift(0, shape.block_size - 1);
  while (static_cast<int>(pairs.size()) < 4 * num_pairs) {
    for (int32_t v : {pick(rng), pick(rng), pick(rng), shift(rng)}) pairs.push_back(v);
  }
  // Plain pairs for the shift-0 comparison with LaunchBlockDistance.
  std::vector<int32_t> plain;
  for (int p = 0; p < num_pairs; ++p) {
    plain.push_back(pairs[4 * p]);
    plain.push_back(pairs[4 * p + 1]);
  }

  testing::DeviceBuffer<Bf16> d_pool(pool);
  testing::DeviceBuffer<int32_t> d_pairs(pairs), d_plain(plain);
  testing::DeviceBuffer<uint8_t> ws(BlockDistanceWorkspaceBytes(shape, num_pairs));
  testing::DeviceBuffer<BlockPairSums> out(num_pairs), out_plain(num_pairs);
  ws.Poison();
  out.Poison();
  out_plain.Poison();
  ASSERT_TRUE(LaunchBlockDistanceWindows(d_pool.get(), shape, num_blocks, d_pairs.get(), num_pairs,
                                         ws.get(), out.get(), nullptr)
                  .ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<BlockPairSums> got = out.Download();
  ASSERT_TRUE(LaunchBlockDistance(d_pool.get(), shape, num_blocks, d_plain.get(), num_pairs,
                                  ws.get(), out_plain.get(), nullptr)
                  .ok());
  const std::vector<BlockPairSums> got_plain = out_plain.Download();

  int shifted = 0;
  for (int p = 0; p < num_pairs; ++p) {
    const int32_t* q = &pairs[4 * p];
    if (q[3] >= shape.block_size) {
      EXPECT_TRUE(std::isnan(got[p].k_diff_sq) && std::isnan(got[p].v_norm_sq)) << "pair " << p;
      continue;
    }
    const RefSums r = Reference(pool, shape, q[0], q[1], q[2], q[3]);
    ExpectClose(got[p].k_diff_sq, r.k_diff_sq, "k_diff_sq", p);
    ExpectClose(got[p].k_norm_sq, r.k_norm_sq, "k_norm_sq", p);
    ExpectClose(got[p].v_diff_sq, r.v_diff_sq, "v_diff_sq", p);
    ExpectClose(got[p].v_norm_sq, r.v_norm_sq, "v_norm_sq", p);
    if (q[3] == 0) {
      EXPECT_EQ(std::memcmp(&got[p], &got_plain[p], sizeof(BlockPairSums)), 0)
          << "shift 0 pair " << p << " differs from LaunchBlockDistance";
    } else if (p >= fixed) {
      ++shifted;
    }
  }
  EXPECT_GT(shifted, 0);
  EXPECT_EQ(got[0].k_diff_sq, 0.f);
  EXPECT_EQ(got[0].v_diff_sq, 0.f);
  EXPECT_GT(got[0].k_norm_sq, 0.f);
  EXPECT_GT(got[1].k_diff_sq, 0.f);
  EXPECT_LT(got[1].k_diff_sq / got[1].k_norm_sq, 1e-3);
  EXPECT_GT(got[2].k_diff_sq / got[2].k_norm_sq, 0.5);
  for (int p : {4, 5}) {
    EXPECT_EQ(got[p].k_diff_sq + got[p].k_norm_sq + got[p].v_diff_sq + got[p].v_norm_sq, 0.f);
  }
  std::printf("  %d pairs, %d random shifted windows\n", num_pairs, shifted);
}

TEST(BlockDistanceGpuTest, ShiftedWindowsSmallShape) { RunWindowCase({2, 2, 16, 64}, 8, 40, 11); }

TEST(BlockDistanceGpuTest, ShiftedWindowsSevenBGroupShape) {
  RunWindowCase({28, 4, 16, 128}, 6, 30, 12);
}

TEST(BlockDistanceGpuTest, ShiftedWindowsRejectHeadDimNotAMultipleOf8) {
  const absl::Status s = LaunchBlockDistanceWindows(nullptr, {1, 2, 16, 12}, 1, nullptr, 1,
                                                    nullptr, nullptr, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
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
