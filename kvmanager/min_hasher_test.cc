#include "kvmanager/min_hasher.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::kvmanager {
namespace {

std::vector<int32_t> Range(int32_t first, int32_t n) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<uint32_t> Sign(const MinHasher& h, const std::vector<int32_t>& tokens) {
  std::vector<uint32_t> sig(h.num_hashes());
  h.Sign(tokens, sig.data());
  return sig;
}

float Similarity(const MinHasher& h, const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const auto sa = Sign(h, a), sb = Sign(h, b);
  return MinHasher::EstimateJaccard(sa.data(), sb.data(), h.num_hashes());
}

TEST(MinHasherTest, IdenticalStepsAreSimilarAndDisjointOnesAreNot) {
  auto h = *MinHasher::Create({});
  EXPECT_EQ(Similarity(*h, Range(0, 64), Range(0, 64)), 1.0f);
  EXPECT_LT(Similarity(*h, Range(0, 64), Range(1000, 64)), 0.05f);
}

TEST(MinHasherTest, EstimatesJaccardWithinItsStandardError) {
  // Shingles of one token: the sets are the token ranges themselves.
  auto h = *MinHasher::Create({.num_hashes = 256, .shingle_size = 1});
  struct Case {
    int32_t b_first;
    double jaccard;
  } cases[] = {{50, 50.0 / 150}, {20, 80.0 / 120}, {90, 10.0 / 190}, {0, 1.0}};
  for (const Case& c : cases) {
    const double est = Similarity(*h, Range(0, 100), Range(c.b_first, 100));
    const double se = std::sqrt(c.jaccard * (1 - c.jaccard) / 256);
    EXPECT_NEAR(est, c.jaccard, 4 * se + 1e-9) << "b_first " << c.b_first;
  }
}

TEST(MinHasherTest, ShinglesSeeOrder) {
  auto h = *MinHasher::Create({.num_hashes = 128, .shingle_size = 3});
  std::vector<int32_t> reversed = Range(0, 40);
  std::reverse(reversed.begin(), reversed.end());
  // Same tokens, no common 3-token run.
  EXPECT_LT(Similarity(*h, Range(0, 40), reversed), 0.05f);
  auto unigram = *MinHasher::Create({.num_hashes = 128, .shingle_size = 1});
  EXPECT_EQ(Similarity(*unigram, Range(0, 40), reversed), 1.0f);
}

TEST(MinHasherTest, DeterministicForASeed) {
  auto a = *MinHasher::Create({.seed = 7});
  auto b = *MinHasher::Create({.seed = 7});
  auto c = *MinHasher::Create({.seed = 8});
  EXPECT_EQ(Sign(*a, Range(3, 30)), Sign(*b, Range(3, 30)));
  EXPECT_NE(Sign(*a, Range(3, 30)), Sign(*c, Range(3, 30)));
}

TEST(MinHasherTest, ShortAndEmptyInputs) {
  auto h = *MinHasher::Create({.num_hashes = 16, .shingle_size = 3});
  // Shorter than a shingle: one shingle of everything.
  EXPECT_EQ(Similarity(*h, {1, 2}, {1, 2}), 1.0f);
  EXPECT_LT(Similarity(*h, {1, 2}, {2, 1}), 0.3f);
  const auto empty = Sign(*h, {});
  for (uint32_t v : empty) EXPECT_EQ(v, UINT32_MAX);
}

TEST(MinHasherTest, RejectsBadOptions) {
  EXPECT_TRUE(absl::IsInvalidArgument(MinHasher::Create({.num_hashes = 0}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MinHasher::Create({.num_hashes = 2000}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MinHasher::Create({.shingle_size = 0}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(MinHasher::Create({.shingle_size = 17}).status()));
}

}  // namespace
}  // namespace memshare::kvmanager
