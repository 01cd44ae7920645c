#include "engine/sampler/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "engine/sampler/sampling_params.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::unique_ptr<Sampler> Make(const SamplingParams& params, int32_t vocab,
                              std::vector<int32_t> prompt = {}) {
  Sampler::Options options;
  options.params = params;
  options.vocab_size = vocab;
  auto sampler = Sampler::Create(options, prompt);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return sampler.ok() ? std::move(*sampler) : nullptr;
}

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

SamplingParams Random(uint64_t seed) {
  SamplingParams p;
  p.seed = seed;
  return p;
}

int32_t SampleId(Sampler& s, const std::vector<float>& logits) {
  SamplerWorkspace ws;
  auto r = s.Sample(logits, &ws);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->token_id : -1;
}

std::vector<float> LogProbs(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

// Draw counts over `n` samples of one sampler.
std::map<int32_t, int> Histogram(Sampler& s, const std::vector<float>& logits, int n) {
  std::map<int32_t, int> counts;
  SamplerWorkspace ws;
  for (int i = 0; i < n; ++i) ++counts[s.Sample(logits, &ws)->token_id];
  return counts;
}

TEST(SamplerTest, CreateRejectsBadOptions) {
  Sampler::Options options;
  options.vocab_size = 0;
  EXPECT_EQ(Sampler::Create(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
  options.vocab_size = 10;
  options.params.top_p = 0;
  auto s = Sampler::Create(options, {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), ::testing::HasSubstr("top_p"));
}

TEST(SamplerTest, GreedyTakesArgmaxLowestIdOnTies) {
  auto s = Make(Greedy(), 5);
  EXPECT_EQ(SampleId(*s, {0.1f, 2.0f, -1.0f, 2.0f, 1.9f}), 1);
  EXPECT_EQ(SampleId(*s, {-5, -4, -3, -2, -1}), 4);
  EXPECT_EQ(s->num_generated(), 2);
}

TEST(SamplerTest, RejectsWrongRowLengthAndEmptyRows) {
  auto s = Make(Greedy(), 4);
  SamplerWorkspace ws;
  EXPECT_EQ(s->Sample(std::vector<float>{1, 2, 3}, &ws).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Sample(std::vector<float>(4, -kInf), &ws).status().code(),
            absl::StatusCode::kInternal);
  auto r = Make(Random(1), 4);
  EXPECT_EQ(r->Sample(std::vector<float>(4, std::nanf("")), &ws).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(s->num_generated(), 0);
}

TEST(SamplerTest, NanNeverWins) {
  auto s = Make(Greedy(), 3);
  EXPECT_EQ(SampleId(*s, {std::nanf(""), 0.5f, 0.1f}), 1);
  auto r = Make(Random(3), 3);
  for (int i = 0; i < 50; ++i) EXPECT_NE(SampleId(*r, {std::nanf(""), 0.5f, 0.1f}), 0);
}

TEST(SamplerTest, RepetitionPenaltyCoversPromptAndOutput) {
  SamplingParams p = Greedy();
  p.repetition_penalty = 2.0f;
  // Token 0 is in the prompt: 3.0 -> 1.5 < 2.0, so token 1 wins.
  auto s = Make(p, 3, {0});
  EXPECT_EQ(SampleId(*s, {3.0f, 2.0f, -1.0f}), 1);
  // Now token 1 is generated: 2.0 -> 1.0; token 0 1.5 wins.
  EXPECT_EQ(SampleId(*s, {3.0f, 2.0f, -1.0f}), 0);
  // Negative logits are multiplied: -1 (unseen) beats -0.6 * 2 = -1.2.
  EXPECT_EQ(SampleId(*s, {-0.6f, -0.7f, -1.0f}), 2);
}

TEST(SamplerTest, RepetitionPenaltyOffIgnoresPrompt) {
  auto s = Make(Greedy(), 3, {0});
  EXPECT_EQ(SampleId(*s, {3.0f, 2.0f, -1.0f}), 0);
}

TEST(SamplerTest, FrequencyAndPresenceCountGeneratedTokensOnly) {
  SamplingParams p = Greedy();
  p.frequency_penalty = 0.5f;
  auto s = Make(p, 2, {0, 0, 0});  // prompt tokens do not count
  const std::vector<float> logits = {1.2f, 0.0f};
  EXPECT_EQ(SampleId(*s, logits), 0);  // 1.2
  EXPECT_EQ(SampleId(*s, logits), 0);  // 1.2 - 0.5 = 0.7
  EXPECT_EQ(SampleId(*s, logits), 0);  // 1.2 - 1.0 = 0.2
  EXPECT_EQ(SampleId(*s, logits), 1);  // 1.2 - 1.5 = -0.3 < 0

  SamplingParams q = Greedy();
  q.presence_penalty = 1.0f;
  auto t = Make(q, 2, {0});
  const std::vector<float> logits2 = {1.5f, 0.0f};
  EXPECT_EQ(SampleId(*t, logits2), 0);  // 1.5
  EXPECT_EQ(SampleId(*t, logits2), 0);  // 0.5 > 0
  EXPECT_EQ(SampleId(*t, logits2), 0);  // presence does not grow with the count
  const std::vector<float> logits3 = {0.9f, 0.0f};
  EXPECT_EQ(SampleId(*t, logits3), 1);  // -0.1 < 0

  SamplingParams neg = Greedy();
  neg.presence_penalty = -2.0f;  // negative penalties encourage repeats
  auto u = Make(neg, 2);
  EXPECT_EQ(SampleId(*u, {0.0f, 1.0f}), 1);
  EXPECT_EQ(SampleId(*u, {2.5f, 1.0f}), 1);  // 1 + 2 = 3 > 2.5
}

TEST(SamplerTest, SeedMakesSamplingReproducible) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = 0.1f * (i % 7);
  auto a = Make(Random(42), 50);
  auto b = Make(Random(42), 50);
  auto c = Make(Random(43), 50);
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 64; ++i) {
    ta.push_back(SampleId(*a, logits));
    tb.push_back(SampleId(*b, logits));
    tc.push_back(SampleId(*c, logits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
  EXPECT_GT(std::set<int32_t>(ta.begin(), ta.end()).size(), 5u);  // it does sample
}

TEST(SamplerTest, SharedWorkspaceDoesNotCoupleSequences) {
  // Two seeded samplers interleaved on one workspace give the same tokens as
  // each alone.
  std::vector<float> l1 = {0.0f, 0.5f, 1.0f, 0.2f};
  std::vector<float> l2 = {1.0f, 0.0f, 0.3f, 0.9f};
  auto solo1 = Make(Random(7), 4);
  auto solo2 = Make(Random(8), 4);
  std::vector<int32_t> s1, s2;
  for (int i = 0; i < 30; ++i) s1.push_back(SampleId(*solo1, l1));
  for (int i = 0; i < 30; ++i) s2.push_back(SampleId(*solo2, l2));
  auto m1 = Make(Random(7), 4);
  auto m2 = Make(Random(8), 4);
  SamplerWorkspace ws;
  std::vector<int32_t> r1, r2;
  for (int i = 0; i < 30; ++i) {
    r1.push_back(m1->Sample(l1, &ws)->token_id);
    r2.push_back(m2->Sample(l2, &ws)->token_id);
  }
  EXPECT_EQ(s1, r1);
  EXPECT_EQ(s2, r2);
}

TEST(SamplerTest, TemperatureSamplingFollowsSoftmax) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  auto s = Make(Random(11), 4);
  const int n = 20000;
  auto counts = Histogram(*s, LogProbs(probs), n);
  for (int i = 0; i < 4; ++i) {
    const double expected = probs[i] * n;
    // 5 standard deviations of a binomial count.
    EXPECT_NEAR(counts[i], expected, 5 * std::sqrt(expected * (1 - probs[i]))) << i;
  }
}

TEST(SamplerTest, TemperatureSharpensAndFlattens) {
  const std::vector<float> logits = {1.0f, 0.0f};
  SamplingParams cold = Random(5);
  cold.temperature = 0.25f;  // p(0) = 1 / (1 + e^-4) = 0.982
  SamplingParams hot = Random(5);
  hot.temperature = 4.0f;  // p(0) = 1 / (1 + e^-0.25) = 0.562
  auto c = Make(cold, 2);
  auto h = Make(hot, 2);
  const int n = 10000;
  EXPECT_NEAR(Histogram(*c, logits, n)[0], 0.982 * n, 100);
  EXPECT_NEAR(Histogram(*h, logits, n)[0], 0.562 * n, 250);
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  SamplingParams p = Random(3);
  p.top_k = 2;
  auto s = Make(p, 5);
  auto counts = Histogram(*s, {0.0f, 3.0f, 1.0f, 2.9f, 0.5f}, 4000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts[1], 1000);
  EXPECT_GT(counts[3], 1000);

  SamplingParams one = Random(3);
  one.top_k = 1;  // top-1 is greedy
  auto g = Make(one, 5);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleId(*g, {0.0f, 3.0f, 1.0f, 2.9f, 0.5f}), 1);

  SamplingParams big = Random(3);
  big.top_k = 100;  // larger than the vocabulary: off
  auto b = Make(big, 5);
  EXPECT_EQ(Histogram(*b, {0, 0, 0, 0, 0}, 500).size(), 5u);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingTheMass) {
  const std::vector<float> logits = LogProbs({0.5, 0.3, 0.15, 0.05});
  SamplingParams p = Random(9);
  p.top_p = 0.79f;  // 0.5 < 0.79: token 1 stays; 0.8 >= 0.79: token 2 goes
  auto s = Make(p, 4);
  auto counts = Histogram(*s, logits, 8000);
  EXPECT_EQ(counts.size(), 2u);
  // Renormalized: 0.5 / 0.8 = 0.625.
  EXPECT_NEAR(counts[0], 0.625 * 8000, 250);

  p.top_p = 0.81f;
  auto t = Make(p, 4);
  EXPECT_EQ(Histogram(*t, logits, 8000).size(), 3u);

  p.top_p = 0.01f;  // the most likely token always stays
  auto u = Make(p, 4);
  auto only = Histogram(*u, logits, 200);
  ASSERT_EQ(only.size(), 1u);
  EXPECT_EQ(only.begin()->first, 0);
}

TEST(SamplerTest, TopPOverALargeFlatVocabulary) {
  // 5000 equal tokens: top_p = 0.5 keeps exactly 2500 (more than one sort
  // prefix); ties are broken by id, so ids >= 2500 never come.
  SamplingParams p = Random(21);
  p.top_p = 0.5f;
  auto s = Make(p, 5000);
  std::vector<float> logits(5000, 0.0f);
  auto counts = Histogram(*s, logits, 5000);
  EXPECT_LT(counts.rbegin()->first, 2500);
  EXPECT_GT(counts.size(), 1000u);
}

TEST(SamplerTest, TopKThenTopP) {
  // top_k = 3 renormalizes to {0.526, 0.316, 0.158}; top_p = 0.6 then keeps
  // tokens 0 and 1 (0.526 < 0.6).
  const std::vector<float> logits = LogProbs({0.5, 0.3, 0.15, 0.05});
  SamplingParams p = Random(4);
  p.top_k = 3;
  p.top_p = 0.6f;
  auto s = Make(p, 4);
  auto counts = Histogram(*s, logits, 3000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts.count(2), 0u);
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheMax) {
  const std::vector<float> logits = LogProbs({0.5, 0.3, 0.15, 0.05});
  SamplingParams p = Random(6);
  p.min_p = 0.5f;  // threshold 0.25: tokens 0, 1
  auto s = Make(p, 4);
  auto counts = Histogram(*s, logits, 4000);
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts[0], 0.625 * 4000, 200);

  p.min_p = 0.29f;  // threshold 0.145: tokens 0, 1, 2
  auto t = Make(p, 4);
  EXPECT_EQ(Histogram(*t, logits, 4000).size(), 3u);
}

TEST(SamplerTest, PenaltiesApplyBeforeRandomSampling) {
  SamplingParams p = Random(12);
  p.top_k = 1;
  p.frequency_penalty = 2.0f;
  auto s = Make(p, 2);
  // 1.0 vs 0: token 0 first; then 1.0 - 2 = -1 < 0: token 1; then both seen
  // once: 1 - 2 = -1 vs -2: token 0.
  EXPECT_EQ(SampleId(*s, {1.0f, 0.0f}), 0);
  EXPECT_EQ(SampleId(*s, {1.0f, 0.0f}), 1);
  EXPECT_EQ(SampleId(*s, {1.0f, 0.0f}), 0);
}

TEST(SamplerTest, InfiniteLogitTakesAllTheMass) {
  auto s = Make(Random(2), 3);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleId(*s, {0.0f, kInf, 5.0f}), 1);
  auto g = Make(Greedy(), 3);
  EXPECT_EQ(SampleId(*g, {0.0f, 5.0f, kInf}), 2);
}

TEST(SamplerTest, LogprobsAreOfTheRawDistribution) {
  SamplingParams p = Greedy();
  p.logprobs = 2;
  p.repetition_penalty = 3.0f;  // changes the choice, not the reported logprobs
  auto s = Make(p, 3, {2});
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f};
  SamplerWorkspace ws;
  auto r = s->Sample(logits, &ws);
  ASSERT_TRUE(r.ok());
  const double z = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_EQ(r->token_id, 1);  // 3 / 3 = 1 < 2
  EXPECT_NEAR(r->logprob, 2.0 - z, 1e-5);
  ASSERT_EQ(r->top.size(), 2u);
  EXPECT_EQ(r->top[0].first, 2);
  EXPECT_NEAR(r->top[0].second, 3.0 - z, 1e-5);
  EXPECT_EQ(r->top[1].first, 1);
  EXPECT_NEAR(r->top[1].second, 2.0 - z, 1e-5);
}

TEST(SamplerTest, LogprobsOffLeavesThemEmpty) {
  auto s = Make(Greedy(), 3);
  SamplerWorkspace ws;
  auto r = s->Sample(std::vector<float>{1, 2, 3}, &ws);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->top.empty());
  EXPECT_EQ(r->logprob, 0.0f);
}

TEST(SamplerTest, LogprobsMoreThanVocabulary) {
  SamplingParams p = Greedy();
  p.logprobs = 20;
  auto s = Make(p, 3);
  SamplerWorkspace ws;
  auto r = s->Sample(std::vector<float>{0, -kInf, 1}, &ws);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->top.size(), 3u);
  EXPECT_EQ(r->top[0].first, 2);
  EXPECT_EQ(r->top[2].first, 1);
  EXPECT_EQ(r->top[2].second, -kInf);
  EXPECT_NEAR(std::exp(r->top[0].second) + std::exp(r->top[1].second), 1.0, 1e-6);
}

// --- The device-sampling path: draws, recorded tokens, penalty lists. ---

std::unique_ptr<Sampler> MakeWithLists(const SamplingParams& params, int32_t vocab,
                                       std::vector<int32_t> prompt = {}) {
  Sampler::Options options;
  options.params = params;
  options.vocab_size = vocab;
  options.keep_penalty_lists = true;
  auto sampler = Sampler::Create(options, prompt);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return sampler.ok() ? std::move(*sampler) : nullptr;
}

// A row of `vocab` logits in [-2, 2) that changes with `step`.
std::vector<float> RowFor(int step, int32_t vocab) {
  std::mt19937 rng(1000 + step);
  std::uniform_real_distribution<float> d(-2.0f, 2.0f);
  std::vector<float> row(vocab);
  for (float& v : row) v = d(rng);
  return row;
}

// Sampling a sequence "on the device" (NextUniform, SampleRow over the
// lists, Record) picks what Sample picks, for every rule and penalty.
TEST(SamplerTest, SampleRowWithNextUniformMatchesSample) {
  const int32_t vocab = 40;
  const std::vector<int32_t> prompt = {3, 7, 7, 11, 3, 39};
  std::vector<SamplingParams> cases;
  SamplingParams p = Random(5);
  cases.push_back(p);
  p.temperature = 0.7f;
  cases.push_back(p);
  p.top_k = 6;
  cases.push_back(p);
  p.top_p = 0.8f;
  cases.push_back(p);
  p.top_k = 0;
  p.min_p = 0.2f;
  cases.push_back(p);
  p = Random(6);
  p.repetition_penalty = 1.4f;
  cases.push_back(p);
  p.frequency_penalty = 0.4f;
  p.presence_penalty = -0.3f;
  cases.push_back(p);
  p.repetition_penalty = 1.0f;
  p.top_p = 0.9f;
  cases.push_back(p);
  p = Greedy();
  p.repetition_penalty = 0.8f;  // < 1 favours repeats
  p.frequency_penalty = 0.1f;
  cases.push_back(p);
  cases.push_back(Greedy());
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE(c);
    auto host = Make(cases[c], vocab, prompt);
    auto device = MakeWithLists(cases[c], vocab, prompt);
    SamplerWorkspace ws;
    std::vector<int32_t> a, b;
    for (int step = 0; step < 150; ++step) {
      const std::vector<float> row = RowFor(step, vocab);
      a.push_back(host->Sample(row, &ws)->token_id);
      const double u = IsGreedy(cases[c]) ? 0.0 : device->NextUniform();
      const int32_t t = Sampler::SampleRow(row, cases[c], device->penalty_token_ids(),
                                           device->penalty_counts(), u, &ws);
      ASSERT_GE(t, 0);
      device->Record(t);
      b.push_back(t);
    }
    EXPECT_EQ(a, b);
    EXPECT_EQ(device->num_generated(), 150);
    EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 1u);
  }
}

TEST(SamplerTest, NextUniformAdvancesTheStreamAsASampleDoes) {
  auto a = Make(Random(77), 8);
  auto b = Make(Random(77), 8);
  std::vector<float> draws;
  for (int i = 0; i < 200; ++i) draws.push_back(a->NextUniform());
  for (float u : draws) {
    EXPECT_GE(u, 0.0f);
    EXPECT_LT(u, 1.0f);
  }
  EXPECT_GT(std::set<float>(draws.begin(), draws.end()).size(), 190u);
  // One random Sample, then the stream goes on where a's second draw is.
  SampleId(*b, std::vector<float>(8, 0.0f));
  EXPECT_EQ(b->NextUniform(), draws[1]);
  // Greedy sampling draws nothing.
  SamplingParams g = Greedy();
  g.seed = 77;
  auto c = Make(g, 8);
  SampleId(*c, std::vector<float>(8, 0.0f));
  EXPECT_EQ(c->NextUniform(), draws[0]);
}

TEST(SamplerTest, PenaltyListsFollowPromptAndOutput) {
  const std::vector<int32_t> prompt = {5, 2, 5, 9};
  SamplingParams rep = Greedy();
  rep.repetition_penalty = 1.2f;
  auto r = MakeWithLists(rep, 16, prompt);
  EXPECT_THAT(r->penalty_token_ids(), ::testing::ElementsAre(5, 2, 9));
  EXPECT_THAT(r->penalty_counts(), ::testing::ElementsAre(0, 0, 0));
  r->Record(9);
  r->Record(14);
  SampleId(*r, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1.0f, 0});  // 14 again
  r->Record(9);
  EXPECT_THAT(r->penalty_token_ids(), ::testing::ElementsAre(5, 2, 9, 14));
  EXPECT_THAT(r->penalty_counts(), ::testing::ElementsAre(0, 0, 2, 2));
  EXPECT_EQ(r->num_generated(), 4);

  // Presence and frequency alone ignore the prompt: it is not listed.
  SamplingParams freq = Greedy();
  freq.frequency_penalty = 0.5f;
  auto f = MakeWithLists(freq, 16, prompt);
  EXPECT_TRUE(f->penalty_token_ids().empty());
  f->Record(2);
  f->Record(2);
  EXPECT_THAT(f->penalty_token_ids(), ::testing::ElementsAre(2));
  EXPECT_THAT(f->penalty_counts(), ::testing::ElementsAre(2));

  // No penalty, or lists not asked for: nothing is kept.
  auto none = MakeWithLists(Greedy(), 16, prompt);
  none->Record(3);
  EXPECT_TRUE(none->penalty_token_ids().empty());
  auto off = Make(rep, 16, prompt);
  off->Record(3);
  EXPECT_TRUE(off->penalty_token_ids().empty());
  EXPECT_TRUE(off->penalty_counts().empty());
}

TEST(SamplerTest, LogprobIsTheOneSampleReports) {
  SamplingParams p = Random(3);
  p.logprobs = 1;
  auto s = Make(p, 40);
  SamplerWorkspace ws;
  for (int step = 0; step < 20; ++step) {
    const std::vector<float> row = RowFor(step, 40);
    auto r = s->Sample(row, &ws);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(Sampler::Logprob(row, r->token_id), r->logprob);
  }
  EXPECT_EQ(Sampler::Logprob({1.0f, 2.0f}, 2), -kInf);
}

}  // namespace
}  // namespace memshare::engine
