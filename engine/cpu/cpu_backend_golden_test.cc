// The CPU backend against transformers 5.17 on the checkpoints of
// tests/data/golden (tools/golden/make_golden.py: greedy decode of six
// prompts per checkpoint, 20 steps, the top-8 logits at every step).
//
// Two references are recorded per step:
//   fp32    transformers as is;
//   bf16kv  transformers with K (before RoPE) and V rounded to bf16 where
//           they are produced: the same function this backend computes,
//           whose KV cache stores bf16.
//
// Tolerances, and why. D = max |bf16kv - fp32| over the checkpoint's steps,
// measured by the generator with transformers itself (2.7e-2 .. 5.4e-2 here,
// logits of magnitude 1..10): what bf16 storage of K and V costs, each
// cached element rounded by up to 2^-9 relative (8 significant bits).
//  * Greedy tokens must be identical, every step of every prompt (20 x 6).
//    The generator kept only seeds whose fp32 and bf16kv greedy paths agree
//    and whose smallest top-1/top-2 gap is >= 2e-3 (min_top2_gap).
//  * |ours - bf16kv| <= kEmuFraction * D + 1e-4. Both sides evaluate one
//    function in float32, but bf16 rounding is discontinuous: our float32
//    K/V differ from torch's by ~1e-6 relative (summation order), so a
//    fraction f ~ 1e-6 / 2^-8 ~ 3e-4 of the cached elements sit on the
//    other side of a rounding tie and round the other way. Each such flip
//    is one rounding error of the kind that makes up D, so the logits move
//    by about sqrt(f) * D ~ 0.02 D. Measured: 0.007 D .. 0.031 D (qwen2:
//    4e-6); perturbing rms_norm_eps by 1% moves our own logits by the same
//    amount. kEmuFraction = 0.1 leaves 3x margin and still fails an
//    implementation that caches K/V in float32 or rounds them elsewhere
//    (that differs from bf16kv by ~D).
//  * |ours - fp32| <= D + the bound above (triangle inequality).
//  * logsumexp over the whole vocabulary (recorded for both runs): the same
//    bounds, so every logit is checked, not only the top 8.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memshare::engine::cpu {
namespace {

constexpr double kEmuFraction = 0.1;
constexpr int kBlockSize = 16;

struct GoldenStep {
  std::vector<int> ids;
  std::vector<double> fp32;
  std::vector<double> bf16kv;
  double lse_fp32 = 0;
  double lse_bf16kv = 0;
};

struct GoldenPrompt {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
  std::vector<GoldenStep> steps;
};

struct Golden {
  std::string dir;
  double min_top2_gap = 0;
  double max_abs_diff_bf16kv_vs_fp32 = 0;
  std::vector<GoldenPrompt> prompts;
};

Golden ReadGolden(const std::string& name) {
  Golden g;
  g.dir = "tests/data/golden/" + name;
  std::ifstream in(g.dir + "/golden.json");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str());
  g.min_top2_gap = j.at("min_top2_gap").get<double>();
  g.max_abs_diff_bf16kv_vs_fp32 = j.at("max_abs_diff_bf16kv_vs_fp32").get<double>();
  for (const auto& p : j.at("prompts")) {
    GoldenPrompt gp;
    gp.prompt = p.at("prompt").get<std::vector<int32_t>>();
    gp.tokens = p.at("tokens").get<std::vector<int32_t>>();
    for (const auto& s : p.at("steps")) {
      GoldenStep st;
      st.ids = s.at("ids").get<std::vector<int>>();
      st.fp32 = s.at("fp32").get<std::vector<double>>();
      st.bf16kv = s.at("bf16kv").get<std::vector<double>>();
      st.lse_fp32 = s.at("lse_fp32").get<double>();
      st.lse_bf16kv = s.at("lse_bf16kv").get<double>();
      gp.steps.push_back(std::move(st));
    }
    g.prompts.push_back(std::move(gp));
  }
  return g;
}

std::unique_ptr<CpuBackend> MakeBackend(const std::string& dir, int groups = 1) {
  CpuBackend::Options o;
  o.model_dir = dir;
  o.num_blocks = 64;
  o.block_size = kBlockSize;
  o.num_layer_groups = groups;
  absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

int Argmax(const float* v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (v[i] > v[best]) best = i;
  }
  return best;
}

double LogSumExp(const float* v, int n) {
  double m = v[0];
  for (int i = 1; i < n; ++i) m = std::max(m, double{v[i]});
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(v[i] - m);
  return m + std::log(s);
}

// Block tables of one sequence: logical block b -> first_block + b, the same
// in every layer group, shifted by 16 per group (so groups really differ).
std::vector<std::vector<int32_t>> Tables(int groups, int first_block, int blocks) {
  std::vector<std::vector<int32_t>> t(groups);
  for (int g = 0; g < groups; ++g) {
    for (int b = 0; b < blocks; ++b) t[g].push_back(first_block + 16 * g + b);
  }
  return t;
}

SequenceChunk Chunk(uint64_t id, int start, std::vector<int32_t> tokens,
                    std::vector<std::vector<int32_t>> tables, bool logits = true) {
  SequenceChunk c;
  c.seq_id = id;
  c.start_pos = start;
  c.token_ids = std::move(tokens);
  c.block_tables = std::move(tables);
  c.compute_logits = logits;
  return c;
}

// Runs `prompt` (in prefill chunks of `chunk` tokens; 0: all at once), then
// greedy decode; returns the logits of every generated step.
std::vector<std::vector<float>> Generate(CpuBackend& b, const std::vector<int32_t>& prompt,
                                         int steps, int chunk = 0, int groups = 1,
                                         int first_block = 0) {
  const int V = b.vocab_size();
  const int total = static_cast<int>(prompt.size()) + steps;
  const auto tables = Tables(groups, first_block, (total + kBlockSize - 1) / kBlockSize);
  std::vector<std::vector<float>> out;
  int pos = 0;
  const int n = static_cast<int>(prompt.size());
  const int size = chunk > 0 ? chunk : n;
  StepOutput o;
  while (pos < n) {
    const int len = std::min(size, n - pos);
    StepPlan plan;
    plan.sequences.push_back(
        Chunk(1, pos, {prompt.begin() + pos, prompt.begin() + pos + len}, tables, pos + len == n));
    absl::Status st = b.Forward(plan, &o);
    EXPECT_TRUE(st.ok()) << st;
    pos += len;
  }
  EXPECT_EQ(o.rows.size(), 1u);
  out.emplace_back(o.logits.begin(), o.logits.end());
  for (int s = 1; s < steps; ++s) {
    const int32_t token = Argmax(out.back().data(), V);
    StepPlan plan;
    plan.sequences.push_back(Chunk(1, pos, {token}, tables));
    absl::Status st = b.Forward(plan, &o);
    EXPECT_TRUE(st.ok()) << st;
    ++pos;
    out.emplace_back(o.logits.begin(), o.logits.end());
  }
  return out;
}

class GoldenTest : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenTest, GreedyTokensAndLogitsMatchTransformers) {
  const Golden g = ReadGolden(GetParam());
  std::unique_ptr<CpuBackend> b = MakeBackend(g.dir);
  ASSERT_NE(b, nullptr);
  const int V = b->vocab_size();
  const double tol_emu = kEmuFraction * g.max_abs_diff_bf16kv_vs_fp32 + 1e-4;
  const double tol_fp32 = g.max_abs_diff_bf16kv_vs_fp32 + tol_emu;
  double worst_emu = 0, worst_fp32 = 0, worst_lse = 0;
  for (size_t p = 0; p < g.prompts.size(); ++p) {
    const GoldenPrompt& gp = g.prompts[p];
    const auto logits = Generate(*b, gp.prompt, static_cast<int>(gp.steps.size()));
    for (size_t s = 0; s < gp.steps.size(); ++s) {
      const float* l = logits[s].data();
      ASSERT_EQ(Argmax(l, V), gp.tokens[s]) << "prompt " << p << " step " << s;
      const GoldenStep& gs = gp.steps[s];
      for (size_t k = 0; k < gs.ids.size(); ++k) {
        const double ours = l[gs.ids[k]];
        EXPECT_NEAR(ours, gs.bf16kv[k], tol_emu) << "prompt " << p << " step " << s;
        EXPECT_NEAR(ours, gs.fp32[k], tol_fp32) << "prompt " << p << " step " << s;
        worst_emu = std::max(worst_emu, std::fabs(ours - gs.bf16kv[k]));
        worst_fp32 = std::max(worst_fp32, std::fabs(ours - gs.fp32[k]));
      }
      const double lse = LogSumExp(l, V);
      EXPECT_NEAR(lse, gs.lse_bf16kv, tol_emu);
      EXPECT_NEAR(lse, gs.lse_fp32, tol_fp32);
      worst_lse = std::max(worst_lse, std::fabs(lse - gs.lse_bf16kv));
    }
  }
  std::printf(
      "%s: D %.3g; max |ours - bf16kv| %.3g = %.3f D (logsumexp %.3g), bound %.3g; "
      "max |ours - fp32| %.3g, bound %.3g\n",
      GetParam(), g.max_abs_diff_bf16kv_vs_fp32, worst_emu,
      worst_emu / g.max_abs_diff_bf16kv_vs_fp32, worst_lse, tol_emu, worst_fp32, tol_fp32);
}

// Prefill in chunks (not aligned to blocks) gives the logits of one-shot
// prefill exactly: every token's computation is independent of the batch.
TEST_P(GoldenTest, ChunkedPrefillIsExact) {
  const Golden g = ReadGolden(GetParam());
  std::unique_ptr<CpuBackend> b = MakeBackend(g.dir);
  ASSERT_NE(b, nullptr);
  const GoldenPrompt& gp = g.prompts[3];  // 45 tokens
  ASSERT_EQ(gp.prompt.size(), 45u);
  const auto whole = Generate(*b, gp.prompt, 4);
  const auto chunked = Generate(*b, gp.prompt, 4, /*chunk=*/20);
  const auto tiny_chunks = Generate(*b, gp.prompt, 4, /*chunk=*/7);
  EXPECT_EQ(whole, chunked);
  EXPECT_EQ(whole, tiny_chunks);
  EXPECT_EQ(Argmax(chunked[0].data(), b->vocab_size()), gp.tokens[0]);
}

// Layer groups with different physical blocks per group compute the same.
TEST_P(GoldenTest, LayerGroupsGiveTheSameResult) {
  const Golden g = ReadGolden(GetParam());
  std::unique_ptr<CpuBackend> one = MakeBackend(g.dir, 1);
  std::unique_ptr<CpuBackend> two = MakeBackend(g.dir, 2);
  ASSERT_TRUE(one && two);
  EXPECT_EQ(two->kv_spec().num_layer_groups, 2);
  const GoldenPrompt& gp = g.prompts[5];
  EXPECT_EQ(Generate(*one, gp.prompt, 5), Generate(*two, gp.prompt, 5, 0, 2, /*first_block=*/3));
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GoldenTest,
                         ::testing::Values("llama_gqa", "llama_tied_llama3", "qwen2_bias",
                                           "qwen3_qknorm", "mistral_mha"));

// A prefill and a decode in one step give what each gives alone.
TEST(GoldenMixedBatchTest, PrefillAndDecodeInOneStep) {
  const Golden g = ReadGolden("qwen2_bias");
  std::unique_ptr<CpuBackend> b = MakeBackend(g.dir);
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t>& pa = g.prompts[4].prompt;  // 36 tokens, decoding
  const std::vector<int32_t>& pb = g.prompts[3].prompt;  // 45 tokens, prefilling
  const auto ta = Tables(1, 0, 3);
  const auto tb = Tables(1, 8, 3);
  // Alone.
  const auto alone_a = Generate(*b, pa, 2, 0, 1, 0);
  const auto alone_b = Generate(*b, pb, 1, 0, 1, 8);
  // Together: A's prefill alone, then A's decode step with B's prefill.
  StepOutput o;
  StepPlan first;
  first.sequences.push_back(Chunk(1, 0, pa, ta));
  ASSERT_TRUE(b->Forward(first, &o).ok());
  const int32_t next = Argmax(o.logits.data(), b->vocab_size());
  EXPECT_EQ(next, g.prompts[4].tokens[0]);
  StepPlan mixed;
  mixed.sequences.push_back(Chunk(2, 0, pb, tb));
  mixed.sequences.push_back(Chunk(1, 36, {next}, ta));
  ASSERT_TRUE(b->Forward(mixed, &o).ok());
  ASSERT_EQ(o.rows, (std::vector<int32_t>{0, 1}));
  const int V = b->vocab_size();
  EXPECT_EQ(std::vector<float>(o.logits.begin(), o.logits.begin() + V), alone_b[0]);
  EXPECT_EQ(std::vector<float>(o.logits.begin() + V, o.logits.end()), alone_a[1]);
}

// MemShare's premise, end to end: a block shared at another position gives
// exactly what its own copy gives, because K is cached before RoPE. With one
// layer group per layer, the text A A (A one block long) yields a layer-0
// block 1 that is bit-identical to block 0 (layer 0's K and V depend only on
// the token), while deeper layers differ (they see the context). Pointing
// layer 0's logical block 1 at physical block 0 changes no logit, bit for
// bit. A backend that cached rotated keys would see two different blocks.
TEST(GoldenSharedBlockTest, RepeatedTextSharesLayerZeroBlockExactly) {
  const Golden g = ReadGolden("llama_gqa");  // 3 layers
  std::unique_ptr<CpuBackend> b = MakeBackend(g.dir, /*groups=*/3);
  ASSERT_NE(b, nullptr);
  std::vector<int32_t> text = g.prompts[2].prompt;  // 16 tokens
  ASSERT_EQ(text.size(), 16u);
  text.insert(text.end(), g.prompts[2].prompt.begin(), g.prompts[2].prompt.end());
  const std::vector<std::vector<int32_t>> tables = {{0, 1, 2}, {16, 17, 18}, {32, 33, 34}};
  StepOutput o;
  StepPlan prefill;
  prefill.sequences.push_back(Chunk(1, 0, text, tables));
  ASSERT_TRUE(b->Forward(prefill, &o).ok());
  const int32_t next = Argmax(o.logits.data(), b->vocab_size());

  kvmanager::DistanceSums d[1];
  const kvmanager::BlockPair layer0[] = {{1, 0}};
  ASSERT_TRUE(b->ComputeDistanceSums(0, layer0, d).ok());
  EXPECT_EQ(d[0].k_diff_sq, 0.0);
  EXPECT_EQ(d[0].v_diff_sq, 0.0);
  EXPECT_GT(d[0].k_norm_sq, 0.0);
  const kvmanager::BlockPair layer1[] = {{17, 16}};
  ASSERT_TRUE(b->ComputeDistanceSums(1, layer1, d).ok());
  EXPECT_GT(d[0].RelativeK(), 1e-3);

  StepPlan separate;
  separate.sequences.push_back(Chunk(1, 32, {next}, tables));
  ASSERT_TRUE(b->Forward(separate, &o).ok());
  const std::vector<float> with_copies = o.logits;
  StepPlan shared;  // layer 0: logical block 1 -> physical 0; a fresh block for position 32
  shared.sequences.push_back(Chunk(1, 32, {next}, {{0, 0, 3}, {16, 17, 18}, {32, 33, 34}}));
  ASSERT_TRUE(b->Forward(shared, &o).ok());
  EXPECT_EQ(o.logits, with_copies);
}

// Shifted sharing, end to end: with one layer group per layer, the text
// A B where A is two blocks and B = A[s, s + 16) makes layer 0's block 2
// bit-identical to the window that starts s slots into block 0 (layer 0's K
// and V depend only on the token; K is cached before RoPE, so the window's
// keys rotate for block 2's positions as they are read). Making layer 0's
// logical block 2 a view over physical blocks 0 and 1 at shift s changes no
// logit of a decode step nor of a prefill chunk after it, bit for bit, while
// the view at a wrong shift does. The distance through the window is zero
// in layer 0, equals the distance against a materialized copy of the window
// to the bit, and is not zero in the deeper layers.
TEST(GoldenSharedBlockTest, ShiftedRepeatSharesLayerZeroWindowExactly) {
  const Golden g = ReadGolden("llama_gqa");  // 3 layers
  std::unique_ptr<CpuBackend> b = MakeBackend(g.dir, /*groups=*/3);
  ASSERT_NE(b, nullptr);
  const std::vector<int32_t>& p3 = g.prompts[3].prompt;  // 45 tokens
  ASSERT_GE(p3.size(), 32u);
  const std::vector<int32_t> a(p3.begin(), p3.begin() + 32);
  const std::vector<std::vector<int32_t>> tables = {
      {0, 1, 2, 3}, {16, 17, 18, 19}, {32, 33, 34, 35}};
  for (const int shift : {1, 5, 15}) {
    std::vector<int32_t> text = a;
    text.insert(text.end(), a.begin() + shift, a.begin() + shift + 16);  // 48 tokens
    StepOutput o;
    StepPlan prefill;
    prefill.sequences.push_back(Chunk(1, 0, text, tables));
    // The window's tokens alone, in block 5 of each group.
    prefill.sequences.push_back(
        Chunk(2, 0, {a.begin() + shift, a.begin() + shift + 16}, {{5}, {21}, {37}}, false));
    ASSERT_TRUE(b->Forward(prefill, &o).ok());
    const int32_t next = Argmax(o.logits.data(), b->vocab_size());

    kvmanager::DistanceSums d[2];
    const kvmanager::BlockPair layer0[] = {{2, 0, 1, shift}, {3, 0, 1, shift}};
    const kvmanager::BlockPair copy0[] = {{2, 5}, {3, 5}};
    ASSERT_TRUE(b->ComputeDistanceSums(0, layer0, d).ok());
    EXPECT_EQ(d[0].k_diff_sq, 0.0) << shift;
    EXPECT_EQ(d[0].v_diff_sq, 0.0) << shift;
    EXPECT_GT(d[0].k_norm_sq, 0.0);
    kvmanager::DistanceSums c[2];
    ASSERT_TRUE(b->ComputeDistanceSums(0, copy0, c).ok());
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(d[i].k_diff_sq, c[i].k_diff_sq) << shift;
      EXPECT_EQ(d[i].k_norm_sq, c[i].k_norm_sq) << shift;
      EXPECT_EQ(d[i].v_diff_sq, c[i].v_diff_sq) << shift;
      EXPECT_EQ(d[i].v_norm_sq, c[i].v_norm_sq) << shift;
    }
    EXPECT_GT(d[1].k_diff_sq, 0.0);  // block 3 (unwritten, zeros) is not the window
    const kvmanager::BlockPair layer1[] = {{18, 16, 17, shift}};
    ASSERT_TRUE(b->ComputeDistanceSums(1, layer1, absl::MakeSpan(d, 1)).ok());
    EXPECT_GT(d[0].RelativeK(), 1e-3);

    // A decode step and then a 3-token chunk, through copies and through
    // the view (a fresh block 4 takes positions 48.. in layer 0).
    auto run = [&](int view_shift) {
      std::vector<std::vector<float>> logits;
      SequenceChunk decode = Chunk(1, 48, {next}, tables);
      SequenceChunk chunk = Chunk(1, 49, {a[0], a[1], a[2]}, tables);
      for (SequenceChunk* c : {&decode, &chunk}) {
        if (view_shift > 0) {
          c->block_tables[0] = {0, 1, 0, 4};
          c->block_tables_hi = {{0, 1, 1, 4}, {}, {}};
          c->block_shifts = {{0, 0, view_shift, 0}, {}, {}};
        }
        StepPlan plan;
        plan.sequences.push_back(*c);
        EXPECT_TRUE(b->Forward(plan, &o).ok());
        logits.push_back(o.logits);
      }
      return logits;
    };
    const auto with_copies = run(0);
    EXPECT_EQ(run(shift), with_copies) << shift;
    EXPECT_NE(run(shift == 15 ? 14 : shift + 1), with_copies) << shift;
  }
}

}  // namespace
}  // namespace memshare::engine::cpu
