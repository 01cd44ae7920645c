// GPU tests of engine/cuda/gemm (cuBLASLt) and kernels/skinny_gemm against
// a float64 CPU reference: decode and prefill shapes, bias epilogue, fp32
// output, strided operands, heuristic and tuned algorithms, every k split and
// stream-K grids of the skinny kernel, with and without programmatic
// dependent launch; the SwiGLU epilogue; the norm epilogues (residual and
// scale modes).
#include "engine/cuda/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"
#include "gtest/gtest.h"
#include "kernels/greedy_candidate.h"
#include "kernels/skinny_gemm.h"
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

// Y of `c` by the float64 reference, compared with what each of `runs`
// leaves in Y. A run gets the device buffers' arguments; Y is poisoned (NaN)
// before each. The reference is computed once for all runs.
using GemmRun = std::function<void(const GemmArgs&)>;
void CheckCase(const Case& c, uint32_t seed,
               const std::vector<std::pair<std::string, GemmRun>>& runs) {
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
  std::vector<double> ref;
  for (int i = 0; i < c.m; ++i) {
    for (int j = 0; j < c.n; ++j) {
      double acc = c.bias ? Bf16ToFloat(b[j]) : 0.0;
      for (int l = 0; l < c.k; ++l) {
        acc +=
            double(Bf16ToFloat(x[size_t(i) * c.ldx + l])) * Bf16ToFloat(w[size_t(j) * c.ldw + l]);
      }
      ref.push_back(acc);
    }
  }
  for (const auto& [name, run] : runs) {
    SCOPED_TRACE(name);
    dy.Poison();
    run(a);
    ASSERT_CUDA(cudaDeviceSynchronize());
    const auto raw = dy.Download();
    std::vector<double> got;
    for (int i = 0; i < c.m; ++i) {
      for (int j = 0; j < c.n; ++j) {
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
}

void RunCase(CublasLtGemm& gemm, const Case& c, uint32_t seed) {
  CheckCase(c, seed, {{"cublaslt", [&](const GemmArgs& a) {
                         if (c.tune) {
                           ASSERT_TRUE(gemm.Tune(a, nullptr, 3).ok());
                         }
                         const absl::Status s = gemm.Matmul(a, nullptr);
                         ASSERT_TRUE(s.ok()) << s;
                       }}});
}

TEST(CublasLtGemmTest, Shapes) {
  auto gemm = CublasLtGemm::Create({});
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  const std::vector<Case> cases = {
      {1, 4608, 3584, 3584, 3584, 4608, GemmOut::kBf16, false, false},  // decode QKV
      {7, 512, 1024, 1024, 1024, 512, GemmOut::kBf16, true, false},     // bias epilogue
      {64, 1000, 256, 256, 256, 1000, GemmOut::kFp32, false, false},    // logits in fp32
      {256, 384, 512, 520, 512, 400, GemmOut::kBf16, false, true},      // strided, tuned
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

int NumSms() {
  int dev = 0, sms = 0;
  EXPECT_EQ(cudaGetDevice(&dev), cudaSuccess);
  EXPECT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), cudaSuccess);
  return sms;
}

// The column split's CTA counts to run `args` at (empty where it does not
// take them): what SkinnyGemmWideCtas picks for the GPU's `sms` and for 7
// and 3 multiprocessors, and each of those counts itself where the split
// takes it (the GPU's: windows that overlap their neighbours by most of
// their width).
std::set<int> WideCtaCounts(const kernels::SkinnyGemmArgs& args, int sms) {
  std::set<int> counts;
  for (int gpu : {sms, 7, 3}) {
    const int ctas = kernels::SkinnyGemmWideCtas(args, gpu);
    if (ctas > 0) counts.insert({ctas, gpu});
  }
  return counts;
}

// A zeroed stream-K workspace for `ctas` CTAs.
std::unique_ptr<DeviceBuffer<uint8_t>> StreamKWorkspace(int ctas) {
  auto ws = std::make_unique<DeviceBuffer<uint8_t>>(kernels::SkinnyGemmWorkspaceBytes(ctas));
  ws->Poison(0);
  return ws;
}

TEST(SkinnyGemmTest, EverySplitAgainstReference) {
  // Ragged token counts (every token-tile width), n not a multiple of the
  // CTA's 128 rows, k from 24 to 18,944 (boxes of 64, the last one ragged),
  // strided operands, bias, fp32 output; each with several k splits.
  const std::vector<Case> cases = {
      {1, 4608, 3584, 3584, 3584, 4608, GemmOut::kBf16, true, false},  // decode QKV, bias
      {64, 3584, 3584, 3584, 3584, 3584, GemmOut::kBf16, false, false},
      {3, 136, 96, 104, 96, 144, GemmOut::kBf16, false, false},
      {17, 264, 256, 256, 264, 264, GemmOut::kFp32, false, false},
      {48, 512, 768, 768, 768, 512, GemmOut::kBf16, true, false},
      {33, 1000, 1024, 1032, 1024, 1000, GemmOut::kFp32, false, false},
      {64, 8, 24, 24, 24, 8, GemmOut::kBf16, false, false},
      {5, 72, 200, 200, 208, 72, GemmOut::kFp32, false, false},
      {9, 3584, 18944, 18944, 18944, 3584, GemmOut::kBf16, false, false},  // decode down
      {40, 1040, 200, 208, 216, 1048, GemmOut::kBf16, false, false},
  };
  // Stream-K grids: one CTA (every tile whole), a few (tiles cut between
  // up to all of them), every multiprocessor.
  const int sms = NumSms();
  std::vector<std::pair<int, std::unique_ptr<DeviceBuffer<uint8_t>>>> workspaces;
  int wide_cases = 0;
  uint32_t seed = 200;
  for (const Case& c : cases) {
    std::vector<std::pair<std::string, GemmRun>> runs;
    for (int ctas : {1, 3, 7, sms}) {
      workspaces.emplace_back(ctas, StreamKWorkspace(ctas));
      void* ws = workspaces.back().second->get();
      for (bool pdl : {false, true}) {
        runs.emplace_back(
            absl::StrCat("m ", c.m, " n ", c.n, " k ", c.k, " stream-k ", ctas, " pdl ", pdl),
            [ctas, ws, pdl](const GemmArgs& a) {
              kernels::SkinnyGemmArgs s = ToSkinnyGemmArgs(a);
              s.wgmma = true;
              s.stream_k_ctas = ctas;
              s.workspace = ws;
              const absl::Status st = kernels::LaunchSkinnyGemm(s, 0, pdl, nullptr);
              ASSERT_TRUE(st.ok()) << st;
            });
      }
    }
    // The column split where it takes the case (WideCtaCounts).
    {
      GemmArgs probe;
      probe.m = c.m, probe.n = c.n, probe.k = c.k, probe.out = c.out;
      probe.x = probe.w = probe.y = reinterpret_cast<void*>(uintptr_t{256});
      probe.ldx = c.ldx, probe.ldw = c.ldw, probe.ldy = c.ldy;
      probe.bias = c.bias ? probe.x : nullptr;
      const std::set<int> counts = WideCtaCounts(ToSkinnyGemmArgs(probe), sms);
      EXPECT_EQ(!counts.empty(), c.out == GemmOut::kBf16 && !c.bias && c.n >= 144)
          << "m " << c.m << " n " << c.n << " k " << c.k;
      wide_cases += !counts.empty();
      for (int ctas : counts) {
        for (bool pdl : {false, true}) {
          runs.emplace_back(
              absl::StrCat("m ", c.m, " n ", c.n, " k ", c.k, " wide ", ctas, " pdl ", pdl),
              [ctas, pdl](const GemmArgs& a) {
                kernels::SkinnyGemmArgs s = ToSkinnyGemmArgs(a);
                s.wgmma = true;
                s.wide_ctas = ctas;
                const absl::Status st = kernels::LaunchSkinnyGemm(s, 0, pdl, nullptr);
                ASSERT_TRUE(st.ok()) << st;
              });
        }
      }
    }
    for (int splits : {0, 1, 3, 8}) {
      if (splits > (c.k + 63) / 64) continue;
      for (bool pdl : {false, true}) {
        for (bool wgmma : {false, true}) {
          runs.emplace_back(absl::StrCat("m ", c.m, " n ", c.n, " k ", c.k, " splits ", splits,
                                         " pdl ", pdl, " wgmma ", wgmma),
                            [splits, pdl, wgmma](const GemmArgs& a) {
                              kernels::SkinnyGemmArgs s = ToSkinnyGemmArgs(a);
                              s.wgmma = wgmma;
                              ASSERT_TRUE(kernels::SkinnyGemmSupports(s));
                              const absl::Status st =
                                  kernels::LaunchSkinnyGemm(s, splits, pdl, nullptr);
                              ASSERT_TRUE(st.ok()) << st;
                            });
        }
      }
    }
    CheckCase(c, seed++, runs);
  }
  EXPECT_EQ(wide_cases, 3);
  // Every launch leaves the flags down for the next.
  for (const auto& [ctas, ws] : workspaces) {
    const auto bytes = ws->Download();  // the flags: one int per CTA, first
    size_t raised = 0;
    for (size_t i = 0; i < 4 * size_t(ctas); ++i) raised += bytes[i] != 0;
    EXPECT_EQ(raised, 0u) << ctas << " CTAs";
  }
}

TEST(SkinnyGemmTest, DeterministicAndChosenByTune) {
  // The cluster sums its partial tiles in rank order: the same inputs give
  // the same bits. Tune() may pick either path; Matmul then runs it.
  auto gemm = CublasLtGemm::Create({});
  ASSERT_TRUE(gemm.ok());
  const int m = 64, n = 4608, k = 3584;
  std::mt19937 rng(7);
  DeviceBuffer<Bf16> x(testing::RandomBf16(size_t(m) * k, rng));
  std::vector<std::unique_ptr<DeviceBuffer<Bf16>>> ws;
  std::vector<const void*> rotate;
  for (int i = 0; i < 4; ++i) {
    ws.push_back(
        std::make_unique<DeviceBuffer<Bf16>>(testing::RandomBf16(size_t(n) * k, rng, 0.05f)));
    rotate.push_back(ws.back()->get());
  }
  DeviceBuffer<Bf16> y1(size_t(m) * n), y2(size_t(m) * n), y3(size_t(m) * n);
  GemmArgs a;
  a.m = m, a.n = n, a.k = k;
  a.x = x.get(), a.ldx = k;
  a.w = ws[0]->get(), a.ldw = k;
  a.y = y1.get(), a.ldy = n;
  ASSERT_TRUE(kernels::LaunchSkinnyGemm(ToSkinnyGemmArgs(a), 0, true, nullptr).ok());
  a.y = y2.get();
  ASSERT_TRUE(kernels::LaunchSkinnyGemm(ToSkinnyGemmArgs(a), 0, true, nullptr).ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto b1 = y1.Download(), b2 = y2.Download();
  EXPECT_EQ(std::memcmp(b1.data(), b2.data(), b1.size() * sizeof(Bf16)), 0);
  // The wgmma consumers too.
  {
    kernels::SkinnyGemmArgs s = ToSkinnyGemmArgs(a);
    s.wgmma = true;
    s.y = y2.get();
    ASSERT_TRUE(kernels::LaunchSkinnyGemm(s, 0, true, nullptr).ok());
    s.y = y3.get();
    ASSERT_TRUE(kernels::LaunchSkinnyGemm(s, 0, true, nullptr).ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    const auto w2 = y2.Download(), w3 = y3.Download();
    EXPECT_EQ(std::memcmp(w2.data(), w3.data(), w2.size() * sizeof(Bf16)), 0);
  }
  // Stream-K: the owner adds the partials in CTA order.
  {
    const int sms = NumSms();
    auto ws = StreamKWorkspace(sms);
    kernels::SkinnyGemmArgs s = ToSkinnyGemmArgs(a);
    s.wgmma = true;
    s.stream_k_ctas = sms;
    s.workspace = ws->get();
    s.y = y2.get();
    ASSERT_TRUE(kernels::LaunchSkinnyGemm(s, 0, true, nullptr).ok());
    s.y = y3.get();
    ASSERT_TRUE(kernels::LaunchSkinnyGemm(s, 0, true, nullptr).ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    const auto k2 = y2.Download(), k3 = y3.Download();
    EXPECT_EQ(std::memcmp(k2.data(), k3.data(), k2.size() * sizeof(Bf16)), 0);
  }

  EXPECT_EQ((*gemm)->Choice(a), "");
  a.y = y3.get();
  ASSERT_TRUE((*gemm)->Tune(a, nullptr, 8, rotate).ok());
  const std::string choice = (*gemm)->Choice(a);
  EXPECT_TRUE(choice == "cublaslt" || choice.rfind("skinny/", 0) == 0 ||
              choice.rfind("skinny-wgmma/", 0) == 0)
      << choice;
  std::printf("m %d n %d k %d: Tune chose %s\n", m, n, k, choice.c_str());
  y3.Poison();
  ASSERT_TRUE((*gemm)->Matmul(a, nullptr).ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto b3 = y3.Download();
  std::vector<double> got, ref;
  for (size_t i = 0; i < b3.size(); ++i) {
    got.push_back(Bf16ToFloat(b3[i]));
    ref.push_back(Bf16ToFloat(b1[i]));
  }
  // Both paths round once to bf16 from fp32 sums in different orders.
  EXPECT_LT(testing::Compare(got, ref).rel_l2, 5e-3);

  // Without stream-K, Tune() never picks it.
  CublasLtGemm::Options no_stream_k;
  no_stream_k.stream_k = false;
  no_stream_k.skinny_preference = 1e6;
  auto without = CublasLtGemm::Create(no_stream_k);
  ASSERT_TRUE(without.ok());
  EXPECT_FALSE((*without)->stream_k_enabled());
  ASSERT_TRUE((*without)->Tune(a, nullptr, 4, rotate).ok());
  EXPECT_EQ((*without)->Choice(a).find("stream-k"), std::string::npos) << (*without)->Choice(a);

  // With a preference larger than any gap, Tune() keeps a skinny kernel.
  CublasLtGemm::Options prefer;
  prefer.skinny_preference = 1e6;
  auto preferring = CublasLtGemm::Create(prefer);
  ASSERT_TRUE(preferring.ok());
  ASSERT_TRUE((*preferring)->Tune(a, nullptr, 4, rotate).ok());
  EXPECT_EQ((*preferring)->Choice(a).rfind("skinny", 0), 0u) << (*preferring)->Choice(a);
}

TEST(SkinnyGemmTest, TuneLeavesOutSplitsOfSeveralWavesWhereStreamKRuns) {
  // More 128-row tiles than multiprocessors: a cluster split would run in
  // several waves, so with stream-K Tune() times stream-K and no split;
  // without it, the splits. A preference larger than any gap keeps the
  // skinny kernel, so the choice is the schedule.
  const int sms = NumSms();
  const int n = 128 * (sms + 8), k = 256;
  std::mt19937 rng(11);
  DeviceBuffer<Bf16> x(testing::RandomBf16(size_t(64) * k, rng));
  DeviceBuffer<Bf16> w(testing::RandomBf16(size_t(n) * k, rng, 0.05f));
  DeviceBuffer<Bf16> y(size_t(64) * n);
  CublasLtGemm::Options prefer;
  prefer.skinny_preference = 1e6;
  prefer.wide = false;
  CublasLtGemm::Options no_stream_k = prefer;
  no_stream_k.stream_k = false;
  CublasLtGemm::Options wide = prefer;
  wide.wide = true;
  auto with = CublasLtGemm::Create(prefer);
  auto without = CublasLtGemm::Create(no_stream_k);
  auto with_wide = CublasLtGemm::Create(wide);
  ASSERT_TRUE(with.ok() && without.ok() && with_wide.ok());
  for (int m : {64, 1}) {
    SCOPED_TRACE(absl::StrCat("m ", m));
    GemmArgs a;
    a.m = m, a.n = n, a.k = k;
    a.x = x.get(), a.ldx = k, a.w = w.get(), a.ldw = k, a.y = y.get(), a.ldy = n;
    ASSERT_TRUE((*with)->Tune(a, nullptr, 2).ok());
    ASSERT_TRUE((*without)->Tune(a, nullptr, 2).ok());
    EXPECT_EQ((*with)->Choice(a), absl::StrCat("skinny-wgmma/stream-k", sms));
    const std::string split = (*without)->Choice(a);
    EXPECT_TRUE(split == "skinny/1" || split == "skinny-wgmma/1") << split;
    // With the column split as well: stream-K or the column split, never a
    // split of several waves; Matmul then runs what was chosen (against the
    // float64 reference).
    CheckCase({m, n, k, k, k, n, GemmOut::kBf16, false, false}, 70 + m,
              {{"tuned with the column split", [&](const GemmArgs& b) {
                  ASSERT_TRUE((*with_wide)->Tune(b, nullptr, 2).ok());
                  const std::string choice = (*with_wide)->Choice(b);
                  EXPECT_TRUE(
                      choice == absl::StrCat("skinny-wgmma/stream-k", sms) ||
                      choice == absl::StrCat("skinny-wgmma/wide",
                                             kernels::SkinnyGemmWideCtas(ToSkinnyGemmArgs(b), sms)))
                      << choice;
                  std::printf("m %d n %d k %d: Tune chose %s\n", m, n, k, choice.c_str());
                  const absl::Status st = (*with_wide)->Matmul(b, nullptr);
                  ASSERT_TRUE(st.ok()) << st;
                }}});
  }
}

// The SwiGLU epilogue (SkinnyGemmArgs::silu_mul, CublasLtGemm::
// MatmulSiluMul): act = silu(X Wg^T) * (X Wu^T), W = [Wg; Wu], against the
// float64 reference, through every schedule of the skinny kernel and both
// of MatmulSiluMul's paths (fused; cuBLASLt then the SiLU pass).
struct SwiGluCase {
  int m, inter, k;
  int64_t ldx, ld_act;
};
using SwiGluRun = std::function<void(const kernels::SkinnyGemmArgs&)>;
void CheckSwiGlu(const SwiGluCase& c, uint32_t seed,
                 const std::vector<std::pair<std::string, SwiGluRun>>& runs, double tol) {
  std::mt19937 rng(seed);
  const int n = 2 * c.inter;
  const auto x = testing::RandomBf16(size_t(c.m) * c.ldx, rng);
  const auto w = testing::RandomBf16(size_t(n) * c.k, rng, 0.05f);
  DeviceBuffer<Bf16> dx(x), dw(w);
  DeviceBuffer<Bf16> dact(size_t(c.m) * c.ld_act);
  kernels::SkinnyGemmArgs a;
  a.m = c.m, a.n = n, a.k = c.k;
  a.x = dx.get(), a.ldx = c.ldx;
  a.w = dw.get(), a.ldw = c.k;
  a.y = dact.get(), a.ldy = c.ld_act;
  a.silu_mul = true;
  std::vector<double> ref;
  auto dot = [&](int i, int row) {
    double acc = 0;
    for (int l = 0; l < c.k; ++l) {
      acc += double(Bf16ToFloat(x[size_t(i) * c.ldx + l])) * Bf16ToFloat(w[size_t(row) * c.k + l]);
    }
    return acc;
  };
  for (int i = 0; i < c.m; ++i) {
    for (int j = 0; j < c.inter; ++j) {
      const double g = dot(i, j);
      ref.push_back(g / (1.0 + std::exp(-g)) * dot(i, c.inter + j));
    }
  }
  for (const auto& [name, run] : runs) {
    SCOPED_TRACE(name);
    dact.Poison();
    run(a);
    ASSERT_CUDA(cudaDeviceSynchronize());
    const auto raw = dact.Download();
    std::vector<double> got;
    for (int i = 0; i < c.m; ++i) {
      for (int j = 0; j < c.inter; ++j) got.push_back(Bf16ToFloat(raw[size_t(i) * c.ld_act + j]));
    }
    const auto e = testing::Compare(got, ref);
    EXPECT_EQ(e.nan_count, 0);
    EXPECT_LT(e.rel_l2, tol) << "m " << c.m << " inter " << c.inter << " k " << c.k;
    // Columns past inter (ld_act > inter) are not written.
    for (int i = 0; i < c.m && c.ld_act > c.inter; ++i) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(raw[size_t(i) * c.ld_act + c.inter]))) << "row " << i;
    }
  }
}

TEST(SkinnyGemmTest, SwiGluEpilogueAgainstReference) {
  // Decode gate/up of R1-Distill-Qwen-7B at one token, 64 tokens of a
  // smaller one, ragged tokens and k, strided X and output.
  const std::vector<SwiGluCase> cases = {
      {1, 18944, 3584, 3584, 18944},
      {64, 512, 768, 768, 512},
      {7, 64, 200, 208, 72},
      {33, 384, 1032, 1040, 392},
      // The 7B's gate/up at 64 tokens (k cut to 256), and at TP = 2 with a
      // ragged k: the column split's windows of 144 and of 72 W rows.
      {64, 18944, 256, 256, 18944},
      {48, 9472, 136, 144, 9480},
  };
  const int sms = NumSms();
  auto ws = StreamKWorkspace(sms);
  uint32_t seed = 900;
  for (const SwiGluCase& c : cases) {
    std::vector<std::pair<std::string, SwiGluRun>> runs;
    // The column split (as in EverySplitAgainstReference).
    kernels::SkinnyGemmArgs probe;
    probe.m = c.m, probe.n = 2 * c.inter, probe.k = c.k, probe.silu_mul = true;
    probe.x = probe.w = probe.y = reinterpret_cast<void*>(uintptr_t{256});
    probe.ldx = c.ldx, probe.ldw = c.k, probe.ldy = c.ld_act;
    const std::set<int> counts = WideCtaCounts(probe, sms);
    EXPECT_EQ(!counts.empty(), c.inter >= 72) << "inter " << c.inter;
    for (int ctas : counts) {
      runs.emplace_back(absl::StrCat("wide ", ctas), [ctas](const kernels::SkinnyGemmArgs& a) {
        kernels::SkinnyGemmArgs s = a;
        s.wgmma = true;
        s.wide_ctas = ctas;
        const absl::Status st = kernels::LaunchSkinnyGemm(s, 0, true, nullptr);
        ASSERT_TRUE(st.ok()) << st;
      });
    }
    for (int ctas : {1, 3, sms}) {
      for (bool pdl : {false, true}) {
        runs.emplace_back(absl::StrCat("stream-k ", ctas, " pdl ", pdl),
                          [&, ctas, pdl](const kernels::SkinnyGemmArgs& a) {
                            kernels::SkinnyGemmArgs s = a;
                            s.wgmma = true;
                            s.stream_k_ctas = ctas;
                            s.workspace = ws->get();
                            const absl::Status st = kernels::LaunchSkinnyGemm(s, 0, pdl, nullptr);
                            ASSERT_TRUE(st.ok()) << st;
                          });
      }
    }
    for (int splits : {0, 1, 3, 8}) {
      if (splits > (c.k + 63) / 64) continue;
      for (bool wgmma : {false, true}) {
        runs.emplace_back(absl::StrCat("splits ", splits, " wgmma ", wgmma),
                          [splits, wgmma](const kernels::SkinnyGemmArgs& a) {
                            kernels::SkinnyGemmArgs s = a;
                            s.wgmma = wgmma;
                            ASSERT_TRUE(kernels::SkinnyGemmSupports(s));
                            const absl::Status st = kernels::LaunchSkinnyGemm(s, splits, true, nullptr);
                            ASSERT_TRUE(st.ok()) << st;
                          });
      }
    }
    SCOPED_TRACE(absl::StrCat("m ", c.m, " inter ", c.inter, " k ", c.k));
    CheckSwiGlu(c, seed++, runs, 5e-3);
  }
  // Every launch leaves the flags down for the next.
  const auto bytes = ws->Download();
  size_t raised = 0;
  for (size_t i = 0; i < 4 * size_t(sms); ++i) raised += bytes[i] != 0;
  EXPECT_EQ(raised, 0u);
}

TEST(SkinnyGemmTest, SwiGluThroughTheWrapperFusedOrNot) {
  // MatmulSiluMul runs one kernel when the plan is the skinny kernel and
  // the shape takes the epilogue, else cuBLASLt into the scratch Y and then
  // the SiLU pass (whose gate and up are rounded to bf16 first: a looser
  // bound). Both give the same function; the fused one is deterministic.
  CublasLtGemm::Options always;
  always.skinny = SkinnyGemmMode::kAlways;
  auto skinny = CublasLtGemm::Create(always);
  CublasLtGemm::Options off;
  off.skinny = SkinnyGemmMode::kOff;
  auto lt = CublasLtGemm::Create(off);
  ASSERT_TRUE(skinny.ok() && lt.ok());
  // inter 104: n = 208 is not a multiple of 128, so even the skinny plan
  // takes the two-kernel path.
  for (const SwiGluCase& c : {SwiGluCase{5, 256, 512, 512, 256}, SwiGluCase{64, 104, 64, 64, 104}}) {
    SCOPED_TRACE(absl::StrCat("m ", c.m, " inter ", c.inter));
    DeviceBuffer<Bf16> scratch(size_t(c.m) * 2 * c.inter);
    auto through = [&](CublasLtGemm& g, bool fused) {
      return [&g, &scratch, fused](const kernels::SkinnyGemmArgs& s) {
        GemmArgs a;
        a.m = s.m, a.n = s.n, a.k = s.k;
        a.x = s.x, a.ldx = s.ldx;
        a.w = s.w, a.ldw = s.ldw;
        a.y = scratch.get(), a.ldy = s.n;
        EXPECT_EQ(g.FusesSiluMul(a, s.y), fused);
        const absl::Status st = g.MatmulSiluMul(a, s.y, nullptr);
        ASSERT_TRUE(st.ok()) << st;
        EXPECT_EQ(g.FusesSiluMul(a, s.y), fused);
      };
    };
    const bool fusable = (2 * c.inter) % 128 == 0;
    CheckSwiGlu(c, 950, {{"skinny", through(**skinny, fusable)}}, fusable ? 5e-3 : 1e-2);
    CheckSwiGlu(c, 950, {{"cublaslt", through(**lt, false)}}, 1e-2);
  }
  // The same bits every run (stream-K over 3 CTAs: cut tiles).
  const SwiGluCase c{64, 512, 768, 768, 512};
  std::mt19937 rng(7);
  DeviceBuffer<Bf16> dx(testing::RandomBf16(size_t(c.m) * c.k, rng));
  DeviceBuffer<Bf16> dw(testing::RandomBf16(size_t(2) * c.inter * c.k, rng, 0.05f));
  DeviceBuffer<Bf16> dact(size_t(c.m) * c.inter);
  auto ws = StreamKWorkspace(3);
  kernels::SkinnyGemmArgs s;
  s.m = c.m, s.n = 2 * c.inter, s.k = c.k;
  s.x = dx.get(), s.ldx = c.k, s.w = dw.get(), s.ldw = c.k, s.y = dact.get(), s.ldy = c.inter;
  s.silu_mul = true, s.wgmma = true, s.stream_k_ctas = 3, s.workspace = ws->get();
  std::vector<Bf16> first;
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(kernels::LaunchSkinnyGemm(s, 0, true, nullptr).ok());
    ASSERT_CUDA(cudaDeviceSynchronize());
    const auto got = dact.Download();
    if (r == 0) first = got;
    ASSERT_EQ(std::memcmp(got.data(), first.data(), got.size() * sizeof(Bf16)), 0) << "run " << r;
  }
}

// The RMSNorm split over two products' epilogues, as a decode layer runs
// it: residual mode R = bf16(X W1^T + R) in place with the per-tile sums of
// squares, then scale mode Y = (R W2^T) * rsqrt(mean(R^2) + eps) (+ bias,
// or SwiGLU), W2 standing for a weight with the norm's weight folded in.
// Each stage against the float64 reference of the stage (the second on the
// first's bf16 output as downloaded), the sums of squares against the
// downloaded rows, through every schedule of the skinny kernel.
struct NormCase {
  int m, n, k1, n2;
  bool bias2;
  bool fp32_out2;
  bool silu2;  // Y = silu(s R Wg^T) * (s R Wu^T), n2 / 2 columns
};

TEST(SkinnyGemmTest, NormEpiloguesAgainstReference) {
  const std::vector<NormCase> cases = {
      {64, 512, 768, 1024, true, false, false},
      {7, 264, 200, 136, false, true, false},  // a last tile of 8 rows
      {1, 3584, 512, 256, false, false, true},
      {33, 384, 1032, 768, false, false, true},
      {64, 3584, 3584, 512, false, false, false},
  };
  const float eps = 1e-6f;
  const int sms = NumSms();
  auto ws = StreamKWorkspace(sms);
  struct Schedule {
    int splits, ctas;  // ctas > 0: stream-K
    bool wgmma;
    // The first product lets the second launch at its start
    // (SkinnyGemmArgs::dependents_at_start): the second still reads the
    // first's finished output.
    bool early = false;
    // The second product on the column split (the first, residual mode,
    // on the cluster split that fills the GPU).
    bool wide = false;
  };
  std::vector<Schedule> schedules;
  for (int ctas : {1, 3, sms}) schedules.push_back({0, ctas, true});
  for (int splits : {0, 1, 3, 8}) {
    for (bool wgmma : {false, true}) schedules.push_back({splits, 0, wgmma});
  }
  schedules.push_back({0, sms, true, true});
  schedules.push_back({0, 0, true, true});
  schedules.push_back({1, 0, true, true});
  schedules.push_back({0, 0, true, false, true});
  schedules.push_back({0, 0, true, true, true});
  int wide_runs = 0;
  uint32_t seed = 1300;
  for (const NormCase& c : cases) {
    SCOPED_TRACE(absl::StrCat("m ", c.m, " n ", c.n, " k1 ", c.k1, " n2 ", c.n2));
    std::mt19937 rng(seed++);
    const auto x1 = testing::RandomBf16(size_t(c.m) * c.k1, rng);
    const auto w1 = testing::RandomBf16(size_t(c.n) * c.k1, rng, 0.05f);
    const auto r0 = testing::RandomBf16(size_t(c.m) * c.n, rng);
    const auto w2 = testing::RandomBf16(size_t(c.n2) * c.n, rng, 0.05f);
    const auto b2 = testing::RandomBf16(c.n2, rng);
    const int parts = kernels::SkinnyGemmTiles(c.n);
    const int cols2 = c.silu2 ? c.n2 / 2 : c.n2;
    DeviceBuffer<Bf16> dx1(x1), dw1(w1), dr(r0.size()), dw2(w2), db2(b2);
    DeviceBuffer<float> dss(size_t(parts) * c.m);
    DeviceBuffer<uint8_t> dy2(size_t(c.m) * cols2 * (c.fp32_out2 ? 4 : 2));
    // Stage 1's reference.
    std::vector<double> ref1;
    for (int i = 0; i < c.m; ++i) {
      for (int j = 0; j < c.n; ++j) {
        double acc = Bf16ToFloat(r0[size_t(i) * c.n + j]);
        for (int l = 0; l < c.k1; ++l) {
          acc +=
              double(Bf16ToFloat(x1[size_t(i) * c.k1 + l])) * Bf16ToFloat(w1[size_t(j) * c.k1 + l]);
        }
        ref1.push_back(acc);
      }
    }
    for (const Schedule& sc : schedules) {
      if (sc.splits > (c.k1 + 63) / 64 || sc.splits > (c.n + 63) / 64) continue;
      if (sc.wide && (c.bias2 || c.fp32_out2)) continue;  // epilogues it does not take
      SCOPED_TRACE(absl::StrCat("splits ", sc.splits, " stream-k ", sc.ctas, " wgmma ", sc.wgmma,
                                " early ", sc.early, " wide ", sc.wide));
      auto launch = [&](kernels::SkinnyGemmArgs s) {
        s.wgmma = sc.wgmma;
        if (sc.ctas > 0) s.stream_k_ctas = sc.ctas, s.workspace = ws->get();
        if (sc.wide && s.residual == nullptr) {
          s.wide_ctas = kernels::SkinnyGemmWideCtas(s, sms);
          ASSERT_GT(s.wide_ctas, 0);
          ++wide_runs;
        }
        ASSERT_TRUE(kernels::SkinnyGemmSupports(s));
        const absl::Status st = kernels::LaunchSkinnyGemm(s, sc.splits, true, nullptr);
        ASSERT_TRUE(st.ok()) << st;
      };
      dr.Upload(r0);
      dss.Poison();
      dy2.Poison();
      kernels::SkinnyGemmArgs s1;
      s1.m = c.m, s1.n = c.n, s1.k = c.k1;
      s1.x = dx1.get(), s1.ldx = c.k1;
      s1.w = dw1.get(), s1.ldw = c.k1;
      s1.y = dr.get(), s1.ldy = c.n;
      s1.residual = dr.get();
      s1.sumsq_out = dss.get();
      s1.dependents_at_start = sc.early;
      launch(s1);
      kernels::SkinnyGemmArgs s2;
      s2.m = c.m, s2.n = c.n2, s2.k = c.n;
      s2.x = dr.get(), s2.ldx = c.n;
      s2.w = dw2.get(), s2.ldw = c.n;
      s2.y = dy2.get(), s2.ldy = cols2;
      s2.bias = c.bias2 ? db2.get() : nullptr;
      s2.fp32_out = c.fp32_out2;
      s2.silu_mul = c.silu2;
      s2.sumsq_in = dss.get();
      s2.sumsq_parts = parts;
      s2.rms_eps = eps;
      launch(s2);
      ASSERT_CUDA(cudaDeviceSynchronize());
      const auto r1 = dr.Download();
      const auto ss = dss.Download();
      const auto raw = dy2.Download();
      // Stage 1: the residual stream and its sums of squares.
      std::vector<double> got1(r1.size());
      for (size_t i = 0; i < r1.size(); ++i) got1[i] = Bf16ToFloat(r1[i]);
      const auto e1 = testing::Compare(got1, ref1);
      EXPECT_EQ(e1.nan_count, 0);
      EXPECT_LT(e1.rel_l2, 5e-3);
      std::vector<double> rstd(c.m);
      for (int i = 0; i < c.m; ++i) {
        double total = 0;
        for (int t = 0; t < parts; ++t) {
          double want = 0;
          for (int j = 128 * t; j < std::min(c.n, 128 * (t + 1)); ++j) {
            want += got1[size_t(i) * c.n + j] * got1[size_t(i) * c.n + j];
          }
          EXPECT_NEAR(ss[size_t(t) * c.m + i], want, 1e-5 * want + 1e-30)
              << "tile " << t << " token " << i;
          total += want;
        }
        rstd[i] = 1.0 / std::sqrt(total / c.n + eps);
      }
      // Stage 2 on the rows as stored.
      std::vector<double> ref2, got2;
      auto dot = [&](int i, int row) {
        double acc = 0;
        for (int l = 0; l < c.n; ++l) {
          acc += got1[size_t(i) * c.n + l] * Bf16ToFloat(w2[size_t(row) * c.n + l]);
        }
        return acc * rstd[i];
      };
      for (int i = 0; i < c.m; ++i) {
        for (int j = 0; j < cols2; ++j) {
          if (c.silu2) {
            const double g = dot(i, j);
            ref2.push_back(g / (1.0 + std::exp(-g)) * dot(i, cols2 + j));
          } else {
            ref2.push_back(dot(i, j) + (c.bias2 ? Bf16ToFloat(b2[j]) : 0.0));
          }
          const size_t at = size_t(i) * cols2 + j;
          if (c.fp32_out2) {
            float v;
            std::memcpy(&v, &raw[at * 4], 4);
            got2.push_back(v);
          } else {
            Bf16 v;
            std::memcpy(&v.bits, &raw[at * 2], 2);
            got2.push_back(Bf16ToFloat(v));
          }
        }
      }
      const auto e2 = testing::Compare(got2, ref2);
      EXPECT_EQ(e2.nan_count, 0);
      EXPECT_LT(e2.rel_l2, c.fp32_out2 ? 1e-4 : 5e-3);
    }
  }
  EXPECT_EQ(wide_runs, 6);  // three cases, with and without early dependents
  // Every launch leaves the flags down for the next.
  const auto bytes = ws->Download();
  size_t raised = 0;
  for (size_t i = 0; i < 4 * size_t(sms); ++i) raised += bytes[i] != 0;
  EXPECT_EQ(raised, 0u);
}

// The greedy candidates of an fp32 product (SkinnyGemmArgs::argmax_out):
// for each token and 128-row tile, the tile's largest value of Y with its
// row (lowest on ties), against the Y the same launch stores; with the
// store flag down Y is left alone and the candidates are the same bits.
// Scale mode on as in the LM head; every schedule; n with a ragged tile,
// and duplicate W rows, so that ties occur.
TEST(SkinnyGemmTest, GreedyCandidatesAgainstTheStoredY) {
  const int sms = NumSms();
  auto ws = StreamKWorkspace(sms);
  struct Schedule {
    int splits, ctas;
    bool wgmma;
  };
  std::vector<Schedule> schedules;
  for (int ctas : {1, 3, sms}) schedules.push_back({0, ctas, true});
  for (int splits : {0, 1, 3, 8}) {
    for (bool wgmma : {false, true}) schedules.push_back({splits, 0, wgmma});
  }
  for (const auto& [m, n, k] : {std::tuple{64, 1000, 512}, {5, 2056, 256}, {1, 384, 1024}}) {
    SCOPED_TRACE(absl::StrCat("m ", m, " n ", n, " k ", k));
    std::mt19937 rng(1500 + m);
    const auto x = testing::RandomBf16(size_t(m) * k, rng);
    auto w = testing::RandomBf16(size_t(n) * k, rng, 0.05f);
    for (int r = 0; r + 1 < n; r += 37) {  // row r + 1 = row r: equal logits
      std::copy(w.begin() + size_t(r) * k, w.begin() + size_t(r + 1) * k,
                w.begin() + size_t(r + 1) * k);
    }
    const int tiles = kernels::SkinnyGemmTiles(n);
    std::vector<float> ss(size_t(3) * m);
    for (float& v : ss) v = 10.f + float(rng() % 1000) / 10.f;
    DeviceBuffer<Bf16> dx(x), dw(w);
    DeviceBuffer<float> dy(size_t(m) * n), dss(ss);
    DeviceBuffer<uint64_t> dc(size_t(m) * tiles);
    DeviceBuffer<int32_t> flag(std::vector<int32_t>{1});
    for (const Schedule& sc : schedules) {
      if (sc.splits > (k + 63) / 64) continue;
      SCOPED_TRACE(absl::StrCat("splits ", sc.splits, " stream-k ", sc.ctas, " wgmma ", sc.wgmma));
      kernels::SkinnyGemmArgs a;
      a.m = m, a.n = n, a.k = k;
      a.x = dx.get(), a.ldx = k, a.w = dw.get(), a.ldw = k, a.y = dy.get(), a.ldy = n;
      a.fp32_out = true;
      a.sumsq_in = dss.get(), a.sumsq_parts = 3, a.rms_eps = 1e-6f;
      a.argmax_out = dc.get();
      a.store_y = flag.get();
      a.wgmma = sc.wgmma;
      if (sc.ctas > 0) a.stream_k_ctas = sc.ctas, a.workspace = ws->get();
      ASSERT_TRUE(kernels::SkinnyGemmSupports(a));
      auto run = [&](int32_t store) {
        flag.Upload({store});
        dy.Poison();
        dc.Poison();
        const absl::Status st = kernels::LaunchSkinnyGemm(a, sc.splits, true, nullptr);
        ASSERT_TRUE(st.ok()) << st;
        ASSERT_CUDA(cudaDeviceSynchronize());
      };
      run(1);
      const auto y = dy.Download();
      const auto cand = dc.Download();
      for (int i = 0; i < m; ++i) {
        for (int t = 0; t < tiles; ++t) {
          int best = 128 * t;
          for (int j = 128 * t; j < std::min(n, 128 * (t + 1)); ++j) {
            if (y[size_t(i) * n + j] > y[size_t(i) * n + best]) best = j;
          }
          ASSERT_EQ(cand[size_t(i) * tiles + t],
                    kernels::PackGreedyCandidate(y[size_t(i) * n + best], best))
              << "token " << i << " tile " << t;
        }
      }
      run(0);
      const auto y0 = dy.Download();
      EXPECT_TRUE(std::all_of(y0.begin(), y0.end(), [](float v) { return std::isnan(v); }))
          << "Y stored with the flag down";
      EXPECT_EQ(dc.Download(), cand);
    }
  }
}

TEST(SkinnyGemmTest, NormEpiloguesThroughTheWrapper) {
  // Only where the plan runs the skinny kernel: RunsSkinny says so, and
  // Matmul and MatmulSiluMul refuse the epilogues on cuBLASLt; Tune times
  // the plain product only.
  DeviceBuffer<Bf16> buf(1 << 16);
  DeviceBuffer<float> ss(1 << 10);
  buf.Poison(0);
  ss.Poison(0);
  GemmArgs a;
  a.m = 4, a.n = 128, a.k = 128;
  a.x = buf.get(), a.ldx = 128;
  a.w = buf.get() + 8192, a.ldw = 128;
  a.y = buf.get() + 32768, a.ldy = 128;
  GemmArgs res = a;
  res.residual = res.y;
  res.sumsq_out = ss.get();
  GemmArgs scaled = a;
  scaled.sumsq_in = ss.get(), scaled.sumsq_parts = 1, scaled.rms_eps = 1e-6f;
  CublasLtGemm::Options off;
  off.skinny = SkinnyGemmMode::kOff;
  auto lt = CublasLtGemm::Create(off);
  CublasLtGemm::Options always;
  always.skinny = SkinnyGemmMode::kAlways;
  auto skinny = CublasLtGemm::Create(always);
  ASSERT_TRUE(lt.ok() && skinny.ok());
  EXPECT_FALSE((*lt)->RunsSkinny(res));
  EXPECT_FALSE((*lt)->RunsSkinny(scaled));
  EXPECT_EQ((*lt)->Matmul(res, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*lt)->Matmul(scaled, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*lt)->MatmulSiluMul(scaled, buf.get() + 49152, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*skinny)->RunsSkinny(res));
  EXPECT_TRUE((*skinny)->RunsSkinny(scaled));
  EXPECT_TRUE((*skinny)->Matmul(res, nullptr).ok());
  EXPECT_TRUE((*skinny)->Matmul(scaled, nullptr).ok());
  EXPECT_TRUE((*skinny)->FusesSiluMul(scaled, buf.get() + 49152));
  EXPECT_TRUE((*skinny)->MatmulSiluMul(scaled, buf.get() + 49152, nullptr).ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ((*skinny)->Tune(res, nullptr, 2).code(), absl::StatusCode::kInvalidArgument);
  GemmArgs biased = res;  // residual mode takes no bias
  biased.bias = buf.get();
  EXPECT_FALSE((*skinny)->RunsSkinny(biased));
}

TEST(SkinnyGemmTest, StreamKOffUnderAnMpsShare) {
  // On by default; off when asked, and when an MPS share gives this process
  // less than the whole GPU (its grid could not be resident at once).
  auto on = CublasLtGemm::Create({});
  ASSERT_TRUE(on.ok());
  EXPECT_TRUE((*on)->stream_k_enabled());
  ASSERT_EQ(setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "50", 1), 0);
  auto shared = CublasLtGemm::Create({});
  ASSERT_EQ(setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "100", 1), 0);
  auto whole = CublasLtGemm::Create({});
  ASSERT_EQ(unsetenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), 0);
  ASSERT_TRUE(shared.ok());
  ASSERT_TRUE(whole.ok());
  EXPECT_FALSE((*shared)->stream_k_enabled());
  EXPECT_TRUE((*whole)->stream_k_enabled());
}

TEST(SkinnyGemmTest, RejectsWhatItCannotRun) {
  int* dev = nullptr;
  ASSERT_CUDA(cudaMalloc(&dev, 1 << 20));
  ASSERT_CUDA(cudaMemset(dev, 0, 1 << 20));
  kernels::SkinnyGemmArgs a;
  a.m = 4, a.n = 64, a.k = 64;
  a.x = a.w = a.y = dev;
  a.ldx = a.ldw = 64, a.ldy = 64;
  EXPECT_TRUE(kernels::SkinnyGemmSupports(a));
  auto expect_rejected = [&](kernels::SkinnyGemmArgs b, int splits) {
    EXPECT_FALSE(kernels::SkinnyGemmSupports(b) && splits >= 0 && splits <= 8 &&
                 splits <= (b.k + 63) / 64);
    EXPECT_EQ(kernels::LaunchSkinnyGemm(b, splits, false, nullptr).code(),
              absl::StatusCode::kInvalidArgument);
  };
  kernels::SkinnyGemmArgs b = a;
  b.m = 65;  // more tokens than the kernel holds
  expect_rejected(b, 0);
  b = a, b.k = 44, b.ldx = b.ldw = 44;  // not a multiple of 8
  expect_rejected(b, 0);
  b = a, b.n = 60;  // not a multiple of 8
  expect_rejected(b, 0);
  b = a, b.x = reinterpret_cast<char*>(dev) + 8;  // misaligned
  expect_rejected(b, 0);
  b = a, b.fp32_out = true, b.bias = dev;  // bias needs bf16 output
  expect_rejected(b, 0);
  // SwiGLU: n a multiple of 128 (64 gate and 64 up rows a tile), bf16
  // output, no bias.
  b = a, b.n = 128, b.silu_mul = true;
  EXPECT_TRUE(kernels::SkinnyGemmSupports(b));
  b.n = 64;
  expect_rejected(b, 0);
  b = a, b.n = 128, b.silu_mul = true, b.fp32_out = true;
  expect_rejected(b, 0);
  b = a, b.n = 128, b.silu_mul = true, b.bias = dev;
  expect_rejected(b, 0);
  // The norm epilogues: residual mode with its sums of squares, bf16
  // output, no bias, SwiGLU or scale; scale mode with parts and eps > 0.
  float* sums = reinterpret_cast<float*>(dev) + 1024;
  b = a, b.residual = dev, b.sumsq_out = sums;
  EXPECT_TRUE(kernels::SkinnyGemmSupports(b));
  b.sumsq_out = nullptr;
  expect_rejected(b, 0);
  b.sumsq_out = sums, b.bias = dev;
  expect_rejected(b, 0);
  b.bias = nullptr, b.fp32_out = true;
  expect_rejected(b, 0);
  b.fp32_out = false, b.n = 128, b.silu_mul = true;
  expect_rejected(b, 0);
  b = a, b.residual = dev, b.sumsq_out = sums, b.sumsq_in = sums, b.sumsq_parts = 1,
  b.rms_eps = 1e-6f;
  expect_rejected(b, 0);
  b = a, b.sumsq_in = sums, b.sumsq_parts = 1, b.rms_eps = 1e-6f;
  EXPECT_TRUE(kernels::SkinnyGemmSupports(b));
  b.sumsq_parts = 0;
  expect_rejected(b, 0);
  b.sumsq_parts = 1, b.rms_eps = 0.f;
  expect_rejected(b, 0);
  expect_rejected(a, 2);  // more splits than 64-k boxes (1)
  expect_rejected(a, -1);
  // Stream-K: wgmma, a workspace, splits 0 and no more CTAs than
  // multiprocessors.
  b = a, b.stream_k_ctas = 2, b.workspace = dev, b.wgmma = true;
  EXPECT_TRUE(kernels::LaunchSkinnyGemm(b, 0, false, nullptr).ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(kernels::LaunchSkinnyGemm(b, 1, false, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  b.wgmma = false;
  EXPECT_EQ(kernels::LaunchSkinnyGemm(b, 0, false, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  b.wgmma = true;
  b.workspace = nullptr;
  EXPECT_EQ(kernels::LaunchSkinnyGemm(b, 0, false, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  b.workspace = reinterpret_cast<char*>(dev) + 4;
  EXPECT_EQ(kernels::LaunchSkinnyGemm(b, 0, false, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  b.workspace = dev, b.stream_k_ctas = NumSms() + 1;
  EXPECT_EQ(kernels::LaunchSkinnyGemm(b, 0, false, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  b.stream_k_ctas = -1;
  EXPECT_EQ(kernels::LaunchSkinnyGemm(b, 0, false, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // The column split: wgmma, splits 0, no stream-K, bf16 output without
  // bias, and CTAs whose windows (at most 2 x 144 rows) hold the features.
  kernels::SkinnyGemmArgs c = a;
  c.n = 256, c.ldy = 256, c.wgmma = true;
  EXPECT_EQ(kernels::SkinnyGemmWideCtas(c, 132), 2);  // windows of 2 x 72 rows
  c.wide_ctas = 2;
  EXPECT_TRUE(kernels::LaunchSkinnyGemm(c, 0, false, nullptr).ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  auto expect_wide_rejected = [&](kernels::SkinnyGemmArgs w, int splits) {
    EXPECT_EQ(kernels::LaunchSkinnyGemm(w, splits, false, nullptr).code(),
              absl::StatusCode::kInvalidArgument);
  };
  expect_wide_rejected(c, 1);
  b = c, b.wgmma = false;
  expect_wide_rejected(b, 0);
  b = c, b.stream_k_ctas = 2, b.workspace = dev;
  expect_wide_rejected(b, 0);
  b = c, b.fp32_out = true;
  EXPECT_EQ(kernels::SkinnyGemmWideCtas(b, 132), 0);
  expect_wide_rejected(b, 0);
  b = c, b.bias = dev;
  EXPECT_EQ(kernels::SkinnyGemmWideCtas(b, 132), 0);
  expect_wide_rejected(b, 0);
  b = c, b.wide_ctas = 1;  // a run of 256 rows takes a window of 2 x 144: wider than W
  expect_wide_rejected(b, 0);
  b = c, b.n = 1024, b.ldy = 1024, b.wide_ctas = 3;  // runs of 344 rows: wider than 2 x 144
  EXPECT_EQ(kernels::SkinnyGemmWideCtas(b, 3), 0);
  expect_wide_rejected(b, 0);
  b = c, b.n = 136, b.ldy = 136;  // narrower than one window of 2 x 72 rows
  EXPECT_EQ(kernels::SkinnyGemmWideCtas(b, 132), 0);
  expect_wide_rejected(b, 0);
  b = c, b.wide_ctas = -1;
  expect_wide_rejected(b, 0);
  ASSERT_CUDA(cudaDeviceSynchronize());
  cudaFree(dev);
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
  // SwiGLU: bf16 output, no bias, ldy == n, an output buffer.
  a.out = GemmOut::kBf16;
  EXPECT_EQ((*gemm)->MatmulSiluMul(a, &dummy, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.bias = nullptr;
  a.ldy = 16;
  EXPECT_EQ((*gemm)->MatmulSiluMul(a, &dummy, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.ldy = 8;
  EXPECT_EQ((*gemm)->MatmulSiluMul(a, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::engine::cuda
