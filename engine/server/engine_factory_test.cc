#include "engine/server/engine_factory.h"

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(int32_t, world_size);
ABSL_DECLARE_FLAG(int32_t, rank);
ABSL_DECLARE_FLAG(std::string, group_leader);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(absl::Duration, collective_timeout);
ABSL_DECLARE_FLAG(absl::Duration, heartbeat_interval);
ABSL_DECLARE_FLAG(int32_t, consistency_check_interval);
ABSL_DECLARE_FLAG(double, admission_reserve);

namespace memshare::engine {
namespace {

class GroupFlagsTest : public ::testing::Test {
 private:
  absl::FlagSaver saver_;
};

absl::StatusCode Code() { return ValidateGroupFlags().code(); }

TEST_F(GroupFlagsTest, DefaultsAreASingleProcess) {
  EXPECT_TRUE(ValidateGroupFlags().ok());
  EXPECT_FALSE(RunFollowerFromFlags().has_value());  // rank 0 serves
}

TEST_F(GroupFlagsTest, RanksAndLeaderMustFitTheWorldSize) {
  absl::SetFlag(&FLAGS_world_size, 2);
  EXPECT_TRUE(ValidateGroupFlags().ok());  // rank 0 needs no leader
  absl::SetFlag(&FLAGS_rank, 1);
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);  // no --group_leader
  EXPECT_NE(ValidateGroupFlags().message().find("--group_leader"), std::string::npos);
  absl::SetFlag(&FLAGS_group_leader, "10.0.0.1:29500");
  EXPECT_TRUE(ValidateGroupFlags().ok());
  absl::SetFlag(&FLAGS_rank, 2);
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);
  absl::SetFlag(&FLAGS_rank, -1);
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);
  absl::SetFlag(&FLAGS_rank, 0);
  absl::SetFlag(&FLAGS_world_size, 0);
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);
  absl::SetFlag(&FLAGS_world_size, 1);
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);  // a leader without a group
}

TEST_F(GroupFlagsTest, HeartbeatMustStayWellBelowTheCollectiveTimeout) {
  absl::SetFlag(&FLAGS_world_size, 2);
  absl::SetFlag(&FLAGS_collective_timeout, absl::Seconds(2));
  absl::SetFlag(&FLAGS_heartbeat_interval, absl::Milliseconds(1500));
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);
  absl::SetFlag(&FLAGS_heartbeat_interval, absl::Milliseconds(500));
  EXPECT_TRUE(ValidateGroupFlags().ok());
  absl::SetFlag(&FLAGS_collective_timeout, absl::ZeroDuration());
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);
  absl::SetFlag(&FLAGS_collective_timeout, absl::Seconds(2));
  absl::SetFlag(&FLAGS_consistency_check_interval, -1);
  EXPECT_EQ(Code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GroupFlagsTest, AFollowerWithBadFlagsExitsWithOne) {
  absl::SetFlag(&FLAGS_world_size, 2);
  absl::SetFlag(&FLAGS_rank, 1);  // no --group_leader
  const std::optional<int> code = RunFollowerFromFlags();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
}

TEST_F(GroupFlagsTest, TheEngineRefusesBadGroupFlagsBeforeLoadingAnything) {
  absl::SetFlag(&FLAGS_world_size, 2);
  absl::SetFlag(&FLAGS_rank, 5);
  absl::SetFlag(&FLAGS_model, "/nonexistent");
  EXPECT_EQ(CreateEngineFromFlags().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GroupFlagsTest, AdmissionReserveMustBeAFraction) {
  absl::SetFlag(&FLAGS_model, "/nonexistent");
  for (const double bad : {-0.1, 1.5}) {
    absl::SetFlag(&FLAGS_admission_reserve, bad);
    const absl::Status s = CreateEngineFromFlags().status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("--admission_reserve"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace memshare::engine
