#include "kvmanager/dedup_index.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kvmanager/min_hasher.h"

namespace memshare::kvmanager {
namespace {

class DedupIndexTest : public ::testing::Test {
 protected:
  std::vector<uint32_t> Sign(const std::vector<int32_t>& tokens) {
    std::vector<uint32_t> sig(hasher_->num_hashes());
    hasher_->Sign(tokens, sig.data());
    return sig;
  }
  static std::vector<int32_t> Range(int32_t first, int32_t n) {
    std::vector<int32_t> t(n);
    std::iota(t.begin(), t.end(), first);
    return t;
  }
  std::unique_ptr<MinHasher> hasher_ = *MinHasher::Create({});
  DedupIndex index_{DedupIndex::Options{}};
  std::vector<DedupIndex::Candidate> out_;
};

TEST_F(DedupIndexTest, FindsEarlierSimilarStepsMostSimilarFirst) {
  const std::vector<int32_t> base = Range(0, 64);
  std::vector<int32_t> near = base;  // a few tokens changed
  near[10] = 999;
  near[40] = 998;
  std::vector<int32_t> half = Range(0, 32);
  for (int32_t t : Range(500, 32)) half.push_back(t);
  ASSERT_EQ(index_.Insert({0, 64}, Sign(Range(1000, 64)).data()), 0);  // unrelated
  ASSERT_EQ(index_.Insert({64, 128}, Sign(near).data()), 1);
  ASSERT_EQ(index_.Insert({128, 192}, Sign(half).data()), 2);
  EXPECT_EQ(index_.num_steps(), 3);
  EXPECT_EQ(index_.span(1).begin, 64);

  index_.Query(Sign(base).data(), 0.2f, 10, &out_);
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(out_[0].step, 1);
  EXPECT_EQ(out_[1].step, 2);
  EXPECT_GT(out_[0].similarity, out_[1].similarity);
  EXPECT_GT(out_[0].similarity, 0.7f);

  // tau_lex filters, max_candidates caps.
  index_.Query(Sign(base).data(), 0.7f, 10, &out_);
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(out_[0].step, 1);
  index_.Query(Sign(base).data(), 0.2f, 1, &out_);
  EXPECT_EQ(out_.size(), 1u);
  index_.Query(Sign(base).data(), 0.2f, 0, &out_);
  EXPECT_TRUE(out_.empty());
}

TEST_F(DedupIndexTest, TiesPreferTheMostRecentStep) {
  const auto sig = Sign(Range(0, 40));
  index_.Insert({0, 40}, sig.data());
  index_.Insert({40, 80}, sig.data());
  index_.Insert({80, 120}, sig.data());
  index_.Query(sig.data(), 0.5f, 2, &out_);
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(out_[0].step, 2);
  EXPECT_EQ(out_[1].step, 1);
  EXPECT_EQ(out_[0].similarity, 1.0f);
}

TEST_F(DedupIndexTest, EmptyIndexAndCopiesAreIndependent) {
  const auto sig = Sign(Range(0, 40));
  index_.Query(sig.data(), 0.0f, 4, &out_);
  EXPECT_TRUE(out_.empty());
  index_.Insert({0, 40}, sig.data());
  DedupIndex copy = index_;
  copy.Insert({40, 80}, sig.data());
  index_.Query(sig.data(), 0.5f, 4, &out_);
  EXPECT_EQ(out_.size(), 1u);
  copy.Query(sig.data(), 0.5f, 4, &out_);
  EXPECT_EQ(out_.size(), 2u);
}

TEST_F(DedupIndexTest, ValidatesBanding) {
  EXPECT_TRUE(DedupIndex::Validate({}).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(DedupIndex::Validate({.num_bands = 0})));
  EXPECT_TRUE(absl::IsInvalidArgument(DedupIndex::Validate({.rows_per_band = 0})));
  EXPECT_TRUE(
      absl::IsInvalidArgument(DedupIndex::Validate({.num_bands = 100, .rows_per_band = 20})));
}

}  // namespace
}  // namespace memshare::kvmanager
