// GPU tests of engine/cuda/gemm (cuBLASLt) against a float64 CPU reference:
// decode and prefill shapes, bias epilogue, fp32 output, strided operands,
// heuristic and tuned algorithms.
#include "engine/cuda/gemm.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::engine::cuda {
namespace {

using testing::DeviceBuffer;

struct Case {
  int m, n, k;
  int64_t ldx, ldw, ldy;
  GemmOut out;
  bool bias;
  bool tune;
};

void RunCase(CublasLtGemm& gemm, const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto x = testing::RandomBf16(size_t(c.m) * c.ldx, rng);
  const auto w = testing::RandomBf16(size_t(c.n) * c.ldw, rng, 0.05f);
  const auto b = testing::RandomBf16(c.n, rng);
  DeviceBuffer<Bf16> dx(x), dw(w), db(b);
  const size_t elem = c.out == GemmOut::kBf16 ? 2 : 4;
  DeviceBuffer<uint8_t> dy(size_t(c.m) * c.ldy * elem);
  GemmArgs a;
  a.m = c.m, a.n = c.n, a.k = c.k;
  a.x = dx.get(), a.ldx = c.ldx;
  a.w = dw.get(), a.ldw = c.ldw;
  a.y = dy.get(), a.ldy = c.ldy;
  a.out = c.out;
  a.bias = c.bias ? db.get() : nullptr;
  if (c.tune) {
    ASSERT_TRUE(gemm.Tune(a, nullptr, 3).ok());
  }
  dy.Poison();
  const absl::Status s = gemm.Matmul(a, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto raw = dy.Download();
  std::vector<double> got, ref;
  for (int i = 0; i < c.m; ++i) {
    for (int j = 0; j < c.n; ++j) {
      double acc = c.bias ? Bf16ToFloat(b[j]) : 0.0;
      for (int l = 0; l < c.k; ++l) {
        acc += double(Bf16ToFloat(x[size_t(i) * c.ldx + l])) * Bf16ToFloat(w[size_t(j) * c.ldw + l]);
      }
      ref.push_back(acc);
      const size_t at = (size_t(i) * c.ldy + j) * elem;
      if (c.out == GemmOut::kBf16) {
        Bf16 v;
        std::memcpy(&v.bits, &raw[at], 2);
        got.push_back(Bf16ToFloat(v));
      } else {
        float v;
        std::memcpy(&v, &raw[at], 4);
        got.push_back(v);
      }
    }
  }
  const auto e = testing::Compare(got, ref);
  EXPECT_EQ(e.nan_count, 0);
  // bf16 output: one rounding (2^-9 relative); fp32 output: accumulation only.
  EXPECT_LT(e.rel_l2, c.out == GemmOut::kBf16 ? 5e-3 : 1e-4)
      << "m " << c.m << " n " << c.n << " k " << c.k;
}

TEST(CublasLtGemmTest, Shapes) {
  auto gemm = CublasLtGemm::Create({});
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  const std::vector<Case> cases = {
      {1, 4608, 3584, 3584, 3584, 4608, GemmOut::kBf16, false, false},   // decode QKV
      {7, 512, 1024, 1024, 1024, 512, GemmOut::kBf16, true, false},      // bias epilogue
      {64, 1000, 256, 256, 256, 1000, GemmOut::kFp32, false, false},     // logits in fp32
      {256, 384, 512, 520, 512, 400, GemmOut::kBf16, false, true},       // strided, tuned
      {33, 256, 2048, 2048, 2056, 256, GemmOut::kBf16, true, true},
      {128, 3584, 512, 512, 512, 3584, GemmOut::kBf16, false, false},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) RunCase(**gemm, c, seed++);
  EXPECT_EQ((*gemm)->num_plans(), cases.size());
  // Same shape again: the cached plan is reused.
  RunCase(**gemm, cases[0], 99);
  EXPECT_EQ((*gemm)->num_plans(), cases.size());
}

TEST(CublasLtGemmTest, RejectsBadArgs) {
  auto gemm = CublasLtGemm::Create({});
  ASSERT_TRUE(gemm.ok());
  GemmArgs a;
  a.m = 1, a.n = 8, a.k = 8;
  EXPECT_EQ((*gemm)->Matmul(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  int dummy;
  a.x = a.w = a.y = &dummy;
  a.ldx = 4, a.ldw = 8, a.ldy = 8;  // ldx < k
  EXPECT_EQ((*gemm)->Matmul(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.ldx = 8;
  a.out = GemmOut::kFp32;
  a.bias = &dummy;
  EXPECT_EQ((*gemm)->Matmul(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::engine::cuda
