// GPU tests of kernels/sampling against a CPU reference: penalties written
// back bit-exactly, greedy argmax, and for sampled rows the kept set and the
// inverse-CDF position of the draw, computed in float64 by sorting (as
// Hugging Face's warpers do).
#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/greedy_candidate.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::kernels {
namespace {

using testing::DeviceBuffer;

struct RowCase {
  SamplingRow p;
  std::vector<int32_t> pen_tokens;
  std::vector<int32_t> pen_counts;
};

// Applies the penalties in fp32 exactly as the kernel does.
void Penalize(std::vector<float>& row, const RowCase& rc) {
  for (size_t i = 0; i < rc.pen_tokens.size(); ++i) {
    float& x = row[rc.pen_tokens[i]];
    if (rc.p.repetition_penalty != 1.f) {
      x = x > 0.f ? x / rc.p.repetition_penalty : x * rc.p.repetition_penalty;
    }
    const int cnt = rc.pen_counts[i];
    x -= rc.p.presence_penalty * (cnt > 0 ? 1.f : 0.f) + rc.p.frequency_penalty * cnt;
  }
}

// The kept tokens of a sampled row (temperature > 0), by sorting.
std::vector<bool> KeptSet(const std::vector<float>& row, const SamplingRow& p,
                          std::vector<double>* mass) {
  const int v = static_cast<int>(row.size());
  const double mx = *std::max_element(row.begin(), row.end());
  const double t = p.temperature;
  mass->assign(v, 0.0);
  for (int i = 0; i < v; ++i) (*mass)[i] = std::exp((row[i] - mx) / t);
  std::vector<bool> keep(v);
  for (int i = 0; i < v; ++i) keep[i] = row[i] >= mx - 87.0 * t;
  std::vector<int> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
  if (p.top_k > 0 && p.top_k < v) {
    const float kth = row[order[p.top_k - 1]];
    for (int i = 0; i < v; ++i) keep[i] = keep[i] && row[i] >= kth;
  }
  if (p.top_p < 1.f) {
    double z = 0;
    for (int i = 0; i < v; ++i) z += keep[i] ? (*mass)[i] : 0.0;
    double cum = 0;
    float cut = row[order[0]];
    for (int i : order) {
      if (!keep[i]) continue;
      cum += (*mass)[i];
      cut = row[i];
      if (cum >= p.top_p * z) break;
    }
    for (int i = 0; i < v; ++i) keep[i] = keep[i] && row[i] >= cut;
  }
  if (p.min_p > 0.f) {
    for (int i = 0; i < v; ++i) keep[i] = keep[i] && (*mass)[i] >= p.min_p;
  }
  return keep;
}

// stride % 4 == 0 takes the kernel's 16-byte-load path, else the scalar one.
void RunCases(int vocab, int64_t stride, const std::vector<RowCase>& cases, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 3.f);
  const int rows = static_cast<int>(cases.size());
  std::vector<float> logits(size_t(rows) * stride);
  for (auto& x : logits) x = normal(rng);
  std::vector<SamplingRow> params;
  std::vector<int32_t> offsets = {0}, tokens, counts;
  for (const auto& c : cases) {
    params.push_back(c.p);
    tokens.insert(tokens.end(), c.pen_tokens.begin(), c.pen_tokens.end());
    counts.insert(counts.end(), c.pen_counts.begin(), c.pen_counts.end());
    offsets.push_back(static_cast<int32_t>(tokens.size()));
  }
  if (tokens.empty()) tokens.push_back(0), counts.push_back(0);
  DeviceBuffer<float> dl(logits);
  DeviceBuffer<SamplingRow> dp(params);
  DeviceBuffer<int32_t> doff(offsets), dtok(tokens), dcnt(counts), dout(rows);
  dout.Poison();
  ASSERT_TRUE(LaunchSample(dl.get(), stride, rows, vocab, dp.get(), doff.get(), dtok.get(),
                           dcnt.get(), dout.get(), nullptr)
                  .ok());
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto got_logits = dl.Download();
  const auto got = dout.Download();
  for (int r = 0; r < rows; ++r) {
    std::vector<float> row(logits.begin() + r * stride, logits.begin() + r * stride + vocab);
    Penalize(row, cases[r]);
    for (int i = 0; i < vocab; ++i) {
      ASSERT_EQ(got_logits[r * stride + i], row[i]) << "penalized logit " << r << "," << i;
    }
    const int tok = got[r];
    ASSERT_GE(tok, 0) << "row " << r;
    ASSERT_LT(tok, vocab) << "row " << r;
    const SamplingRow& p = cases[r].p;
    if (p.temperature <= 0.f) {
      const int want = int(std::max_element(row.begin(), row.end()) - row.begin());
      EXPECT_EQ(tok, want) << "greedy row " << r;
      continue;
    }
    std::vector<double> mass;
    const std::vector<bool> keep = KeptSet(row, p, &mass);
    EXPECT_TRUE(keep[tok]) << "row " << r << " sampled a filtered token";
    double total = 0, before = 0;
    for (int i = 0; i < vocab; ++i) {
      if (!keep[i]) continue;
      if (i < tok) before += mass[i];
      total += mass[i];
    }
    const double lo = before / total, hi = (before + mass[tok]) / total;
    EXPECT_LE(lo, p.uniform + 1e-4) << "row " << r;
    EXPECT_GE(hi, p.uniform - 1e-4) << "row " << r;
  }
}

std::vector<RowCase> MixedCases(int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<RowCase> cases;
  auto add = [&](float t, int k, float top_p, float min_p) {
    RowCase c;
    c.p.temperature = t;
    c.p.top_k = k;
    c.p.top_p = top_p;
    c.p.min_p = min_p;
    c.p.uniform = u(rng);
    cases.push_back(c);
  };
  add(0.f, 0, 1.f, 0.f);       // greedy
  add(1.f, 0, 1.f, 0.f);       // plain sampling
  add(0.7f, 0, 1.f, 0.f);
  add(1.f, 1, 1.f, 0.f);       // top-1 = argmax
  add(1.f, 50, 1.f, 0.f);
  add(1.f, vocab, 1.f, 0.f);   // top-k off
  add(1.f, 0, 0.9f, 0.f);
  add(1.5f, 0, 0.5f, 0.f);
  add(1.f, 0, 0.001f, 0.f);    // the best token only
  add(1.f, 0, 1.f, 0.1f);
  add(0.8f, 40, 0.95f, 0.05f);  // all three
  add(2.f, 1000, 0.8f, 0.f);
  // Kept sets too large for the fast path's candidates (kernels/sampling.cu:
  // 4,096): a large top-k, top-p over a flat distribution.
  add(1.f, 6000, 1.f, 0.f);
  add(1.f, 6000, 0.999f, 0.f);
  add(6.f, 0, 0.99f, 0.f);
  for (int i = 0; i < 6; ++i) add(0.6f, 20, 0.95f, 0.f);  // R1's recommended settings, other draws
  // Penalties, greedy (exact check) and sampled.
  for (float t : {0.f, 1.f}) {
    RowCase c;
    c.p.temperature = t;
    c.p.repetition_penalty = 1.3f;
    c.p.presence_penalty = 0.5f;
    c.p.frequency_penalty = 0.2f;
    c.p.uniform = u(rng);
    std::vector<int32_t> all(vocab);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    for (int i = 0; i < std::min(vocab, 300); ++i) {
      c.pen_tokens.push_back(all[i]);
      c.pen_counts.push_back(i % 4);  // 0: prompt only
    }
    cases.push_back(c);
  }
  return cases;
}

TEST(SamplingGpuTest, QwenVocabVectorLoads) { RunCases(151936, 151936, MixedCases(151936, 1), 10); }
TEST(SamplingGpuTest, Llama3VocabScalarLoads) {
  RunCases(128256, 128256 + 3, MixedCases(128256, 2), 11);
}
TEST(SamplingGpuTest, SmallOddVocab) {
  RunCases(1001, 1004, MixedCases(1001, 3), 12);  // vector loads and a 1-element tail
  RunCases(1001, 1001, MixedCases(1001, 4), 13);
}

TEST(SamplingGpuTest, RejectsPartialPenalties) {
  int32_t x = 0;
  EXPECT_FALSE(LaunchSample(nullptr, 10, 1, 10, nullptr, &x, nullptr, nullptr, nullptr, nullptr).ok());
  EXPECT_FALSE(LaunchSample(nullptr, 5, 1, 10, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr).ok());
}

// Greedy tokens from per-part candidates (an LM-head GEMM's tiles): the
// token of each row's largest candidate, equal logits resolved to the lower
// id, a NaN logit below every number; against the argmax of the logits the
// candidates were made from.
TEST(GreedyFromCandidatesGpuTest, ArgmaxOfTheParts) {
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (const auto& [rows, vocab] : {std::pair{64, 152064}, {3, 1000}, {1, 128}}) {
    const int parts = (vocab + 127) / 128;
    std::vector<float> logits(size_t(rows) * vocab);
    for (float& x : logits) x = normal(rng);
    // Row 0: a tie across two parts; the last row: a NaN in the first part.
    logits[5] = logits[vocab - 1] = 50.f;
    logits[size_t(rows - 1) * vocab + 1] = NAN;
    std::vector<uint64_t> cand(size_t(rows) * parts, 0);
    std::vector<int32_t> want(rows);
    for (int r = 0; r < rows; ++r) {
      int best = -1;
      for (int i = 0; i < vocab; ++i) {
        const float x = logits[size_t(r) * vocab + i];
        uint64_t& c = cand[size_t(r) * parts + i / 128];
        c = std::max(c, PackGreedyCandidate(x, i));
        if (!std::isnan(x) && (best < 0 || x > logits[size_t(r) * vocab + best])) best = i;
      }
      want[r] = best;
    }
    EXPECT_EQ(want[0], 5);
    DeviceBuffer<uint64_t> dc(cand);
    DeviceBuffer<int32_t> out(rows);
    out.Poison();
    ASSERT_TRUE(LaunchGreedyFromCandidates(dc.get(), parts, rows, out.get(), nullptr).ok());
    EXPECT_EQ(out.Download(), want) << "rows " << rows << " vocab " << vocab;
  }
  EXPECT_EQ(LaunchGreedyFromCandidates(nullptr, 0, 1, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// LaunchCountFedTokens: a row's fed token (feed[fed_row]) counts once more:
// its count goes up where listed, else it takes the row's last entry (the
// placeholder); rows without fed_row, and a row whose list is the
// placeholder alone, as they should be.
TEST(CountFedTokensGpuTest, ListedOrPlaceholder) {
  // Row 0: fed token 7, listed (count 2 -> 3). Row 1: fed token 9, not
  // listed: the placeholder becomes (9, 1). Row 2: no fed_row. Row 3: the
  // placeholder alone -> (4, 1). A long row 4 (5,000 entries, the fed token
  // near its end) across the block's threads.
  const std::vector<int32_t> feed = {7, 9, 3, 4, 4999};
  std::vector<SamplingRow> params(5);
  params[0].fed_row = 0;
  params[1].fed_row = 1;
  params[3].fed_row = 3;
  params[4].fed_row = 4;
  std::vector<int32_t> tokens = {1, 7, 8, -1, 2, 5, -1, 7, 9, -1};
  std::vector<int32_t> counts = {0, 2, 1, 0, 1, 0, 0, 3, 1, 0};
  std::vector<int32_t> offsets = {0, 4, 7, 9, 10};
  for (int i = 0; i < 5000; ++i) {
    tokens.push_back(i);
    counts.push_back(i % 3);
  }
  tokens.push_back(-1);
  counts.push_back(0);
  offsets.push_back(static_cast<int32_t>(tokens.size()));
  DeviceBuffer<SamplingRow> dp(params);
  DeviceBuffer<int32_t> doff(offsets), dtok(tokens), dcnt(counts), dfeed(feed);
  ASSERT_TRUE(
      LaunchCountFedTokens(dp.get(), 5, doff.get(), dtok.get(), dcnt.get(), dfeed.get(), nullptr)
          .ok());
  std::vector<int32_t> want_tokens = tokens, want_counts = counts;
  want_counts[1] = 3;                      // row 0: 7 listed
  want_tokens[6] = 9, want_counts[6] = 1;  // row 1: the placeholder
  want_tokens[9] = 4, want_counts[9] = 1;  // row 3
  want_counts[10 + 4999] += 1;             // row 4: 4999 listed
  EXPECT_EQ(dtok.Download(), want_tokens);
  EXPECT_EQ(dcnt.Download(), want_counts);
  EXPECT_EQ(LaunchCountFedTokens(dp.get(), 1, nullptr, dtok.get(), dcnt.get(), dfeed.get(), nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// On a vocabulary shard [100, 200) (tensor parallelism) the lists hold ids
// less 100: a fed token of the shard counts at its local id, listed or in
// the placeholder; another shard's leaves the placeholder (-1, skipped).
TEST(CountFedTokensGpuTest, OnAShard) {
  const std::vector<int32_t> feed = {107, 150, 42, 250};
  std::vector<SamplingRow> params(4);
  for (int r = 0; r < 4; ++r) params[r].fed_row = r;
  // Row 0: 107 listed as 7. Row 1: 150 not listed. Rows 2 and 3: tokens of
  // other shards.
  const std::vector<int32_t> tokens = {1, 7, -1, 3, -1, 5, -1, -1};
  const std::vector<int32_t> counts = {0, 2, 0, 1, 0, 1, 0, 0};
  const std::vector<int32_t> offsets = {0, 3, 5, 7, 8};
  DeviceBuffer<SamplingRow> dp(params);
  DeviceBuffer<int32_t> doff(offsets), dtok(tokens), dcnt(counts), dfeed(feed);
  ASSERT_TRUE(LaunchCountFedTokens(dp.get(), 4, doff.get(), dtok.get(), dcnt.get(), dfeed.get(),
                                   nullptr, 100, 200)
                  .ok());
  std::vector<int32_t> want_tokens = tokens, want_counts = counts;
  want_counts[1] = 3;                       // row 0
  want_tokens[4] = 50, want_counts[4] = 1;  // row 1: local id 50
  EXPECT_EQ(dtok.Download(), want_tokens);
  EXPECT_EQ(dcnt.Download(), want_counts);
  EXPECT_EQ(LaunchCountFedTokens(dp.get(), 4, doff.get(), dtok.get(), dcnt.get(), dfeed.get(),
                                 nullptr, 200, 100)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memshare::kernels
