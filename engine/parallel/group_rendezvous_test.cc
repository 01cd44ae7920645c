#include "engine/parallel/group_rendezvous.h"

#include <grpcpp/grpcpp.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

class Leader {
 public:
  explicit Leader(GroupRendezvous::Options options) {
    auto rendezvous = GroupRendezvous::Create(options);
    EXPECT_TRUE(rendezvous.ok()) << rendezvous.status();
    rendezvous_ = *std::move(rendezvous);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(rendezvous_.get());
    server_ = builder.BuildAndStart();
    EXPECT_GT(port_, 0);
  }
  ~Leader() { server_->Shutdown(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  GroupRendezvous& rendezvous() { return *rendezvous_; }

 private:
  int port_ = 0;
  std::unique_ptr<GroupRendezvous> rendezvous_;
  std::unique_ptr<grpc::Server> server_;
};

JoinOptions Join(const std::string& address, int rank, int world) {
  JoinOptions o;
  o.leader_address = address;
  o.rank = rank;
  o.world_size = world;
  o.member = "rank" + std::to_string(rank);
  o.timeout = absl::Seconds(10);
  return o;
}

TEST(GroupRendezvousTest, FourRanksFormAGroupOverLoopback) {
  const std::string id(128, '\x7');
  Leader leader({.world_size = 4, .group_name = "g", .unique_id = id});
  EXPECT_FALSE(leader.rendezvous().ready());
  std::vector<std::thread> ranks;
  std::vector<absl::StatusOr<v1::JoinResponse>> results(4);
  for (int r = 1; r < 4; ++r) {
    ranks.emplace_back([&, r] { results[r] = JoinGroup(Join(leader.address(), r, 4)); });
  }
  EXPECT_TRUE(leader.rendezvous().WaitReady(absl::Seconds(10)).ok());
  for (auto& t : ranks) t.join();
  for (int r = 1; r < 4; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    EXPECT_EQ(results[r]->nccl_unique_id(), id);
    EXPECT_EQ(results[r]->world_size(), 4);
    EXPECT_EQ(results[r]->epoch(), leader.rendezvous().epoch());
  }
  // Status over RPC.
  auto stub = v1::GroupService::NewStub(
      grpc::CreateChannel(leader.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::GroupStatusResponse status;
  ASSERT_TRUE(stub->GetGroupStatus(&ctx, {}, &status).ok());
  EXPECT_TRUE(status.ready());
  EXPECT_EQ(status.joined_ranks_size(), 4);
}

TEST(GroupRendezvousTest, BadJoinsAreRefusedWithClearStatuses) {
  Leader leader({.world_size = 2, .group_name = "g", .unique_id = "x"});
  auto wrong_world = JoinGroup(Join(leader.address(), 1, 3));
  EXPECT_EQ(wrong_world.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_world.status().message().find("world_size"), std::string_view::npos);

  auto bad_rank = JoinGroup(Join(leader.address(), 0, 2));
  EXPECT_EQ(bad_rank.status().code(), absl::StatusCode::kInvalidArgument);

  JoinOptions other_group = Join(leader.address(), 1, 2);
  other_group.group_name = "h";
  EXPECT_EQ(JoinGroup(other_group).status().code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(JoinGroup(Join(leader.address(), 1, 2)).ok());
  // The same member may retry; another member may not take the rank.
  EXPECT_TRUE(JoinGroup(Join(leader.address(), 1, 2)).ok());
  JoinOptions impostor = Join(leader.address(), 1, 2);
  impostor.member = "someone-else";
  EXPECT_EQ(JoinGroup(impostor).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(leader.rendezvous().ready());
}

TEST(GroupRendezvousTest, MissingRanksTimeOutNamingThem) {
  Leader leader({.world_size = 3, .unique_id = "x"});
  ASSERT_TRUE(JoinGroup(Join(leader.address(), 2, 3)).ok());
  const absl::Status s = leader.rendezvous().WaitReady(absl::Milliseconds(100));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("ranks 1 of 3"), std::string_view::npos) << s;
}

TEST(GroupRendezvousTest, JoinRetriesUntilTheLeaderStartsAndTimesOutWithout) {
  JoinOptions o = Join("127.0.0.1:1", 1, 2);  // nothing listens on port 1
  o.timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  EXPECT_EQ(JoinGroup(o).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(GroupRendezvousTest, RejectsBadOptions) {
  EXPECT_FALSE(GroupRendezvous::Create({.world_size = 0, .unique_id = "x"}).ok());
  EXPECT_FALSE(GroupRendezvous::Create({.world_size = 2, .unique_id = ""}).ok());
}

}  // namespace
}  // namespace memshare::engine
