// Greedy sampling on vocabulary shards, on one GPU (tagged gpu): the rows
// are cut into column shards as tensor-parallel ranks hold them; each
// shard's greedy pick comes from kernels::LaunchSample over the shard (with
// the shard's penalty tokens, engine/cuda/shard_sampling.h) and
// LaunchPackGreedyCandidates; the maximum of the candidates (what the
// ranks' all-reduce computes) must give exactly the tokens LaunchSample
// gives on the whole rows: rows with ties inside and across shards, NaN,
// infinities, signed zeros, penalties moving the pick across shards, and
// shards of unequal and odd widths (the sampler's scalar path).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "engine/cuda/shard_candidates.h"
#include "engine/cuda/shard_sampling.h"
#include "gtest/gtest.h"
#include "kernels/greedy_candidate.h"
#include "kernels/sampling.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::engine::cuda {
namespace {

using kernels::GreedyCandidateToken;

using ::memshare::testing::DeviceBuffer;

struct Rows {
  int vocab = 0;
  std::vector<float> logits;         // [rows][vocab]
  std::vector<DeviceSampling> rows;  // greedy, some with penalties
};

Rows MakeRows(int rows, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 2.f);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Rows out;
  out.vocab = vocab;
  out.logits.resize(size_t(rows) * vocab);
  for (int r = 0; r < rows; ++r) {
    float* row = out.logits.data() + size_t(r) * vocab;
    const int kind = r % 6;
    for (int i = 0; i < vocab; ++i) {
      switch (kind) {
        case 0:  // continuous
          row[i] = normal(rng);
          break;
        case 1:  // few values: ties everywhere, across every shard
          row[i] = static_cast<float>(static_cast<int>(rng() % 5));
          break;
        case 2:  // one maximum repeated near the shard cuts
          row[i] = normal(rng) - 20.f;
          break;
        case 3: {  // specials
          const float s[] = {nan, -inf, -0.f, 0.f, -1.f};
          row[i] = s[rng() % 5];
          break;
        }
        case 4:  // nothing but NaN and -inf
          row[i] = rng() % 2 ? nan : -inf;
          break;
        default:  // +inf twice
          row[i] = normal(rng);
      }
    }
    if (kind == 2) {
      for (int at : {vocab / 2 - 1, vocab / 2, vocab / 3, vocab - 1}) row[at] = 5.f;
    }
    if (kind == 5) row[vocab - 3] = row[vocab / 4] = inf;
    DeviceSampling d;
    d.temperature = r % 2 ? 0.f : -1.f;
    if (r % 3 == 0) {  // penalties on the row's best tokens and others
      d.repetition_penalty = 1.9f;
      d.presence_penalty = 0.7f;
      d.frequency_penalty = 0.3f;
      std::vector<int> order(vocab);
      for (int i = 0; i < vocab; ++i) order[i] = i;
      std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                        [&](int a, int b) {  // NaN last: a strict weak order
                          const float x = std::isnan(row[a]) ? -inf : row[a];
                          const float y = std::isnan(row[b]) ? -inf : row[b];
                          return x > y;
                        });
      for (int k = 0; k < 5; ++k) {
        d.penalty_token_ids.push_back(order[k]);
        d.penalty_counts.push_back(k % 3);
      }
      for (int k = 0; k < 20; ++k) {
        const int32_t t = static_cast<int32_t>(rng() % vocab);
        if (std::find(d.penalty_token_ids.begin(), d.penalty_token_ids.end(), t) ==
            d.penalty_token_ids.end()) {
          d.penalty_token_ids.push_back(t);
          d.penalty_counts.push_back(static_cast<int32_t>(rng() % 4));
        }
      }
    }
    out.rows.push_back(d);
  }
  return out;
}

kernels::SamplingRow Params(const DeviceSampling& d) {
  kernels::SamplingRow k;
  k.temperature = d.temperature;
  k.repetition_penalty = d.repetition_penalty;
  k.presence_penalty = d.presence_penalty;
  k.frequency_penalty = d.frequency_penalty;
  return k;
}

// LaunchSample over columns [begin, end) of every row (the whole rows for
// [0, vocab)), with the penalties inside them; then the candidates.
std::vector<uint64_t> SampleShard(const Rows& in, int64_t begin, int64_t end,
                                  std::vector<int32_t>* tokens) {
  const int rows = static_cast<int>(in.rows.size());
  const int width = static_cast<int>(end - begin);
  std::vector<float> shard(size_t(rows) * width);
  std::vector<kernels::SamplingRow> params;
  std::vector<int32_t> offsets = {0}, ids, counts;
  for (int r = 0; r < rows; ++r) {
    std::copy(in.logits.begin() + size_t(r) * in.vocab + begin,
              in.logits.begin() + size_t(r) * in.vocab + end, shard.begin() + size_t(r) * width);
    params.push_back(Params(in.rows[r]));
    const int64_t n = CountShardPenalties(in.rows[r], begin, end);
    ids.resize(offsets.back() + n);
    counts.resize(offsets.back() + n);
    EXPECT_EQ(CopyShardPenalties(in.rows[r], begin, end, ids.data() + offsets.back(),
                                 counts.data() + offsets.back()),
              n);
    offsets.push_back(static_cast<int32_t>(offsets.back() + n));
  }
  DeviceBuffer<float> d_logits(shard);
  DeviceBuffer<kernels::SamplingRow> d_params(params);
  DeviceBuffer<int32_t> d_offsets(offsets);
  DeviceBuffer<int32_t> d_ids(std::max<size_t>(ids.size(), 1));
  DeviceBuffer<int32_t> d_counts(std::max<size_t>(counts.size(), 1));
  if (!ids.empty()) {
    d_ids.Upload(ids);
    d_counts.Upload(counts);
  }
  DeviceBuffer<int32_t> d_tokens(rows);
  DeviceBuffer<uint64_t> d_cand(rows);
  d_tokens.Poison();
  d_cand.Poison();
  const bool pen = !ids.empty();
  EXPECT_TRUE(kernels::LaunchSample(d_logits.get(), width, rows, width, d_params.get(),
                                    pen ? d_offsets.get() : nullptr, pen ? d_ids.get() : nullptr,
                                    pen ? d_counts.get() : nullptr, d_tokens.get(), nullptr)
                  .ok());
  EXPECT_TRUE(LaunchPackGreedyCandidates(d_logits.get(), width, rows, d_tokens.get(), begin,
                                         d_cand.get(), nullptr)
                  .ok());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (tokens != nullptr) *tokens = d_tokens.Download();
  return d_cand.Download();
}

void CheckShards(int rows, int vocab, const std::vector<int64_t>& cuts, uint32_t seed) {
  const Rows in = MakeRows(rows, vocab, seed);
  std::vector<int32_t> whole;
  SampleShard(in, 0, vocab, &whole);
  std::vector<uint64_t> best(rows, 0);
  for (size_t s = 0; s + 1 < cuts.size(); ++s) {
    if (cuts[s] == cuts[s + 1]) continue;  // an empty shard: candidate 0
    const std::vector<uint64_t> c = SampleShard(in, cuts[s], cuts[s + 1], nullptr);
    for (int r = 0; r < rows; ++r) best[r] = std::max(best[r], c[r]);
  }
  int penalized = 0;
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(GreedyCandidateToken(best[r]), whole[r])
        << "row " << r << " (kind " << r % 6 << "), vocab " << vocab << ", " << cuts.size() - 1
        << " shards";
    penalized += !in.rows[r].penalty_token_ids.empty();
  }
  EXPECT_GT(penalized, 0);
}

TEST(ShardSamplingGpuTest, BestCandidateOverShardsIsTheWholeRowsPick) {
  // Two and four equal shards (the 7B's vocabulary over TP=2 and TP=4).
  CheckShards(24, 152064, {0, 76032, 152064}, 1);
  CheckShards(24, 152064, {0, 38016, 76032, 114048, 152064}, 2);
  // Unequal and odd widths (the sampler's scalar loads), an empty shard.
  CheckShards(36, 1001, {0, 1, 333, 334, 1001}, 3);
  CheckShards(36, 640, {0, 160, 320, 480, 640, 640}, 4);
  CheckShards(12, 77, {0, 39, 77}, 5);
}

}  // namespace
}  // namespace memshare::engine::cuda
