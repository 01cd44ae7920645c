#include "engine/parallel/group_command.h"

#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

StepPlan FullPlan() {
  StepPlan p;
  SequenceChunk a;
  a.seq_id = 0x123456789abcull;
  a.start_pos = 37;
  a.token_ids = {5, 6, 7};
  a.block_tables = {{1, 2, 3}, {9, 8, 7, 6}};
  // A shifted view in group 0 (logical block 2 over blocks 1, 2 at shift 5).
  a.block_tables_hi = {{1, 2, 2}, {}};
  a.block_shifts = {{0, 0, 5}, {}};
  a.compute_logits = false;
  a.fed_row = 3;  // the token the step before sampled for its row 3
  p.sequences.push_back(a);
  SequenceChunk b;
  b.seq_id = 2;
  b.start_pos = 0;
  b.token_ids = {42};
  b.block_tables = {{}, {4}};
  b.compute_logits = true;
  DeviceSampling d;
  d.temperature = 0.7f;
  d.top_k = 40;
  d.top_p = 0.9f;
  d.min_p = 0.05f;
  d.repetition_penalty = 1.1f;
  d.presence_penalty = 0.2f;
  d.frequency_penalty = -0.3f;
  d.uniform = 0.123f;
  d.penalty_token_ids = {1, 2, 42};
  d.penalty_counts = {0, 3, 1};
  d.count_fed_token = true;
  d.return_logprob = true;
  d.return_logits = true;
  b.sampling = d;
  p.sequences.push_back(b);
  return p;
}

void ExpectSameChunk(const SequenceChunk& x, const SequenceChunk& y) {
  EXPECT_EQ(x.seq_id, y.seq_id);
  EXPECT_EQ(x.start_pos, y.start_pos);
  EXPECT_EQ(x.token_ids, y.token_ids);
  EXPECT_EQ(x.block_tables, y.block_tables);
  EXPECT_EQ(x.block_tables_hi, y.block_tables_hi);
  EXPECT_EQ(x.block_shifts, y.block_shifts);
  EXPECT_EQ(x.fed_row, y.fed_row);
  EXPECT_EQ(x.compute_logits, y.compute_logits);
  ASSERT_EQ(x.sampling.has_value(), y.sampling.has_value());
  if (!x.sampling.has_value()) return;
  const DeviceSampling& a = *x.sampling;
  const DeviceSampling& b = *y.sampling;
  EXPECT_EQ(a.temperature, b.temperature);
  EXPECT_EQ(a.top_k, b.top_k);
  EXPECT_EQ(a.top_p, b.top_p);
  EXPECT_EQ(a.min_p, b.min_p);
  EXPECT_EQ(a.repetition_penalty, b.repetition_penalty);
  EXPECT_EQ(a.presence_penalty, b.presence_penalty);
  EXPECT_EQ(a.frequency_penalty, b.frequency_penalty);
  EXPECT_EQ(a.uniform, b.uniform);
  EXPECT_EQ(a.penalty_token_ids, b.penalty_token_ids);
  EXPECT_EQ(a.penalty_counts, b.penalty_counts);
  EXPECT_EQ(a.count_fed_token, b.count_fed_token);
  EXPECT_EQ(a.return_logprob, b.return_logprob);
  EXPECT_EQ(a.return_logits, b.return_logits);
}

TEST(GroupCommandTest, ForwardRoundTripsEveryField) {
  GroupCommand c;
  c.kind = GroupCommandKind::kForward;
  c.sequence = 77;
  c.step = 12;
  c.plan = FullPlan();
  absl::StatusOr<GroupCommand> d = DecodeGroupCommand(EncodeGroupCommand(c));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->kind, GroupCommandKind::kForward);
  EXPECT_EQ(d->sequence, 77u);
  EXPECT_EQ(d->step, 12);
  ASSERT_EQ(d->plan.sequences.size(), 2u);
  for (size_t i = 0; i < 2; ++i) ExpectSameChunk(c.plan.sequences[i], d->plan.sequences[i]);
  // Encoding is deterministic: the same command, the same bytes.
  EXPECT_EQ(EncodeGroupCommand(*d), EncodeGroupCommand(c));
}

TEST(GroupCommandTest, ForwardEncodedFromThePlanIsTheSameBytes) {
  GroupCommand c;
  c.kind = GroupCommandKind::kForward;
  c.sequence = 5;
  c.step = 3;
  c.plan = FullPlan();
  const std::string direct = EncodeForwardCommand(5, 3, c.plan);
  EXPECT_EQ(direct, EncodeGroupCommand(c));
  absl::StatusOr<GroupCommand> d = DecodeGroupCommand(direct);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->sequence, 5u);
  EXPECT_EQ(d->step, 3);
  ASSERT_EQ(d->plan.sequences.size(), c.plan.sequences.size());
  EXPECT_EQ(EncodeForwardCommand(6, 3, c.plan).size(), direct.size());
  EXPECT_NE(EncodeForwardCommand(6, 3, c.plan), direct);
  EXPECT_EQ(EncodeForwardCommand(1, 0, StepPlan{}), EncodeGroupCommand([] {
              GroupCommand e;
              e.kind = GroupCommandKind::kForward;
              e.sequence = 1;
              return e;
            }()));
}

TEST(GroupCommandTest, OtherKindsRoundTrip) {
  GroupCommand copy;
  copy.kind = GroupCommandKind::kCopyBlocks;
  copy.sequence = 1;
  copy.layer_group = 3;
  copy.copies = {{1, 2}, {7, 9}};
  absl::StatusOr<GroupCommand> d = DecodeGroupCommand(EncodeGroupCommand(copy));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->layer_group, 3);
  EXPECT_EQ(d->copies, copy.copies);

  GroupCommand dist;
  dist.kind = GroupCommandKind::kDistance;
  dist.sequence = 2;
  dist.layer_group = 1;
  dist.pairs = {{5, 3}, {8, 2, 9, 7}};  // the second a shifted window
  d = DecodeGroupCommand(EncodeGroupCommand(dist));
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->pairs.size(), 2u);
  EXPECT_EQ(d->pairs[0].shift, 0);
  EXPECT_EQ(d->pairs[1].candidate, 8);
  EXPECT_EQ(d->pairs[1].reference, 2);
  EXPECT_EQ(d->pairs[1].reference_next, 9);
  EXPECT_EQ(d->pairs[1].shift, 7);

  for (GroupCommandKind k : {GroupCommandKind::kCheck, GroupCommandKind::kShutdown}) {
    GroupCommand c;
    c.kind = k;
    c.sequence = 9;
    c.step = 4;
    d = DecodeGroupCommand(EncodeGroupCommand(c));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->kind, k);
    EXPECT_EQ(d->step, 4);
  }
}

TEST(GroupCommandTest, MalformedBuffersAreDataLossNeverACrash) {
  GroupCommand c;
  c.kind = GroupCommandKind::kForward;
  c.sequence = 5;
  c.plan = FullPlan();
  const std::string good = EncodeGroupCommand(c);
  // Every truncation.
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_EQ(DecodeGroupCommand(absl::string_view(good).substr(0, n)).status().code(),
              absl::StatusCode::kDataLoss)
        << n;
  }
  // Trailing bytes.
  EXPECT_EQ(DecodeGroupCommand(good + "x").status().code(), absl::StatusCode::kDataLoss);
  // Bad magic, unknown kind.
  std::string bad = good;
  bad[0] ^= 1;
  EXPECT_EQ(DecodeGroupCommand(bad).status().code(), absl::StatusCode::kDataLoss);
  bad = good;
  bad[6] = 99;
  EXPECT_EQ(DecodeGroupCommand(bad).status().code(), absl::StatusCode::kDataLoss);
  // A vector count far beyond the buffer (the first sequence count, after
  // magic 4 + version 2 + kind 1 + sequence 8 + step 8 bytes).
  bad = good;
  for (int i = 0; i < 8; ++i) bad[23 + i] = static_cast<char>(0xff);
  EXPECT_EQ(DecodeGroupCommand(bad).status().code(), absl::StatusCode::kDataLoss);
  // Every single-byte corruption decodes or fails cleanly.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string flipped = good;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x80);
    (void)DecodeGroupCommand(flipped);
  }
}

}  // namespace
}  // namespace memshare::engine
