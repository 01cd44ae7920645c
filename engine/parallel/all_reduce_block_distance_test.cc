#include "engine/parallel/all_reduce_block_distance.h"

#include <thread>
#include <vector>

#include "engine/parallel/testing/local_communicator.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

// The sums of a rank's own KV heads: rank-specific values.
class RankDistance : public kvmanager::BlockDistance {
 public:
  explicit RankDistance(int rank) : rank_(rank) {}
  absl::Status ComputeDistanceSums(int layer_group, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override {
    if (layer_group != 0) return absl::InvalidArgumentError("layer group");
    for (size_t i = 0; i < pairs.size(); ++i) {
      out[i].k_diff_sq = (rank_ + 1) * 1.0 * pairs[i].candidate;
      out[i].k_norm_sq = (rank_ + 1) * 10.0;
      out[i].v_diff_sq = rank_ == 0 ? 0.25 : 0.0;
      out[i].v_norm_sq = 1.0;
    }
    return absl::OkStatus();
  }

 private:
  int rank_;
};

TEST(AllReduceBlockDistanceTest, EveryRankGetsTheSumsOverAllHeads) {
  auto group = *LocalGroup::Create({2, absl::Seconds(5)});
  const kvmanager::BlockPair pairs[] = {{3, 1}, {5, 2}};
  std::vector<std::vector<kvmanager::DistanceSums>> out(2, std::vector<kvmanager::DistanceSums>(2));
  std::vector<absl::Status> status(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::unique_ptr<Communicator> comm = group->Join(r);
      RankDistance local(r);
      AllReduceBlockDistance d(&local, comm.get());
      status[r] = d.ComputeDistanceSums(0, pairs, absl::MakeSpan(out[r]));
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(status[r].ok()) << status[r];
    EXPECT_EQ(out[r][0].k_diff_sq, 3.0 + 6.0);
    EXPECT_EQ(out[r][1].k_diff_sq, 5.0 + 10.0);
    EXPECT_EQ(out[r][0].k_norm_sq, 30.0);
    EXPECT_EQ(out[r][0].v_diff_sq, 0.25);
    EXPECT_EQ(out[r][0].v_norm_sq, 2.0);
    // The relative distance over every head, not either rank's own.
    EXPECT_DOUBLE_EQ(out[r][0].RelativeK(), std::sqrt(9.0 / 30.0));
  }
}

TEST(AllReduceBlockDistanceTest, ALocalErrorSkipsTheAllReduce) {
  // One rank alone: an invalid group fails before any collective, so a
  // group of one whose peer never calls does not time out.
  auto group = *LocalGroup::Create({2, absl::Seconds(30)});
  std::unique_ptr<Communicator> comm = group->Join(0);
  RankDistance local(0);
  AllReduceBlockDistance d(&local, comm.get());
  const kvmanager::BlockPair pairs[] = {{3, 1}};
  kvmanager::DistanceSums out[1];
  const absl::Time start = absl::Now();
  EXPECT_EQ(d.ComputeDistanceSums(1, pairs, out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_TRUE(comm->health().ok());
  // No pairs: nothing to reduce.
  EXPECT_TRUE(d.ComputeDistanceSums(0, {}, {}).ok());
}

}  // namespace
}  // namespace memshare::engine
