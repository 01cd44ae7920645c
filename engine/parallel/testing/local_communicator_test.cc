#include "engine/parallel/testing/local_communicator.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

std::shared_ptr<LocalGroup> Group(int n, absl::Duration timeout = absl::Seconds(5)) {
  absl::StatusOr<std::shared_ptr<LocalGroup>> g = LocalGroup::Create({n, timeout});
  EXPECT_TRUE(g.ok());
  return *g;
}

TEST(LocalCommunicatorTest, CollectivesGiveEveryRankTheSameResult) {
  auto group = Group(3);
  std::vector<std::string> got(3);
  std::vector<std::vector<double>> sums(3);
  std::vector<std::vector<uint64_t>> gathered(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      std::unique_ptr<Communicator> c = group->Join(r);
      std::string b = r == 0 ? "plan" : "ignored";
      ASSERT_TRUE(c->Broadcast(&b).ok());
      got[r] = b;
      std::vector<double> v = {1.0 * r, 0.5};
      ASSERT_TRUE(c->AllReduceSum(absl::MakeSpan(v)).ok());
      sums[r] = v;
      ASSERT_TRUE(c->AllGather(100 + r, &gathered[r]).ok());
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(got[r], "plan");
    EXPECT_EQ(sums[r], (std::vector<double>{3.0, 1.5}));
    EXPECT_EQ(gathered[r], (std::vector<uint64_t>{100, 101, 102}));
  }
}

TEST(LocalCommunicatorTest, AMissingRankTimesOutAndBreaksTheCommunicator) {
  auto group = Group(2, absl::Milliseconds(100));
  std::unique_ptr<Communicator> c = group->Join(0);
  group->Kill(1);
  std::string b = "x";
  const absl::Time start = absl::Now();
  const absl::Status s = c->Broadcast(&b);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(c->health().ok());
  // Broken for good: the next call fails at once.
  std::vector<uint64_t> out;
  EXPECT_FALSE(c->AllGather(1, &out).ok());
  EXPECT_FALSE(group->Join(1)->health().ok());
}

TEST(LocalCommunicatorTest, AbortReleasesAWaitingCollective) {
  auto group = Group(2, absl::Seconds(30));
  std::unique_ptr<Communicator> c = group->Join(0);
  std::thread aborter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    c->Abort(absl::CancelledError("stop"));
  });
  std::string b;
  const absl::Time start = absl::Now();
  EXPECT_EQ(c->Broadcast(&b).code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  aborter.join();
}

TEST(LocalCommunicatorTest, MismatchedCollectivesBreakTheGroup) {
  auto group = Group(2, absl::Milliseconds(200));
  absl::Status s0, s1;
  std::thread t0([&] {
    std::string b = "x";
    s0 = group->Join(0)->Broadcast(&b);
  });
  std::thread t1([&] {
    std::vector<uint64_t> out;
    absl::SleepFor(absl::Milliseconds(20));
    s1 = group->Join(1)->AllGather(1, &out);
  });
  t0.join();
  t1.join();
  EXPECT_FALSE(s0.ok());
  EXPECT_EQ(s1.code(), absl::StatusCode::kInternal) << s1;
}

}  // namespace
}  // namespace memshare::engine
