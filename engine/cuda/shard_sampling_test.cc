#include "engine/cuda/shard_sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/greedy_candidate.h"

namespace memshare::engine::cuda {
namespace {

using kernels::GreedyCandidateToken;
using kernels::OrderedLogitKey;
using kernels::PackGreedyCandidate;

StepPlan PlanOf(std::vector<std::optional<DeviceSampling>> rows) {
  StepPlan p;
  for (size_t i = 0; i < rows.size(); ++i) {
    SequenceChunk s;
    s.seq_id = i + 1;
    s.token_ids = {1};
    s.sampling = rows[i];
    p.sequences.push_back(s);
  }
  return p;
}

TEST(ShardSamplingTest, OnlyGreedyRowsWithoutLogprobsOrLogits) {
  DeviceSampling greedy;
  DeviceSampling penalized;
  penalized.repetition_penalty = 1.3f;
  penalized.presence_penalty = 0.5f;
  penalized.penalty_token_ids = {3, 9};
  penalized.penalty_counts = {1, 0};
  DeviceSampling hot;
  hot.temperature = 0.7f;
  DeviceSampling logprob;
  logprob.return_logprob = true;
  DeviceSampling logits;
  logits.return_logits = true;
  DeviceSampling negative;
  negative.temperature = -1.f;  // also greedy (the sampler's temperature <= 0)
  negative.top_k = 5;           // ignored when greedy
  const std::vector<int32_t> both = {0, 1};
  EXPECT_TRUE(GreedyOnShards(PlanOf({greedy, penalized}), both));
  EXPECT_TRUE(GreedyOnShards(PlanOf({greedy, negative}), both));
  EXPECT_FALSE(GreedyOnShards(PlanOf({greedy, hot}), both));
  EXPECT_FALSE(GreedyOnShards(PlanOf({logprob, greedy}), both));
  EXPECT_FALSE(GreedyOnShards(PlanOf({greedy, logits}), both));
  EXPECT_FALSE(GreedyOnShards(PlanOf({greedy, std::nullopt}), both));  // wants logits
  // Only the rows asked about count; no rows: nothing to sample.
  EXPECT_TRUE(GreedyOnShards(PlanOf({greedy, hot}), std::vector<int32_t>{0}));
  EXPECT_FALSE(GreedyOnShards(PlanOf({greedy}), std::vector<int32_t>{}));
  EXPECT_FALSE(GreedyOnShards(PlanOf({greedy}), std::vector<int32_t>{3}));
  DeviceSampling nan_temperature;
  nan_temperature.temperature = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(GreedyOnShards(PlanOf({nan_temperature}), std::vector<int32_t>{0}));
}

TEST(ShardSamplingTest, PenaltiesOfAShardInOrderAsShardIndices) {
  DeviceSampling d;
  d.penalty_token_ids = {5, 120, 99, 100, 0, 150};
  d.penalty_counts = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(CountShardPenalties(d, 0, 100), 3);
  EXPECT_EQ(CountShardPenalties(d, 100, 200), 3);
  EXPECT_EQ(CountShardPenalties(d, 200, 300), 0);
  int32_t ids[6], counts[6];
  ASSERT_EQ(CopyShardPenalties(d, 100, 200, ids, counts), 3);
  EXPECT_EQ(ids[0], 20);
  EXPECT_EQ(counts[0], 2);
  EXPECT_EQ(ids[1], 0);
  EXPECT_EQ(counts[1], 4);
  EXPECT_EQ(ids[2], 50);
  EXPECT_EQ(counts[2], 6);
  ASSERT_EQ(CopyShardPenalties(d, 0, 100, ids, counts), 3);
  EXPECT_EQ(ids[0], 5);
  EXPECT_EQ(ids[1], 99);
  EXPECT_EQ(ids[2], 0);
  EXPECT_EQ(counts[2], 5);
}

// a is a better greedy pick than b (at lower or equal index): the
// sampler's order of logits, written out on floats: NaN below everything,
// -0 below +0, otherwise by value.
bool Above(float a, float b) {
  if (std::isnan(a)) return false;
  if (std::isnan(b)) return true;
  if (a == 0.f && b == 0.f) return !std::signbit(a) && std::signbit(b);
  return a > b;
}

// The sampler's greedy pick over a whole row: the first of the largest.
int32_t FullArgmax(const std::vector<float>& row) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(row.size()); ++i) {
    if (Above(row[i], row[best])) best = i;
  }
  return best;
}

TEST(GreedyCandidateTest, KeysFollowTheSamplersOrder) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> ascending = {nan, -inf, -3e38f, -1.f, -1e-30f, -0.f,
                                        0.f, 1e-30f, 1.f,   2.f,  3e38f,   inf};
  for (size_t i = 0; i + 1 < ascending.size(); ++i) {
    EXPECT_LT(OrderedLogitKey(ascending[i]), OrderedLogitKey(ascending[i + 1])) << i;
    EXPECT_TRUE(Above(ascending[i + 1], ascending[i])) << i;
  }
  EXPECT_EQ(OrderedLogitKey(-nan), 0u);
  // Equal logits: the lower token wins; a higher logit beats any token.
  EXPECT_GT(PackGreedyCandidate(1.f, 3), PackGreedyCandidate(1.f, 4));
  EXPECT_GT(PackGreedyCandidate(1.5f, 150000), PackGreedyCandidate(1.f, 0));
  EXPECT_GT(PackGreedyCandidate(nan, 151000), uint64_t{0});  // any real candidate beats none
  for (int32_t t : {0, 1, 77, 152063, std::numeric_limits<int32_t>::max() - 1}) {
    EXPECT_EQ(GreedyCandidateToken(PackGreedyCandidate(-2.f, t)), t);
  }
  EXPECT_LT(GreedyCandidateToken(0), 0);
}

// The best candidate of every shard, merged by the maximum, is the whole
// row's greedy pick: random rows with ties across and inside shards, NaN,
// infinities, signed zeros; shards of every size, empty ones too.
TEST(GreedyCandidateTest, MaximumOverShardsIsTheWholeRowsArgmax) {
  std::mt19937 rng(17);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> specials = {nan, -inf, inf, -0.f, 0.f, 1.f, 1.f, -1.f};
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 200);
    std::vector<float> row(n);
    const int kind = trial % 4;
    for (float& x : row) {
      if (kind == 0) {
        x = static_cast<float>(static_cast<int>(rng() % 7)) - 3.f;  // many ties
      } else if (kind == 1) {
        x = specials[rng() % specials.size()];
      } else if (kind == 2) {
        x = rng() % 3 == 0 ? nan : -inf;  // nothing finite
      } else {
        x = std::ldexp(static_cast<float>(static_cast<int>(rng() % 2001) - 1000), -10);
      }
    }
    const int shards = 1 + static_cast<int>(rng() % 6);
    std::vector<int> cuts = {0, n};
    for (int s = 1; s < shards; ++s) cuts.push_back(static_cast<int>(rng() % (n + 1)));
    std::sort(cuts.begin(), cuts.end());
    uint64_t merged = 0;
    for (size_t s = 0; s + 1 < cuts.size(); ++s) {
      if (cuts[s] == cuts[s + 1]) continue;  // an empty shard offers 0
      const std::vector<float> shard(row.begin() + cuts[s], row.begin() + cuts[s + 1]);
      const int32_t local = FullArgmax(shard);
      merged = std::max(merged, PackGreedyCandidate(shard[local], cuts[s] + local));
    }
    ASSERT_EQ(GreedyCandidateToken(merged), FullArgmax(row)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace memshare::engine::cuda
