#include "engine/cpu/cpu_backend.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine::cpu {
namespace {

using ::testing::HasSubstr;

model::ModelConfig SmallConfig() {
  model::ModelConfig c;
  c.architecture = model::Architecture::kQwen3;
  c.architecture_name = "Qwen3ForCausalLM";
  c.vocab_size = 100;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.qk_norm = true;
  return c;
}

CpuBackend::Options DummyOptions(const model::ModelConfig& c) {
  CpuBackend::Options o;
  o.load_format = model::LoadFormat::kDummy;
  o.config = c;
  o.dummy.seed = 3;
  o.dummy.std = 0.2f;
  o.num_blocks = 8;
  o.block_size = 4;
  return o;
}

std::unique_ptr<CpuBackend> Make(const CpuBackend::Options& o) {
  absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

SequenceChunk Chunk(int start, std::vector<int32_t> tokens,
                    std::vector<std::vector<int32_t>> tables, bool logits = true) {
  SequenceChunk c;
  c.seq_id = 9;
  c.start_pos = start;
  c.token_ids = std::move(tokens);
  c.block_tables = std::move(tables);
  c.compute_logits = logits;
  return c;
}

// A chunk whose tables carry shifted views (step_plan.h).
SequenceChunk ViewChunk(int start, std::vector<int32_t> tokens,
                        std::vector<std::vector<int32_t>> tables,
                        std::vector<std::vector<int32_t>> hi,
                        std::vector<std::vector<int32_t>> shifts) {
  SequenceChunk c = Chunk(start, std::move(tokens), std::move(tables));
  c.block_tables_hi = std::move(hi);
  c.block_shifts = std::move(shifts);
  return c;
}

double BlockNorm(CpuBackend& b, int32_t block, int group = 0) {
  kvmanager::DistanceSums d[1];
  const kvmanager::BlockPair p[] = {{block, block}};
  EXPECT_TRUE(b.ComputeDistanceSums(group, p, d).ok());
  return d[0].k_norm_sq + d[0].v_norm_sq;
}

TEST(CpuBackendTest, RejectsBadOptions) {
  const model::ModelConfig c = SmallConfig();
  auto code = [&](auto mutate) {
    CpuBackend::Options o = DummyOptions(c);
    mutate(o);
    return CpuBackend::Create(o).status().code();
  };
  EXPECT_EQ(code([](auto& o) { o.num_blocks = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.block_size = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.num_layer_groups = 3; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.num_threads = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.config.reset(); }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.num_blocks = 1 << 30; }), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code([](auto& o) {
              o.config->hidden_size = 1 << 16;
              o.config->intermediate_size = 1 << 18;
              o.config->num_layers = 4096;
            }),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code([](auto& o) {
              o.load_format = model::LoadFormat::kSafetensors;
              o.model_dir = "/nonexistent";
            }),
            absl::StatusCode::kNotFound);
}

TEST(CpuBackendTest, KvSpecFollowsTheOptions) {
  CpuBackend::Options o = DummyOptions(SmallConfig());
  o.num_layer_groups = 2;
  std::unique_ptr<CpuBackend> b = Make(o);
  ASSERT_NE(b, nullptr);
  const KvCacheSpec& s = b->kv_spec();
  EXPECT_EQ(s.num_layer_groups, 2);
  EXPECT_EQ(s.group_layer_begin, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(s.num_blocks, 8);
  EXPECT_EQ(s.block_size, 4);
  EXPECT_EQ(s.kv_heads_local, 2);
  EXPECT_EQ(s.head_dim, 8);
  EXPECT_EQ(b->vocab_size(), 100);
}

TEST(CpuBackendTest, DeterministicAcrossInstancesAndThreadCounts) {
  CpuBackend::Options o = DummyOptions(SmallConfig());
  o.num_threads = 1;
  std::unique_ptr<CpuBackend> one = Make(o);
  o.num_threads = 3;
  std::unique_ptr<CpuBackend> three = Make(o);
  ASSERT_TRUE(one && three);
  StepPlan plan;
  plan.sequences.push_back(Chunk(0, {5, 6, 7, 8, 9, 10}, {{0, 1}}));
  plan.sequences.push_back(Chunk(0, {1, 2}, {{2}}));
  StepOutput a, b;
  ASSERT_TRUE(one->Forward(plan, &a).ok());
  ASSERT_TRUE(three->Forward(plan, &b).ok());
  EXPECT_EQ(a.logits, b.logits);
  ASSERT_EQ(a.logits.size(), 200u);
  for (float v : a.logits) ASSERT_TRUE(std::isfinite(v));
  // Different tokens, different logits.
  EXPECT_NE(std::vector<float>(a.logits.begin(), a.logits.begin() + 100),
            std::vector<float>(a.logits.begin() + 100, a.logits.end()));
}

TEST(CpuBackendTest, LogitsOnlyForTheRowsAskedFor) {
  std::unique_ptr<CpuBackend> b = Make(DummyOptions(SmallConfig()));
  ASSERT_NE(b, nullptr);
  StepPlan plan;
  plan.sequences.push_back(Chunk(0, {1, 2, 3}, {{0}}));
  plan.sequences.push_back(Chunk(0, {4, 5, 6, 7, 8}, {{1, 2}}, /*logits=*/false));
  plan.sequences.push_back(Chunk(0, {9}, {{3}}));
  StepOutput out;
  ASSERT_TRUE(b->Forward(plan, &out).ok());
  EXPECT_EQ(out.vocab_size, 100);
  EXPECT_EQ(out.rows, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(out.logits.size(), 200u);
  // The prefill without logits still wrote its KV.
  EXPECT_GT(BlockNorm(*b, 2), 0.0);
  EXPECT_EQ(BlockNorm(*b, 4), 0.0);
}

TEST(CpuBackendTest, InvalidPlansAreRejectedBeforeAnythingIsWritten) {
  std::unique_ptr<CpuBackend> b = Make(DummyOptions(SmallConfig()));
  ASSERT_NE(b, nullptr);
  struct Case {
    SequenceChunk bad;
    const char* message;
  };
  const Case cases[] = {
      {Chunk(0, {1, 100}, {{1}}), "token_ids[1] = 100 outside the vocabulary"},
      {Chunk(0, {-1}, {{1}}), "token_ids[0] = -1"},
      {Chunk(0, {1, 2, 3, 4, 5}, {{1}}), "has 1 blocks; positions up to 4 need 2"},
      {Chunk(0, {1}, {{8}}), "block_tables[0][0] = 8 outside the pool"},
      {Chunk(0, {1}, {{-2}}), "outside the pool"},
      {Chunk(0, {1}, {{1}, {2}}), "2 block tables for 1 layer groups"},
      {Chunk(0, {}, {{1}}), "no tokens"},
      {Chunk(-1, {1}, {{1}}), "start_pos -1"},
      {Chunk(63, {1, 2}, std::vector<std::vector<int32_t>>{std::vector<int32_t>(16, 1)}),
       "exceed max_position_embeddings"},
      {Chunk(1, {7}, {{0}}), "another token of the step writes"},  // slot 1 of block 0
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 2}}, {{0, 0, 0}}),
       "block_tables_hi[0] / block_shifts[0] have 2 / 3 entries"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 2, 3}, {}}, {{0, 0, 0}}),
       "have 2 / 1 entries for 1 layer groups"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 2, 3}}, {{0, 4, 0}}), "block_shifts[0][1] = 4"},
      {ViewChunk(8, {1}, {{1, 2, 3}}, {{1, 8, 3}}, {{0, 1, 0}}), "block_tables_hi[0][1] = 8"},
      {ViewChunk(6, {1}, {{1, 2}}, {{1, 1}}, {{0, 2}}), "is a shifted view but the step writes"},
  };
  for (const Case& c : cases) {
    StepPlan plan;
    plan.sequences.push_back(Chunk(0, {1, 2, 3}, {{0}}));  // valid, writes block 0
    plan.sequences.push_back(c.bad);
    StepOutput out;
    absl::Status st = b->Forward(plan, &out);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.message));
    EXPECT_THAT(std::string(st.message()), HasSubstr("sequence 1 (seq_id 9)"));
    EXPECT_EQ(BlockNorm(*b, 0), 0.0) << c.message;
    EXPECT_EQ(BlockNorm(*b, 1), 0.0) << c.message;
  }
  StepPlan empty;
  StepOutput out;
  EXPECT_TRUE(b->Forward(empty, &out).ok());
  EXPECT_TRUE(out.rows.empty());
}

TEST(CpuBackendTest, SlidingWindowLongerThanSupportedIsRejected) {
  model::ModelConfig c = SmallConfig();
  c.architecture = model::Architecture::kLlama;
  c.qk_norm = false;
  c.sliding_window = 8;
  std::unique_ptr<CpuBackend> b = Make(DummyOptions(c));
  ASSERT_NE(b, nullptr);
  StepPlan ok, too_long;
  ok.sequences.push_back(Chunk(0, std::vector<int32_t>(8, 1), {{0, 1}}));
  too_long.sequences.push_back(Chunk(8, {1}, {{0, 1, 2}}));
  StepOutput out;
  EXPECT_TRUE(b->Forward(ok, &out).ok());
  absl::Status st = b->Forward(too_long, &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("sliding_window"));
}

TEST(CpuBackendTest, DistanceSumsAndCopyBlocks) {
  CpuBackend::Options o = DummyOptions(SmallConfig());
  o.num_layer_groups = 2;
  std::unique_ptr<CpuBackend> b = Make(o);
  ASSERT_NE(b, nullptr);
  StepPlan plan;
  plan.sequences.push_back(Chunk(0, {11, 12, 13, 14, 15, 16, 17, 18}, {{0, 1}, {4, 5}}));
  StepOutput out;
  ASSERT_TRUE(b->Forward(plan, &out).ok());

  const kvmanager::BlockPair pairs[] = {{0, 0}, {1, 0}, {0, 1}, {2, 0}, {0, 2}};
  kvmanager::DistanceSums d[5];
  ASSERT_TRUE(b->ComputeDistanceSums(0, pairs, d).ok());
  EXPECT_EQ(d[0].k_diff_sq, 0.0);
  EXPECT_GT(d[0].k_norm_sq, 0.0);
  EXPECT_GT(d[0].v_norm_sq, 0.0);
  EXPECT_GT(d[1].k_diff_sq, 0.0);
  EXPECT_EQ(d[1].k_diff_sq, d[2].k_diff_sq);  // symmetric
  EXPECT_EQ(d[1].v_diff_sq, d[2].v_diff_sq);
  EXPECT_EQ(d[1].k_norm_sq, d[0].k_norm_sq);  // the reference's norm
  EXPECT_EQ(d[3].k_diff_sq, d[0].k_norm_sq);  // against an empty block
  EXPECT_EQ(d[4].k_norm_sq, 0.0);
  EXPECT_TRUE(std::isinf(d[4].RelativeK()));
  EXPECT_NEAR(d[1].RelativeK(), std::sqrt(d[1].k_diff_sq / d[0].k_norm_sq), 1e-12);
  // Group 1 holds the other layer: its own blocks.
  kvmanager::DistanceSums g1[1];
  const kvmanager::BlockPair p4[] = {{4, 4}};
  ASSERT_TRUE(b->ComputeDistanceSums(1, p4, g1).ok());
  EXPECT_GT(g1[0].k_norm_sq, 0.0);
  EXPECT_NE(g1[0].k_norm_sq, d[0].k_norm_sq);
  EXPECT_EQ(BlockNorm(*b, 0, 1), 0.0);

  const std::pair<int32_t, int32_t> copy[] = {{1, 6}, {0, 7}};
  ASSERT_TRUE(b->CopyBlocks(0, copy).ok());
  const kvmanager::BlockPair after[] = {{6, 1}, {7, 0}};
  kvmanager::DistanceSums a[2];
  ASSERT_TRUE(b->ComputeDistanceSums(0, after, a).ok());
  EXPECT_EQ(a[0].k_diff_sq + a[0].v_diff_sq, 0.0);
  EXPECT_EQ(a[1].k_diff_sq + a[1].v_diff_sq, 0.0);
  EXPECT_EQ(BlockNorm(*b, 6, 1), 0.0);  // the other group is untouched

  // Errors.
  const kvmanager::BlockPair bad[] = {{8, 0}};
  EXPECT_EQ(b->ComputeDistanceSums(0, bad, absl::MakeSpan(a, 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->ComputeDistanceSums(2, after, a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->ComputeDistanceSums(0, after, absl::MakeSpan(a, 1)).code(),
            absl::StatusCode::kInvalidArgument);
  const kvmanager::BlockPair bad_windows[] = {
      {0, 1, 8, 1}, {0, 1, -1, 2}, {0, 1, 2, 4}, {0, 1, 2, -1}};
  for (const kvmanager::BlockPair& p : bad_windows) {
    EXPECT_EQ(b->ComputeDistanceSums(0, absl::MakeConstSpan(&p, 1), absl::MakeSpan(a, 1)).code(),
              absl::StatusCode::kInvalidArgument)
        << p.reference_next << " " << p.shift;
  }
  const std::pair<int32_t, int32_t> bad_copy[] = {{0, 3}, {0, 8}};
  EXPECT_EQ(b->CopyBlocks(0, bad_copy).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockNorm(*b, 3), 0.0);  // the valid first copy did not happen either
  EXPECT_EQ(b->CopyBlocks(-1, copy).code(), absl::StatusCode::kInvalidArgument);
}

// A shifted reference is compared as its window: in layer 0, whose K/V
// depend on the token alone, the window over blocks 0 and 1 at shift s holds
// what a block written with those tokens holds, so every sum through the
// window equals the sum against that block, to the bit (same order).
TEST(CpuBackendTest, DistanceSumsThroughAShiftedWindow) {
  CpuBackend::Options o = DummyOptions(SmallConfig());
  o.num_layer_groups = 2;
  std::unique_ptr<CpuBackend> b = Make(o);
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t> text = {11, 12, 13, 14, 15, 16, 17, 18};
  for (int32_t shift = 1; shift < 4; ++shift) {
    StepPlan plan;
    plan.sequences.push_back(Chunk(0, text, {{0, 1}, {4, 5}}));
    plan.sequences.push_back(Chunk(0, {21, 22, 23, 24}, {{2}, {6}}));
    // The window's tokens, written by a sequence of their own.
    plan.sequences.push_back(
        Chunk(0, {text.begin() + shift, text.begin() + shift + 4}, {{3}, {7}}));
    plan.sequences[1].seq_id = 10;
    plan.sequences[2].seq_id = 11;
    StepOutput out;
    ASSERT_TRUE(b->Forward(plan, &out).ok());
    const kvmanager::BlockPair window[] = {{2, 0, 1, shift}, {3, 0, 1, shift}};
    const kvmanager::BlockPair copy[] = {{2, 3}, {3, 3}};
    kvmanager::DistanceSums w[2], c[2];
    ASSERT_TRUE(b->ComputeDistanceSums(0, window, w).ok());
    ASSERT_TRUE(b->ComputeDistanceSums(0, copy, c).ok());
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(w[i].k_diff_sq, c[i].k_diff_sq) << shift;
      EXPECT_EQ(w[i].k_norm_sq, c[i].k_norm_sq) << shift;
      EXPECT_EQ(w[i].v_diff_sq, c[i].v_diff_sq) << shift;
      EXPECT_EQ(w[i].v_norm_sq, c[i].v_norm_sq) << shift;
    }
    EXPECT_GT(w[0].k_diff_sq, 0.0);
    EXPECT_EQ(w[1].k_diff_sq + w[1].v_diff_sq, 0.0);
    // The negative control: another shift reads other slots.
    const kvmanager::BlockPair off[] = {{3, 0, 1, shift % 3 + 1}};
    ASSERT_TRUE(b->ComputeDistanceSums(0, off, absl::MakeSpan(w, 1)).ok());
    EXPECT_GT(w[0].k_diff_sq, 0.0);
    // Layer 1 (group 1) sees the context: the window is not the copy there.
    const kvmanager::BlockPair deep[] = {{7, 4, 5, shift}};
    ASSERT_TRUE(b->ComputeDistanceSums(1, deep, absl::MakeSpan(w, 1)).ok());
    EXPECT_GT(w[0].k_diff_sq, 0.0);
  }
}

}  // namespace
}  // namespace memshare::engine::cpu
