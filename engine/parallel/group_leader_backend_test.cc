// The group's control logic over threads: rank 0's GroupLeaderBackend and
// GroupFollowers on other threads, each over a FakeBackend (a real paged
// store whose logits depend on what it reads back), meeting in a LocalGroup.
#include "engine/parallel/group_leader_backend.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/llm_engine.h"
#include "engine/parallel/group_command.h"
#include "engine/parallel/group_follower.h"
#include "engine/parallel/testing/local_communicator.h"
#include "engine/testing/fake_backend.h"
#include "engine/testing/fake_text_codec.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

FakeBackend::Options Model(bool pipelines = false) {
  FakeBackend::Options o;
  o.vocab_size = 64;
  o.num_blocks = 64;
  o.block_size = 4;
  o.num_layer_groups = 2;
  o.samples_on_device = pipelines;
  o.pipelines = pipelines;
  return o;
}

template <typename F>
bool Eventually(F predicate, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return predicate();
}

// Changes the first block id of the plan of step `step` on its way to one
// follower: a rank whose block tables went wrong.
class Tamper : public Communicator {
 public:
  Tamper(std::unique_ptr<Communicator> inner, int64_t step)
      : inner_(std::move(inner)), step_(step) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  absl::Status Broadcast(std::string* bytes) override {
    absl::Status s = inner_->Broadcast(bytes);
    if (!s.ok()) return s;
    absl::StatusOr<GroupCommand> c = DecodeGroupCommand(*bytes);
    if (c.ok() && c->kind == GroupCommandKind::kForward && c->step == step_) {
      c->plan.sequences[0].block_tables[0][0] ^= 1;
      *bytes = EncodeGroupCommand(*c);
    }
    return absl::OkStatus();
  }
  absl::Status AllReduceSum(absl::Span<double> v) override { return inner_->AllReduceSum(v); }
  absl::Status AllGather(uint64_t v, std::vector<uint64_t>* out) override {
    return inner_->AllGather(v, out);
  }
  absl::Status health() const override { return inner_->health(); }
  void Abort(const absl::Status& why) override { inner_->Abort(why); }

 private:
  std::unique_ptr<Communicator> inner_;
  int64_t step_;
};

struct GroupUnderTest {
  std::shared_ptr<LocalGroup> group;
  FakeBackend* leader_local = nullptr;
  std::unique_ptr<GroupLeaderBackend> leader;
  std::vector<std::unique_ptr<GroupFollower>> followers;
  std::vector<FakeBackend*> follower_locals;
  std::vector<std::thread> threads;
  std::vector<absl::Status> follower_status;
  std::vector<absl::Time> follower_end;

  ~GroupUnderTest() {
    leader.reset();  // tells the followers to stop
    Join();
  }
  void Join() {
    for (auto& t : threads) {
      if (t.joinable()) t.join();
    }
  }
};

std::unique_ptr<GroupUnderTest> StartGroup(int n, GroupLeaderBackend::Options options = {},
                                           absl::Duration timeout = absl::Seconds(5),
                                           int64_t tamper_step = -1, bool pipelines = false) {
  auto g = std::make_unique<GroupUnderTest>();
  g->group = *LocalGroup::Create({n, timeout});
  g->follower_status.resize(n);
  g->follower_end.resize(n);
  for (int r = 1; r < n; ++r) {
    std::unique_ptr<FakeBackend> local = *FakeBackend::Create(Model(pipelines));
    g->follower_locals.push_back(local.get());
    std::unique_ptr<Communicator> comm = g->group->Join(r);
    if (tamper_step >= 0 && r == n - 1) {
      comm = std::make_unique<Tamper>(std::move(comm), tamper_step);
    }
    auto f = GroupFollower::Create(std::move(local), std::move(comm));
    EXPECT_TRUE(f.ok()) << f.status();
    g->followers.push_back(std::move(*f));
  }
  for (int r = 1; r < n; ++r) {
    g->threads.emplace_back([p = g.get(), r] {
      p->follower_status[r] = p->followers[r - 1]->Run();
      p->follower_end[r] = absl::Now();
    });
  }
  std::unique_ptr<FakeBackend> local = *FakeBackend::Create(Model(pipelines));
  g->leader_local = local.get();
  auto leader = GroupLeaderBackend::Create(options, std::move(local), g->group->Join(0));
  EXPECT_TRUE(leader.ok()) << leader.status();
  g->leader = std::move(*leader);
  return g;
}

// Step k of a toy schedule: sequence 1 writes token k at position k.
StepPlan Step(int k, int32_t bad_block = -1) {
  StepPlan p;
  SequenceChunk s;
  s.seq_id = 1;
  s.start_pos = k;
  s.token_ids = {(k * 7) % 64};
  const int blocks = k / 4 + 1;
  for (int g = 0; g < 2; ++g) {
    std::vector<int32_t> t;
    for (int b = 0; b < blocks; ++b) t.push_back(10 * g + b);
    s.block_tables.push_back(t);
  }
  if (bad_block >= 0) s.block_tables[0][k / 4] = bad_block;
  p.sequences.push_back(s);
  return p;
}

GroupLeaderBackend::Options NoHeartbeat(int check_interval = 0) {
  GroupLeaderBackend::Options o;
  o.heartbeat_interval = absl::ZeroDuration();
  o.consistency_check_interval = check_interval;
  return o;
}

TEST(GroupLeaderBackendTest, EveryRankRunsEveryStepAndRank0MatchesOneBackend) {
  auto g = StartGroup(3, NoHeartbeat());
  std::unique_ptr<FakeBackend> alone = *FakeBackend::Create(Model());
  for (int k = 0; k < 10; ++k) {
    StepOutput grouped, single;
    ASSERT_TRUE(g->leader->Forward(Step(k), &grouped).ok());
    ASSERT_TRUE(alone->Forward(Step(k), &single).ok());
    EXPECT_EQ(grouped.logits, single.logits) << k;
  }
  const std::pair<int32_t, int32_t> copies[] = {{0, 30}};
  ASSERT_TRUE(g->leader->CopyBlocks(0, copies).ok());
  ASSERT_TRUE(g->leader->CheckConsistency().ok());
  EXPECT_EQ(g->leader->steps(), 10);
  g->leader.reset();
  g->Join();
  for (int r = 1; r < 3; ++r) {
    EXPECT_TRUE(g->follower_status[r].ok()) << g->follower_status[r];
    EXPECT_EQ(g->follower_locals[r - 1]->forward_calls(), 10);
    EXPECT_EQ(g->follower_locals[r - 1]->copy_calls(), 1);
    EXPECT_EQ(g->follower_locals[r - 1]->history_mismatches(), 0);
    EXPECT_EQ(g->followers[r - 1]->checks(), 1);
  }
}

TEST(GroupLeaderBackendTest, PipelinedStepsRunOnEveryRankAsOneBackendRunsThemOneByOne) {
  // Rank 0 submits step k + 1 (its token fed from step k's row 0 on the
  // "device") before it collects step k; every rank runs the same plans,
  // two in flight. One backend alone, one by one with the tokens from the
  // host, samples the same tokens.
  auto g = StartGroup(3, NoHeartbeat(/*check_interval=*/4), absl::Seconds(5), -1,
                      /*pipelines=*/true);
  ASSERT_TRUE(g->leader->SupportsPipelining());
  std::unique_ptr<FakeBackend> alone = *FakeBackend::Create(Model(/*pipelines=*/true));
  constexpr int kSteps = 12;
  auto plan = [](int k, int32_t token, bool fed) {
    StepPlan p = Step(k);
    p.sequences[0].token_ids = {token};
    if (fed) p.sequences[0].fed_row = 0;
    p.sequences[0].sampling = DeviceSampling{};  // greedy
    return p;
  };
  std::vector<int32_t> want;  // one by one
  int32_t token = 5;
  for (int k = 0; k < kSteps; ++k) {
    StepOutput out;
    ASSERT_TRUE(alone->Forward(plan(k, token, false), &out).ok());
    ASSERT_EQ(out.sampled_token_ids.size(), 1u);
    token = out.sampled_token_ids[0];
    want.push_back(token);
  }
  std::vector<int32_t> got;
  ASSERT_TRUE(g->leader->Submit(plan(0, 5, false)).ok());
  for (int k = 1; k <= kSteps; ++k) {
    if (k < kSteps) {
      const absl::Status s = g->leader->Submit(plan(k, -1, true));
      ASSERT_TRUE(s.ok()) << s;
    }
    StepOutput out;
    const absl::Status s = g->leader->Collect(&out);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(out.sampled_token_ids.size(), 1u);
    got.push_back(out.sampled_token_ids[0]);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(g->leader->checks(), 3);  // after steps 4, 8 and 12
  ASSERT_TRUE(g->leader->CheckConsistency().ok());
  g->leader.reset();
  g->Join();
  for (int r = 1; r < 3; ++r) {
    EXPECT_TRUE(g->follower_status[r].ok()) << g->follower_status[r];
    EXPECT_EQ(g->followers[r - 1]->steps(), kSteps);
    EXPECT_EQ(g->follower_locals[r - 1]->fed_chunks(), kSteps - 1);
    EXPECT_EQ(g->follower_locals[r - 1]->history_mismatches(), 0);
  }
}

TEST(GroupLeaderBackendTest, DistancesAreSummedOverRanksAndCheckedEveryKSteps) {
  auto g = StartGroup(2, NoHeartbeat(/*check_interval=*/3));
  for (int k = 0; k < 8; ++k) {
    StepOutput out;
    ASSERT_TRUE(g->leader->Forward(Step(k), &out).ok());
  }
  EXPECT_EQ(g->leader->checks(), 2);  // after steps 3 and 6
  // Blocks 0 and 1 of group 0 hold different tokens: every slot differs.
  const kvmanager::BlockPair pairs[] = {{1, 0}, {0, 0}};
  kvmanager::DistanceSums sums[2];
  ASSERT_TRUE(g->leader->ComputeDistanceSums(0, pairs, sums).ok());
  // Each rank's fake counts its block_size slots; two ranks: twice.
  EXPECT_EQ(sums[0].k_norm_sq, 2 * 4);
  EXPECT_EQ(sums[0].k_diff_sq, 2 * 4);
  EXPECT_EQ(sums[1].k_diff_sq, 0);
  EXPECT_DOUBLE_EQ(sums[0].RelativeK(), 1.0);
  ASSERT_TRUE(g->leader->CheckConsistency().ok());
  g->leader.reset();
  g->Join();
  EXPECT_TRUE(g->follower_status[1].ok());
  EXPECT_EQ(g->followers[0]->checks(), 3);
}

TEST(GroupLeaderBackendTest, ADivergentRankStopsTheGroupWithAClearError) {
  auto g = StartGroup(3, NoHeartbeat(/*check_interval=*/4), absl::Seconds(5), /*tamper_step=*/2);
  absl::Status s;
  int k = 0;
  for (; k < 8 && s.ok(); ++k) {
    StepOutput out;
    s = g->leader->Forward(Step(k), &out);
  }
  EXPECT_EQ(k, 4);  // the check after step 4 caught it
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("rank 2 differ"), std::string::npos) << s;
  EXPECT_FALSE(g->leader->health().ok());
  StepOutput out;
  EXPECT_EQ(g->leader->Forward(Step(k), &out).code(), absl::StatusCode::kUnavailable);
  g->Join();
  EXPECT_EQ(g->follower_status[2].code(), absl::StatusCode::kInternal);
  EXPECT_EQ(g->follower_status[1].code(), absl::StatusCode::kInternal);
}

TEST(GroupLeaderBackendTest, ADeadFollowerBreaksTheGroupWithinTheTimeout) {
  auto g = StartGroup(2, NoHeartbeat(), absl::Milliseconds(200));
  StepOutput out;
  ASSERT_TRUE(g->leader->Forward(Step(0), &out).ok());
  g->group->Kill(1);
  // The dead rank may already have posted its part of the next broadcast
  // (as a process that dies while waiting for the next command): the
  // first collective that needs it afterwards times out.
  const absl::Time start = absl::Now();
  absl::Status s;
  for (int k = 1; k < 4 && s.ok(); ++k) s = g->leader->Forward(Step(k), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(g->leader->health().ok());
  g->Join();
  EXPECT_FALSE(g->follower_status[1].ok());
}

TEST(GroupLeaderBackendTest, IdleHeartbeatsProbeTheFollowersAndFindADeadOne) {
  GroupLeaderBackend::Options o;
  o.heartbeat_interval = absl::Milliseconds(20);
  o.consistency_check_interval = 0;
  auto g = StartGroup(2, o, absl::Milliseconds(300));
  EXPECT_TRUE(Eventually([&] { return g->leader->checks() >= 3; }));
  EXPECT_TRUE(g->leader->health().ok());
  const absl::Time kill = absl::Now();
  g->group->Kill(1);
  EXPECT_TRUE(Eventually([&] { return !g->leader->health().ok(); }));
  EXPECT_LT(absl::Now() - kill, absl::Seconds(2));
}

TEST(GroupLeaderBackendTest, ADeadLeaderStopsTheFollowersWithinTheTimeout) {
  auto g = StartGroup(3, NoHeartbeat(), absl::Milliseconds(200));
  StepOutput out;
  ASSERT_TRUE(g->leader->Forward(Step(0), &out).ok());
  const absl::Time kill = absl::Now();
  g->group->Kill(0);
  g->Join();
  for (int r = 1; r < 3; ++r) {
    EXPECT_EQ(g->follower_status[r].code(), absl::StatusCode::kDeadlineExceeded)
        << g->follower_status[r];
    EXPECT_LT(g->follower_end[r] - kill, absl::Seconds(2));
  }
}

TEST(GroupLeaderBackendTest, InvalidPlansFailAloneOtherLocalErrorsBreakTheGroup) {
  auto g = StartGroup(2, NoHeartbeat(), absl::Milliseconds(500));
  StepOutput out;
  ASSERT_TRUE(g->leader->Forward(Step(0), &out).ok());
  // Every rank refuses the same bad plan alike: the group goes on.
  EXPECT_EQ(g->leader->Forward(Step(1, /*bad_block=*/999), &out).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(g->leader->Forward(Step(1), &out).ok());
  ASSERT_TRUE(g->leader->CheckConsistency().ok());
  // A failure on rank 0 alone leaves the ranks out of step.
  g->leader_local->FailNextForwards(1);
  EXPECT_EQ(g->leader->Forward(Step(2), &out).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(g->leader->health().ok());
}

// The whole engine on a group of two: the same tokens as on one backend,
// MemShare remaps included (its distances travel through the group).
TEST(GroupLeaderBackendTest, LlmEngineOnAGroupGeneratesWhatOneBackendDoes) {
  FakeBackend::Options model = Model();
  model.num_layer_groups = 1;
  model.window = 1;  // cycles: MemShare finds repeated blocks
  LlmEngine::Options o;
  o.kv.segmenter.min_step_tokens = 8;
  o.kv.segmenter.max_step_tokens = 16;
  auto run = [&](bool grouped, int64_t* remapped, int64_t* follower_steps) {
    auto group = *LocalGroup::Create({2, absl::Seconds(5)});
    std::unique_ptr<GroupFollower> follower =
        *GroupFollower::Create(*FakeBackend::Create(model), group->Join(1));
    absl::Status follower_status;
    std::thread t;
    LlmEngine::Parts parts;
    parts.codec = std::make_unique<FakeTextCodec>();
    if (grouped) {
      t = std::thread([&] { follower_status = follower->Run(); });
      GroupLeaderBackend::Options lo;
      lo.consistency_check_interval = 5;
      parts.backend = *GroupLeaderBackend::Create(lo, *FakeBackend::Create(model), group->Join(0));
    } else {
      parts.backend = *FakeBackend::Create(model);
    }
    std::unique_ptr<LlmEngine> engine = *LlmEngine::Create(o, std::move(parts));
    std::vector<std::vector<int32_t>> tokens(3);
    std::vector<absl::Notification> done(3);
    for (int i = 0; i < 3; ++i) {
      EngineRequest r;
      r.request_id = absl::StrCat("r", i);
      r.prompt_text = i == 0 ? "abcdefghijklmnop" : absl::StrCat("request ", i);
      r.sampling.temperature = 0;
      r.sampling.max_tokens = 120;
      r.memshare.mode = MemShareParams::Mode::kOn;
      EXPECT_TRUE(engine
                      ->Submit(r,
                               [&, i](const StreamEvent& e) {
                                 for (int32_t id : e.token_ids) tokens[i].push_back(id);
                                 EXPECT_TRUE(e.status.ok()) << e.status;
                                 if (e.finished) done[i].Notify();
                               })
                      .ok());
    }
    for (auto& d : done) EXPECT_TRUE(d.WaitForNotificationWithTimeout(absl::Seconds(30)));
    *remapped = engine->GetLoad().dedup_remapped;
    EXPECT_TRUE(engine->health().ok());
    engine.reset();  // the leader backend tells the follower to stop
    if (t.joinable()) t.join();
    EXPECT_TRUE(follower_status.ok()) << follower_status;
    *follower_steps = follower->steps();
    return tokens;
  };
  int64_t remapped_single = 0, remapped_group = 0, steps_single = 0, steps_group = 0;
  const auto single = run(false, &remapped_single, &steps_single);
  const auto grouped = run(true, &remapped_group, &steps_group);
  EXPECT_EQ(single, grouped);
  EXPECT_GT(remapped_group, 0);
  EXPECT_EQ(remapped_group, remapped_single);
  EXPECT_GT(steps_group, 100);
}

}  // namespace
}  // namespace memshare::engine
