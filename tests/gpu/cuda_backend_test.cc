// The CUDA backend on models whose shapes take the tensor-core attention
// kernels (head_dim 64 and 128, 16-token blocks), against the CPU backend
// (the reference) on the same plans and checkpoints: prefill, chunked
// prefill mixed with decode, shared physical blocks, MemShare shifted views
// (in prefill, decode, mixed, graph and eager steps), long contexts (split
// decode), graph replay, device sampling, pipelined steps with fed tokens,
// block copies and distances
// (shifted reference windows too), and MemShare decisions.
//
// Checkpoints are written by the test in BF16, so both backends compute
// with the same weights; they differ only in the activations (fp32 on the
// CPU, bf16 here). Bound: relative L2 distance of each logits row
// ||cuda - cpu|| / ||cpu|| <= 2e-2. Why: bf16 keeps 8 significant bits
// (relative rounding up to 2^-9 ~ 2e-3); a layer rounds about eight
// tensors (normed input, QKV, attention output, O, residual, normed input,
// gate/up, SiLU-and-mul, down), each an independent relative error of that
// size, so two layers and the LM head accumulate ~sqrt(18) x 2e-3 ~ 8e-3
// (measured values are printed). A wrong slot, head, RoPE pair or missing
// bias moves the row by O(1).
#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/model/model_weights.h"
#include "engine/model/testing/checkpoint_writer.h"
#include "engine/model/weight_spec.h"
#include "gtest/gtest.h"
#include "kernels/dummy_weights.h"
#include "tests/gpu/backend_test_util.h"
#include "tests/gpu/gpu_test_util.h"

namespace memshare::engine::cuda {
namespace {

using ::memshare::testing::Argmax;
using ::memshare::testing::Chunk;
using ::memshare::testing::ChunkLike;
using ::memshare::testing::DeviceBuffer;
using ::memshare::testing::LogSumExp;
using ::memshare::testing::SetView;
using ::memshare::testing::Tables;
using ::memshare::testing::WithoutViews;
using model::Architecture;
using model::ModelConfig;

constexpr double kRelBound = 2e-2;

ModelConfig SmallConfig(Architecture arch, int head_dim, int heads, int kv_heads) {
  ModelConfig c;
  c.architecture = arch;
  c.architecture_name = arch == Architecture::kQwen2   ? "Qwen2ForCausalLM"
                        : arch == Architecture::kQwen3 ? "Qwen3ForCausalLM"
                                                       : "LlamaForCausalLM";
  c.vocab_size = 1000;
  c.hidden_size = 512;
  c.intermediate_size = 1024;
  c.num_layers = 2;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = arch == Architecture::kLlama ? 10000.0 : 1000000.0;
  c.max_position_embeddings = 4096;
  c.qkv_bias = arch == Architecture::kQwen2;
  c.qk_norm = arch == Architecture::kQwen3;
  return c;
}

// A BF16 checkpoint of `c`: matrices N(0, 0.05^2) (embedding N(0, 0.5^2)),
// norms 1 + N(0, 0.1^2), biases N(0, 0.1^2).
std::string WriteCheckpoint(const std::string& name, const ModelConfig& c, uint64_t seed) {
  namespace mt = model::testing;
  const std::string dir = mt::MakeTempDir(name);
  EXPECT_TRUE(mt::WriteFile(dir + "/config.json", mt::ConfigJson(c)).ok());
  absl::StatusOr<std::vector<model::WeightSpec>> specs = model::ListWeights(c);
  EXPECT_TRUE(specs.ok());
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<mt::RawTensor> tensors;
  for (const model::WeightSpec& s : *specs) {
    std::vector<float> v(s.LocalElements());
    const bool norm = s.shape.size() == 1 && s.name.find("norm") != std::string::npos;
    const bool bias = s.name.find("bias") != std::string::npos;
    const float std = norm || bias                                ? 0.1f
                      : s.name.find("embed") != std::string::npos ? 0.5f
                                                                  : 0.05f;
    for (float& x : v) x = (norm ? 1.f : 0.f) + std * normal(rng);
    tensors.push_back({s.name, "BF16", s.shape, mt::EncodeFloats(v, "BF16")});
  }
  EXPECT_TRUE(mt::WriteFile(dir + "/model.safetensors", mt::SerializeSafetensors(tensors)).ok());
  return dir;
}

CudaBackend::Options CudaOptions(const std::string& dir) {
  CudaBackend::Options o;
  o.model_dir = dir;
  o.num_blocks = 256;
  o.max_num_seqs = 8;
  o.max_num_batched_tokens = 1024;
  o.max_model_len = 1024;
  o.tune_gemms = false;
  return o;
}

std::unique_ptr<CudaBackend> MakeCuda(const CudaBackend::Options& o) {
  absl::StatusOr<std::unique_ptr<CudaBackend>> b = CudaBackend::Create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

std::unique_ptr<cpu::CpuBackend> MakeCpu(const std::string& dir, int groups = 1) {
  cpu::CpuBackend::Options o;
  o.model_dir = dir;
  o.num_blocks = 256;
  o.num_layer_groups = groups;
  o.num_threads = 8;
  absl::StatusOr<std::unique_ptr<cpu::CpuBackend>> b = cpu::CpuBackend::Create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

double RelL2(const float* a, const float* ref, int n) {
  double num = 0, den = 0;
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double{a[i]} - ref[i]) * (double{a[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return std::sqrt(num / den);
}

std::vector<int32_t> RandomTokens(int n, int vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// Runs `plan` on both backends and compares every logits row; returns the
// worst relative L2 distance.
double RunBoth(Backend& cuda, Backend& cpu, const StepPlan& plan, StepOutput* cpu_out,
               const std::string& what) {
  StepOutput og;
  const absl::Status sg = cuda.Forward(plan, &og);
  const absl::Status sc = cpu.Forward(plan, cpu_out);
  EXPECT_TRUE(sg.ok()) << what << ": " << sg;
  EXPECT_TRUE(sc.ok()) << what << ": " << sc;
  if (!sg.ok() || !sc.ok()) return INFINITY;
  EXPECT_EQ(og.rows, cpu_out->rows) << what;
  EXPECT_EQ(og.logits.size(), cpu_out->logits.size()) << what;
  if (og.logits.size() != cpu_out->logits.size()) return INFINITY;
  const int V = cuda.vocab_size();
  double worst = 0;
  for (size_t r = 0; r < og.rows.size(); ++r) {
    const double e = RelL2(og.logits.data() + r * V, cpu_out->logits.data() + r * V, V);
    EXPECT_LE(e, kRelBound) << what << " row " << r;
    worst = std::max(worst, e);
  }
  return worst;
}

struct Shape {
  const char* name;
  Architecture arch;
  int head_dim, heads, kv_heads;
};

class CudaVsCpuTest : public ::testing::TestWithParam<Shape> {};

// Prefill of A with B's first chunk; A's decode with B's last chunk; a
// sequence C whose first two blocks are A's (prefix sharing, read through
// its own table); decode steps of all three (graph bucket 4), one with a
// row that asks for no logits (eager decode); every row against the CPU.
// `skinny`: every decode-shaped GEMM on kernels/skinny_gemm (launched with
// programmatic dependent launch after the norm, attention and activation
// kernels, in the graphs too); with `fuse_norms`, the norms of steps of up
// to 64 tokens in those GEMMs' epilogues (the norm weights folded into the
// QKV, gate/up and LM-head weights). `long_max_model_len`: a 32,768-token
// max_model_len and one graph bucket of 8, so that the decode steps upload
// only the used prefix of their block tables' 2,048-entry rows (the eager
// steps between them rewrite the same device buffer with their own
// stride, so a stale or misplaced entry would be read).
void SamePlansSameLogits(const Shape& sh, SkinnyGemmMode skinny, bool fuse_norms = true,
                         bool long_max_model_len = false) {
  ModelConfig c = SmallConfig(sh.arch, sh.head_dim, sh.heads, sh.kv_heads);
  if (long_max_model_len) c.max_position_embeddings = 32768;
  const std::string dir =
      WriteCheckpoint(std::string(sh.name) + (long_max_model_len ? "_long" : ""), c, 7);
  CudaBackend::Options options = CudaOptions(dir);
  options.skinny_gemm = skinny;
  options.fuse_norms = fuse_norms;
  if (long_max_model_len) {
    options.max_model_len = 32768;
    options.cuda_graph_batch_sizes = {8};
  }
  std::unique_ptr<CudaBackend> cuda = MakeCuda(options);
  std::unique_ptr<cpu::CpuBackend> cpu = MakeCpu(dir);
  ASSERT_TRUE(cuda && cpu);
  std::mt19937 rng(11);
  const std::vector<int32_t> a = RandomTokens(40, c.vocab_size, rng);
  const std::vector<int32_t> b = RandomTokens(55, c.vocab_size, rng);
  const std::vector<int32_t> cc = RandomTokens(9, c.vocab_size, rng);
  const auto ta = Tables(1, 0, 8);   // blocks 0..7
  const auto tb = Tables(1, 20, 8);  // blocks 20..27
  // C: positions 0..31 are A's first two (full) blocks, then its own.
  const std::vector<std::vector<int32_t>> tc = {{0, 1, 40, 41, 42, 43}};
  const int V = cuda->vocab_size();
  double worst = 0;
  StepOutput o;
  StepPlan p1;
  p1.sequences.push_back(Chunk(1, 0, a, ta));
  p1.sequences.push_back(Chunk(2, 0, {b.begin(), b.begin() + 25}, tb, false));
  worst = std::max(worst, RunBoth(*cuda, *cpu, p1, &o, "prefill A + chunk of B"));
  int32_t na = Argmax(o.logits.data(), V);
  StepPlan p2;
  p2.sequences.push_back(Chunk(2, 25, {b.begin() + 25, b.end()}, tb));
  p2.sequences.push_back(Chunk(1, 40, {na}, ta));
  p2.sequences.push_back(Chunk(3, 32, cc, tc));
  worst = std::max(worst, RunBoth(*cuda, *cpu, p2, &o, "B's last chunk + A decode + C"));
  int32_t nb = Argmax(o.logits.data(), V);
  na = Argmax(o.logits.data() + V, V);
  int32_t nc = Argmax(o.logits.data() + 2 * V, V);
  int pa = 41, pb = 55, pc = 41;
  for (int step = 0; step < 6; ++step) {
    StepPlan p;
    p.sequences.push_back(Chunk(1, pa++, {na}, ta));
    p.sequences.push_back(Chunk(2, pb++, {nb}, tb, step != 3));  // step 3: eager decode
    p.sequences.push_back(Chunk(3, pc++, {nc}, tc));
    worst = std::max(worst, RunBoth(*cuda, *cpu, p, &o, "decode " + std::to_string(step)));
    const int rows = static_cast<int>(o.rows.size());
    na = Argmax(o.logits.data(), V);
    if (rows == 3) nb = Argmax(o.logits.data() + V, V);
    nc = Argmax(o.logits.data() + (rows - 1) * V, V);
  }
  EXPECT_EQ(cuda->graph_steps(), 5);
  EXPECT_EQ(cuda->eager_steps(), 3);
  EXPECT_EQ(cuda->compact_table_uploads(), long_max_model_len ? 5 : 0);
  if (skinny == SkinnyGemmMode::kAlways) {
    // At the graph bucket (4 rows) every norm but the first is in an
    // epilogue, or none is.
    const std::string choices = cuda->GemmChoices(4);
    EXPECT_NE(choices.find("o skinny"), std::string::npos) << choices;
    EXPECT_EQ(choices.find("+residual") != std::string::npos, fuse_norms) << choices;
    EXPECT_EQ(choices.find("lm_head skinny") != std::string::npos &&
                  choices.find("+rms", choices.find("lm_head")) != std::string::npos,
              fuse_norms)
        << choices;
  }
  std::printf("%s%s: worst relative L2 of a logits row vs CPU %.3g (bound %.3g)\n", sh.name,
              skinny != SkinnyGemmMode::kAlways ? ""
              : fuse_norms                      ? " (skinny GEMMs, norms in their epilogues)"
                                                : " (skinny GEMMs, norm kernels)",
              worst, kRelBound);
  if (long_max_model_len) std::printf("  (max_model_len 32768: block tables uploaded compact)\n");
}

TEST_P(CudaVsCpuTest, SamePlansSameLogits) {
  SamePlansSameLogits(GetParam(), SkinnyGemmMode::kOff);
}

TEST_P(CudaVsCpuTest, SamePlansSameLogitsLongMaxModelLen) {
  SamePlansSameLogits(GetParam(), SkinnyGemmMode::kOff, true, true);
}

TEST_P(CudaVsCpuTest, SamePlansSameLogitsSkinnyGemm) {
  SamePlansSameLogits(GetParam(), SkinnyGemmMode::kAlways);
}

TEST_P(CudaVsCpuTest, SamePlansSameLogitsSkinnyGemmNormKernels) {
  SamePlansSameLogits(GetParam(), SkinnyGemmMode::kAlways, /*fuse_norms=*/false);
}

// One long sequence (630 keys: the decode launch splits it into chunks and
// merges them), prefilled in two chunks, then decoded.
TEST_P(CudaVsCpuTest, LongContextSplitDecode) {
  const Shape sh = GetParam();
  const ModelConfig c = SmallConfig(sh.arch, sh.head_dim, sh.heads, sh.kv_heads);
  const std::string dir = WriteCheckpoint(std::string(sh.name) + "_long", c, 8);
  std::unique_ptr<CudaBackend> cuda = MakeCuda(CudaOptions(dir));
  std::unique_ptr<cpu::CpuBackend> cpu = MakeCpu(dir);
  ASSERT_TRUE(cuda && cpu);
  std::mt19937 rng(12);
  const std::vector<int32_t> t = RandomTokens(627, c.vocab_size, rng);
  const auto tables = Tables(1, 100, 40);
  StepOutput o;
  double worst = 0;
  StepPlan p1;
  p1.sequences.push_back(Chunk(1, 0, {t.begin(), t.begin() + 400}, tables, false));
  worst = std::max(worst, RunBoth(*cuda, *cpu, p1, &o, "chunk 1"));
  StepPlan p2;
  p2.sequences.push_back(Chunk(1, 400, {t.begin() + 400, t.end()}, tables));
  worst = std::max(worst, RunBoth(*cuda, *cpu, p2, &o, "chunk 2"));
  int pos = 627;
  for (int s = 0; s < 3; ++s) {
    StepPlan p;
    p.sequences.push_back(Chunk(1, pos++, {Argmax(o.logits.data(), cuda->vocab_size())}, tables));
    worst = std::max(worst, RunBoth(*cuda, *cpu, p, &o, "decode"));
  }
  std::printf("%s long: worst relative L2 vs CPU %.3g\n", sh.name, worst);
}

// Graph replay equals the same padded launches without a graph, bit for bit.
TEST_P(CudaVsCpuTest, GraphReplayEqualsEagerLaunches) {
  const Shape sh = GetParam();
  const ModelConfig c = SmallConfig(sh.arch, sh.head_dim, sh.heads, sh.kv_heads);
  const std::string dir = WriteCheckpoint(std::string(sh.name) + "_graph", c, 9);
  CudaBackend::Options og = CudaOptions(dir);
  CudaBackend::Options oe = og;
  oe.enable_cuda_graphs = false;
  std::unique_ptr<CudaBackend> graphs = MakeCuda(og);
  std::unique_ptr<CudaBackend> eager = MakeCuda(oe);
  ASSERT_TRUE(graphs && eager);
  std::mt19937 rng(13);
  std::vector<std::vector<float>> out[2];
  for (int k = 0; k < 2; ++k) {
    CudaBackend& b = k == 0 ? *graphs : *eager;
    std::vector<int32_t> next(3);
    StepOutput o;
    StepPlan prefill;
    for (int s = 0; s < 3; ++s) {
      std::mt19937 r(100 + s);
      prefill.sequences.push_back(
          Chunk(s, 0, RandomTokens(20 + 7 * s, c.vocab_size, r), Tables(1, 10 * s, 8)));
    }
    ASSERT_TRUE(b.Forward(prefill, &o).ok());
    for (int s = 0; s < 3; ++s) next[s] = Argmax(o.logits.data() + s * c.vocab_size, c.vocab_size);
    for (int step = 0; step < 5; ++step) {
      StepPlan p;
      for (int s = 0; s < 3; ++s) {
        p.sequences.push_back(Chunk(s, 20 + 7 * s + step, {next[s]}, Tables(1, 10 * s, 8)));
      }
      ASSERT_TRUE(b.Forward(p, &o).ok());
      out[k].push_back(o.logits);
      for (int s = 0; s < 3; ++s)
        next[s] = Argmax(o.logits.data() + s * c.vocab_size, c.vocab_size);
    }
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(graphs->graph_steps(), 5);
  EXPECT_EQ(eager->padded_decode_steps(), 5);
}

// MemShare shifted views in every kind of step. A is prefilled into blocks
// 0..3 (no views). Then A's logical block 3 becomes a view over its blocks
// 0 and 1 at shift 7, and B starts with two views over A's blocks (0, 1 at
// shift 3; 1, 2 at shift 12) followed by its own blocks: B's prefill chunks
// (after a prefix of views) run with A's decode tokens (mixed steps), then
// both decode (graph bucket 2, its views graph; one eager decode step).
// Every row against the CPU; last, the same decode on the CPU with the
// views read as plain blocks is far off (the check can fail).
// `long_max_model_len` as in SamePlansSameLogits: the three tables of the
// views graph's steps go up compact.
void ShiftedViewsSameLogits(const Shape& sh, bool long_max_model_len) {
  ModelConfig c = SmallConfig(sh.arch, sh.head_dim, sh.heads, sh.kv_heads);
  if (long_max_model_len) c.max_position_embeddings = 32768;
  const std::string dir = WriteCheckpoint(
      std::string(sh.name) + (long_max_model_len ? "_views_long" : "_views"), c, 17);
  CudaBackend::Options options = CudaOptions(dir);
  if (long_max_model_len) {
    options.max_model_len = 32768;
    options.cuda_graph_batch_sizes = {8};
  }
  std::unique_ptr<CudaBackend> cuda = MakeCuda(options);
  std::unique_ptr<cpu::CpuBackend> cpu = MakeCpu(dir);
  ASSERT_TRUE(cuda && cpu);
  std::mt19937 rng(31);
  const std::vector<int32_t> a = RandomTokens(64, c.vocab_size, rng);
  const std::vector<int32_t> b = RandomTokens(60, c.vocab_size, rng);
  const int V = cuda->vocab_size();
  SequenceChunk la = Chunk(1, 0, {}, Tables(1, 0, 8));  // blocks 0..7
  SequenceChunk lb = Chunk(2, 0, {}, {{0, 0, 42, 43, 44, 45}});
  SetView(lb, 0, 0, 0, 1, 3);
  SetView(lb, 0, 1, 1, 2, 12);
  double worst = 0;
  StepOutput o;
  StepPlan p1;
  p1.sequences.push_back(ChunkLike(la, 1, 0, a));
  worst = std::max(worst, RunBoth(*cuda, *cpu, p1, &o, "prefill A"));
  int32_t na = Argmax(o.logits.data(), V);
  SetView(la, 0, 3, 0, 1, 7);
  StepPlan p2;  // mixed: B's chunk after its views, A's decode through its view
  p2.sequences.push_back(ChunkLike(lb, 2, 32, {b.begin() + 32, b.begin() + 52}, false));
  p2.sequences.push_back(ChunkLike(la, 1, 64, {na}));
  worst = std::max(worst, RunBoth(*cuda, *cpu, p2, &o, "B chunk + A decode"));
  na = Argmax(o.logits.data(), V);
  StepPlan p3;
  p3.sequences.push_back(ChunkLike(la, 1, 65, {na}));
  p3.sequences.push_back(ChunkLike(lb, 2, 52, {b.begin() + 52, b.end()}));
  worst = std::max(worst, RunBoth(*cuda, *cpu, p3, &o, "A decode + B's last chunk"));
  na = Argmax(o.logits.data(), V);
  int32_t nb = Argmax(o.logits.data() + V, V);
  int pa = 66, pb = 60;
  for (int step = 0; step < 4; ++step) {
    StepPlan p;
    p.sequences.push_back(ChunkLike(la, 1, pa++, {na}));
    p.sequences.push_back(ChunkLike(lb, 2, pb++, {nb}, step != 3));  // step 3: eager decode
    worst = std::max(worst, RunBoth(*cuda, *cpu, p, &o, "decode " + std::to_string(step)));
    na = Argmax(o.logits.data(), V);
    if (o.rows.size() == 2) nb = Argmax(o.logits.data() + V, V);
  }
  EXPECT_EQ(cuda->graph_steps(), 3);
  EXPECT_EQ(cuda->view_steps(), 6);
  EXPECT_EQ(cuda->compact_table_uploads(), long_max_model_len ? 3 : 0);
  // The views matter: read as plain blocks, the CPU is far from the CUDA
  // backend's rows (a backend ignoring views would be that far).
  StepPlan last;
  last.sequences.push_back(ChunkLike(la, 1, pa, {na}));
  last.sequences.push_back(ChunkLike(lb, 2, pb, {nb}));
  StepOutput og, oc;
  ASSERT_TRUE(cuda->Forward(last, &og).ok());
  StepPlan plain = last;
  for (SequenceChunk& s : plain.sequences) s = WithoutViews(s);
  ASSERT_TRUE(cpu->Forward(plain, &oc).ok());
  for (int r = 0; r < 2; ++r) {
    const double e = RelL2(og.logits.data() + r * V, oc.logits.data() + r * V, V);
    EXPECT_GT(e, 2 * kRelBound) << "row " << r;
    std::printf("%s views: row %d against views read as plain blocks %.3g\n", sh.name, r, e);
  }
  std::printf("%s views%s: worst relative L2 of a logits row vs CPU %.3g (bound %.3g)\n", sh.name,
              long_max_model_len ? " (max_model_len 32768)" : "", worst, kRelBound);
}

TEST_P(CudaVsCpuTest, ShiftedViewsSameLogits) { ShiftedViewsSameLogits(GetParam(), false); }

TEST_P(CudaVsCpuTest, ShiftedViewsSameLogitsLongMaxModelLen) {
  ShiftedViewsSameLogits(GetParam(), true);
}

// With shifted views in the decode steps, graph replay (the views graph of
// the bucket) equals the same padded launches without a graph, bit for bit.
TEST_P(CudaVsCpuTest, ShiftedViewsGraphReplayEqualsEagerLaunches) {
  const Shape sh = GetParam();
  const ModelConfig c = SmallConfig(sh.arch, sh.head_dim, sh.heads, sh.kv_heads);
  const std::string dir = WriteCheckpoint(std::string(sh.name) + "_views_graph", c, 19);
  CudaBackend::Options og = CudaOptions(dir);
  CudaBackend::Options oe = og;
  oe.enable_cuda_graphs = false;
  std::unique_ptr<CudaBackend> graphs = MakeCuda(og);
  std::unique_ptr<CudaBackend> eager = MakeCuda(oe);
  ASSERT_TRUE(graphs && eager);
  // Sequence s owns blocks 10 s ..; 0 and 1 read a view over sequence 2's
  // first two blocks, 2 one over the first blocks of 0 and 1.
  std::vector<SequenceChunk> layout;
  for (int s = 0; s < 3; ++s) layout.push_back(Chunk(s, 0, {}, Tables(1, 10 * s, 8)));
  std::vector<std::vector<float>> out[2];
  for (int k = 0; k < 2; ++k) {
    CudaBackend& b = k == 0 ? *graphs : *eager;
    std::vector<SequenceChunk> views = layout;
    std::vector<int32_t> next(3);
    StepOutput o;
    StepPlan prefill;
    for (int s = 0; s < 3; ++s) {
      std::mt19937 r(200 + s);
      prefill.sequences.push_back(
          ChunkLike(layout[s], s, 0, RandomTokens(20 + 7 * s, c.vocab_size, r)));
    }
    ASSERT_TRUE(b.Forward(prefill, &o).ok());
    for (int s = 0; s < 3; ++s) next[s] = Argmax(o.logits.data() + s * c.vocab_size, c.vocab_size);
    SetView(views[0], 0, 0, 20, 21, 5);
    SetView(views[1], 0, 0, 20, 21, 11);
    SetView(views[2], 0, 1, 0, 10, 2);
    for (int step = 0; step < 5; ++step) {
      StepPlan p;
      for (int s = 0; s < 3; ++s)
        p.sequences.push_back(ChunkLike(views[s], s, 20 + 7 * s + step, {next[s]}));
      ASSERT_TRUE(b.Forward(p, &o).ok());
      out[k].push_back(o.logits);
      for (int s = 0; s < 3; ++s)
        next[s] = Argmax(o.logits.data() + s * c.vocab_size, c.vocab_size);
    }
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(graphs->graph_steps(), 5);
  EXPECT_EQ(graphs->view_steps(), 5);
  EXPECT_EQ(eager->padded_decode_steps(), 5);
  EXPECT_EQ(eager->view_steps(), 5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaVsCpuTest,
                         ::testing::Values(Shape{"qwen2_d64_g4", Architecture::kQwen2, 64, 8, 2},
                                           Shape{"qwen3_d128_g4", Architecture::kQwen3, 128, 8, 2},
                                           Shape{"llama_d128_mha", Architecture::kLlama, 128, 4, 4},
                                           Shape{"llama_d64_g16", Architecture::kLlama, 64, 16, 1}),
                         [](const ::testing::TestParamInfo<Shape>& i) {
                           return std::string(i.param.name);
                         });

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = SmallConfig(Architecture::kQwen2, 128, 8, 2);
    dir_ = WriteCheckpoint("backend_test", config_, 5);
    cuda_ = MakeCuda(CudaOptions(dir_));
    ASSERT_NE(cuda_, nullptr);
  }
  ModelConfig config_;
  std::string dir_;
  std::unique_ptr<CudaBackend> cuda_;
};

// Device sampling: greedy = argmax of the returned logits; logprob =
// logit - logsumexp of the raw row (also with penalties, which change the
// choice); u = 0 with top-k picks the lowest id among the k kept; rows
// without `sampling` keep their logits; with every row sampled and no
// return_logits no logits cross; where some rows ask for logits, only
// theirs cross, packed. The same decode plan runs four times
// (same tokens at the same positions: the KV slots are rewritten with the
// same values, so the raw logits repeat bit for bit).
TEST_F(CudaBackendTest, DeviceSampling) {
  const int V = cuda_->vocab_size();
  std::mt19937 rng(3);
  StepOutput o;
  StepPlan prefill;
  for (int s = 0; s < 4; ++s) {
    prefill.sequences.push_back(Chunk(s, 0, RandomTokens(30, V, rng), Tables(1, 8 * s, 4)));
  }
  ASSERT_TRUE(cuda_->Forward(prefill, &o).ok());
  EXPECT_TRUE(o.sampled_token_ids.empty());
  ASSERT_EQ(o.logits.size(), size_t(4) * V);
  std::vector<int32_t> next(4);
  for (int s = 0; s < 4; ++s) next[s] = Argmax(o.logits.data() + s * V, V);

  auto decode = [&](std::vector<std::optional<DeviceSampling>> sampling) {
    StepPlan p;
    for (int s = 0; s < 4; ++s) {
      p.sequences.push_back(Chunk(s, 30, {next[s]}, Tables(1, 8 * s, 4)));
      p.sequences.back().sampling = sampling[s];
    }
    const absl::Status st = cuda_->Forward(p, &o);
    EXPECT_TRUE(st.ok()) << st;
  };
  DeviceSampling greedy;  // no logits, no logprob
  DeviceSampling greedy_all = greedy;
  greedy_all.return_logits = true;
  greedy_all.return_logprob = true;
  DeviceSampling topk;
  topk.temperature = 0.8f;
  topk.top_k = 5;
  topk.uniform = 0.f;
  topk.return_logits = true;

  // Run 1: greedy with logits and logprob, top-k, and a host-sampled row
  // (every row's logits, in order).
  decode({greedy_all, topk, greedy_all, std::nullopt});
  ASSERT_EQ(o.sampled_token_ids.size(), 4u);
  ASSERT_EQ(o.logits.size(), size_t(4) * V);
  EXPECT_TRUE(o.logits_index.empty());
  const std::vector<float> run1 = o.logits;
  const std::vector<int32_t> sampled1 = o.sampled_token_ids;
  const float* l0 = run1.data();
  EXPECT_EQ(sampled1[0], Argmax(l0, V));
  EXPECT_NEAR(o.sampled_logprobs[0], l0[sampled1[0]] - LogSumExp(l0, V), 1e-3);
  const float* l1 = run1.data() + V;
  std::vector<int> ids(V);
  for (int i = 0; i < V; ++i) ids[i] = i;
  std::partial_sort(ids.begin(), ids.begin() + 5, ids.end(),
                    [&](int i, int j) { return l1[i] > l1[j]; });
  EXPECT_EQ(sampled1[1], *std::min_element(ids.begin(), ids.begin() + 5));
  EXPECT_TRUE(std::isnan(o.sampled_logprobs[1]));
  EXPECT_EQ(sampled1[2], Argmax(run1.data() + 2 * V, V));
  EXPECT_EQ(sampled1[3], -1);

  // Run 2: row 2's argmax is penalized (as if generated twice).
  const float* raw2 = run1.data() + 2 * V;
  const int32_t top = Argmax(raw2, V);
  DeviceSampling pen = greedy_all;
  pen.repetition_penalty = 4.f;
  pen.frequency_penalty = 1.f;
  pen.penalty_token_ids = {top};
  pen.penalty_counts = {2};
  std::vector<float> host(raw2, raw2 + V);
  host[top] = (host[top] > 0 ? host[top] / 4.f : host[top] * 4.f) - 2.f;
  // Only row 2 asks for its logits: they alone come down (packed).
  decode({greedy, greedy, pen, greedy});
  ASSERT_EQ(o.logits.size(), size_t(V));
  EXPECT_EQ(o.logits_index, (std::vector<int32_t>{-1, -1, 0, -1}));
  EXPECT_TRUE(o.HasRow(2));
  EXPECT_FALSE(o.HasRow(0));
  EXPECT_EQ(std::vector<float>(o.Row(2), o.Row(2) + V), std::vector<float>(raw2, raw2 + V));
  EXPECT_EQ(o.sampled_token_ids[2], Argmax(host.data(), V));
  EXPECT_NE(o.sampled_token_ids[2], top);
  EXPECT_NEAR(o.sampled_logprobs[2], raw2[o.sampled_token_ids[2]] - LogSumExp(raw2, V), 1e-3);

  // Run 3: every row sampled, no logits asked: none cross.
  decode({greedy, greedy, greedy, greedy});
  EXPECT_TRUE(o.logits.empty());
  ASSERT_EQ(o.sampled_token_ids.size(), 4u);
  for (int s = 0; s < 4; ++s) EXPECT_EQ(o.sampled_token_ids[s], Argmax(run1.data() + s * V, V));

  // Run 4: rows 0, 2 and 3 ask for their logits (two runs of rows): packed
  // in row order, each the same raw row as in run 1.
  DeviceSampling greedy_logits = greedy;
  greedy_logits.return_logits = true;
  decode({greedy_logits, greedy, greedy_logits, greedy_logits});
  ASSERT_EQ(o.logits.size(), size_t(3) * V);
  EXPECT_EQ(o.logits_index, (std::vector<int32_t>{0, -1, 1, 2}));
  for (int s : {0, 2, 3}) {
    EXPECT_EQ(std::vector<float>(o.Row(s), o.Row(s) + V),
              std::vector<float>(run1.data() + s * V, run1.data() + (s + 1) * V))
        << "row " << s;
  }
  EXPECT_GE(cuda_->graph_steps(), 3);
}

// Greedy rows without penalties, logprobs or logits in a decode bucket take
// their tokens from the LM head's greedy candidates (skinny GEMM epilogue),
// which stores no logits then: the same tokens as the argmax of the logits
// of the same step asked with logits; the next step that asks for logits
// gets this step's, not stale ones.
TEST(CudaGreedyCandidatesTest, SameTokensAsTheLogitsArgmax) {
  const ModelConfig c = SmallConfig(Architecture::kQwen2, 128, 8, 2);
  const std::string dir = WriteCheckpoint("greedy_candidates", c, 6);
  CudaBackend::Options options = CudaOptions(dir);
  options.skinny_gemm = SkinnyGemmMode::kAlways;
  std::unique_ptr<CudaBackend> cuda = MakeCuda(options);
  ASSERT_NE(cuda, nullptr);
  EXPECT_NE(cuda->GemmChoices(4).find("lm_head skinny"), std::string::npos) << cuda->GemmChoices(4);
  const int V = cuda->vocab_size();
  std::mt19937 rng(8);
  StepOutput o;
  StepPlan prefill;
  for (int s = 0; s < 4; ++s) {
    prefill.sequences.push_back(Chunk(s, 0, RandomTokens(20, V, rng), Tables(1, 8 * s, 4)));
  }
  ASSERT_TRUE(cuda->Forward(prefill, &o).ok());
  std::vector<int32_t> next(4);
  for (int s = 0; s < 4; ++s) next[s] = Argmax(o.logits.data() + s * V, V);
  auto decode = [&](int pos, const std::vector<int32_t>& tokens, bool logits) {
    StepPlan p;
    for (int s = 0; s < 4; ++s) {
      p.sequences.push_back(Chunk(s, pos, {tokens[s]}, Tables(1, 8 * s, 4)));
      DeviceSampling greedy;
      greedy.return_logits = logits;
      p.sequences.back().sampling = greedy;
    }
    const absl::Status st = cuda->Forward(p, &o);
    EXPECT_TRUE(st.ok()) << st;
  };
  decode(20, next, /*logits=*/true);
  ASSERT_EQ(o.logits.size(), size_t(4) * V);
  const std::vector<float> with_logits = o.logits;
  const std::vector<int32_t> sampled = o.sampled_token_ids;
  EXPECT_EQ(cuda->greedy_candidate_steps(), 0);
  decode(20, next, /*logits=*/false);  // the same step again, from the candidates
  EXPECT_TRUE(o.logits.empty());
  EXPECT_EQ(cuda->greedy_candidate_steps(), 1);
  ASSERT_EQ(o.sampled_token_ids.size(), 4u);
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(o.sampled_token_ids[s], sampled[s]) << "row " << s;
    EXPECT_EQ(o.sampled_token_ids[s], Argmax(with_logits.data() + s * V, V)) << "row " << s;
  }
  decode(21, sampled, /*logits=*/true);  // the next position, with logits again
  ASSERT_EQ(o.logits.size(), size_t(4) * V);
  EXPECT_EQ(cuda->greedy_candidate_steps(), 1);
  EXPECT_NE(o.logits, with_logits);
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(o.sampled_token_ids[s], Argmax(o.logits.data() + s * V, V)) << "row " << s;
  }
}

// Pipelined steps (Submit / Collect) whose decode chunks take the previous
// step's tokens on the device (fed_row) give the tokens, logprobs and
// logits of the same steps run one by one with the tokens passed from the
// host: through decode graphs (greedy candidates, sampled rows, logits in
// two steps in flight at once) and an eager step (a prefill chunk beside
// fed chunks in another order). The same positions are rewritten with the
// same tokens, so the runs must agree bit for bit. With the metadata
// uploaded by a copy-engine transfer or by a kernel.
void FedStepsEqualStepsRunOneByOne(bool upload_by_kernel) {
  const ModelConfig c = SmallConfig(Architecture::kQwen2, 128, 8, 2);
  const std::string dir = WriteCheckpoint("pipeline", c, 7);
  CudaBackend::Options options = CudaOptions(dir);
  options.skinny_gemm = SkinnyGemmMode::kAlways;  // greedy candidates in the graphs
  options.upload_by_kernel = upload_by_kernel;
  std::unique_ptr<CudaBackend> cuda = MakeCuda(options);
  ASSERT_NE(cuda, nullptr);
  ASSERT_TRUE(cuda->SupportsPipelining());
  const int V = cuda->vocab_size();
  std::mt19937 rng(11);
  StepOutput o;
  StepPlan prefill;
  for (int s = 0; s < 4; ++s) {
    prefill.sequences.push_back(Chunk(s, 0, RandomTokens(20, V, rng), Tables(1, 8 * s, 4)));
    prefill.sequences.back().sampling = DeviceSampling{};
  }
  ASSERT_TRUE(cuda->Forward(prefill, &o).ok());
  const std::vector<int32_t> first = o.sampled_token_ids;
  const std::vector<int32_t> prompt4 = RandomTokens(12, V, rng);

  // Step k's plan: sequences 0-3 decode at position 20 + k (greedy, but
  // sequence 3 samples at T 0.8, top-k 5 in odd steps; steps 2 and 3 ask row 0's logits
  // and logprob); step 4 also prefills sequence 4 and lists the decode
  // chunks in reverse. tokens[s]: the host's token for sequence s, or -1 to
  // feed it from the previous step's row prev_row[s].
  constexpr int kSteps = 7;
  auto plan = [&](int k, const std::vector<int32_t>& tokens, const std::vector<int>& prev_row) {
    StepPlan p;
    for (int i = 0; i < 4; ++i) {
      const int s = k == 4 ? 3 - i : i;
      SequenceChunk chunk = Chunk(s, 20 + k, {tokens[s] >= 0 ? tokens[s] : 0}, Tables(1, 8 * s, 4));
      if (tokens[s] < 0) chunk.fed_row = prev_row[s];
      DeviceSampling d;
      if (s == 3 && k % 2 == 1) {
        d.temperature = 0.8f;
        d.top_k = 5;
        d.uniform = 0.1f + 0.13f * k;
      }
      if (s == 0 && (k == 2 || k == 3)) d.return_logits = d.return_logprob = true;
      chunk.sampling = d;
      p.sequences.push_back(std::move(chunk));
    }
    if (k == 4) {
      p.sequences.push_back(Chunk(4, 0, prompt4, Tables(1, 32, 4)));
      p.sequences.back().compute_logits = false;
    }
    return p;
  };
  // Row of sequence s in step k's output.
  auto row_of = [](int k, int s) { return k == 4 ? 3 - s : s; };

  // One by one, tokens from the host.
  std::vector<std::vector<int32_t>> ref_tokens(kSteps, std::vector<int32_t>(4));
  std::vector<StepOutput> ref(kSteps);
  std::vector<int32_t> tokens = first;
  const int64_t graph_steps0 = cuda->graph_steps();
  const int64_t candidate_steps0 = cuda->greedy_candidate_steps();
  for (int k = 0; k < kSteps; ++k) {
    const absl::Status st = cuda->Forward(plan(k, tokens, {}), &ref[k]);
    ASSERT_TRUE(st.ok()) << "step " << k << ": " << st;
    for (int s = 0; s < 4; ++s) tokens[s] = ref[k].sampled_token_ids[row_of(k, s)];
    ref_tokens[k] = tokens;
  }
  const int64_t graph_steps = cuda->graph_steps() - graph_steps0;
  const int64_t candidate_steps = cuda->greedy_candidate_steps() - candidate_steps0;
  EXPECT_EQ(graph_steps, kSteps - 1);  // all but step 4
  EXPECT_EQ(candidate_steps, 2);       // steps 0 and 6

  // Pipelined: step k + 1 submitted before step k is collected, fed.
  std::vector<StepOutput> got(kSteps);
  ASSERT_TRUE(cuda->Submit(plan(0, first, {})).ok());
  for (int k = 1; k <= kSteps; ++k) {
    if (k < kSteps) {
      std::vector<int> prev(4);
      for (int s = 0; s < 4; ++s) prev[s] = row_of(k - 1, s);
      const absl::Status st = cuda->Submit(plan(k, {-1, -1, -1, -1}, prev));
      ASSERT_TRUE(st.ok()) << "step " << k << ": " << st;
    }
    ASSERT_TRUE(cuda->Collect(&got[k - 1]).ok());
  }
  EXPECT_EQ(cuda->graph_steps() - graph_steps0, 2 * graph_steps);
  EXPECT_EQ(cuda->greedy_candidate_steps() - candidate_steps0, 2 * candidate_steps);
  for (int k = 0; k < kSteps; ++k) {
    SCOPED_TRACE(::testing::Message() << "step " << k);
    EXPECT_EQ(got[k].rows, ref[k].rows);
    EXPECT_EQ(got[k].sampled_token_ids, ref[k].sampled_token_ids);
    ASSERT_EQ(got[k].sampled_logprobs.size(), ref[k].sampled_logprobs.size());
    for (size_t r = 0; r < got[k].sampled_logprobs.size(); ++r) {
      const float a = got[k].sampled_logprobs[r], b = ref[k].sampled_logprobs[r];
      EXPECT_TRUE((std::isnan(a) && std::isnan(b)) || a == b) << "row " << r;
    }
    EXPECT_EQ(got[k].logits, ref[k].logits);
    EXPECT_EQ(got[k].logits.empty(), k != 2 && k != 3);
  }
}

TEST(CudaPipelineTest, FedStepsEqualStepsRunOneByOne) { FedStepsEqualStepsRunOneByOne(false); }

TEST(CudaPipelineTest, FedStepsEqualStepsRunOneByOneUploadByKernel) {
  FedStepsEqualStepsRunOneByOne(true);
}

// Penalties under pipelined steps: a fed chunk's lists are a step behind
// (they lack the fed token) and count_fed_token counts it on the device.
// The same tokens as steps run one by one with complete lists from the
// host, and different from the same steps without penalties (so that the
// counts matter). Both ways of counting (a listed token, the placeholder)
// are checked on their own in sampling_test.
TEST(CudaPipelineTest, FedTokensCountInPenalties) {
  const ModelConfig c = SmallConfig(Architecture::kQwen2, 128, 8, 2);
  const std::string dir = WriteCheckpoint("pipeline_penalties", c, 9);
  std::unique_ptr<CudaBackend> cuda = MakeCuda(CudaOptions(dir));
  ASSERT_NE(cuda, nullptr);
  const int V = cuda->vocab_size();
  std::mt19937 rng(13);
  std::vector<std::vector<int32_t>> prompts(4);
  StepPlan prefill;
  for (int s = 0; s < 4; ++s) {
    prompts[s] = RandomTokens(20, V, rng);
    prefill.sequences.push_back(Chunk(s, 0, prompts[s], Tables(1, 8 * s, 4)));
    prefill.sequences.back().sampling = DeviceSampling{};
  }
  StepOutput o;
  ASSERT_TRUE(cuda->Forward(prefill, &o).ok());
  const std::vector<int32_t> first = o.sampled_token_ids;
  constexpr int kSteps = 8;
  // Lists of `generated` (prompt tokens with count 0, generated ones with
  // their counts), as the scheduler's Sampler keeps them.
  auto lists = [&](int s, const std::vector<int32_t>& generated, DeviceSampling* d) {
    std::map<int32_t, int32_t> count;
    for (int32_t t : prompts[s]) count[t] += 0;
    for (int32_t t : generated) ++count[t];
    d->penalty_token_ids.clear();
    d->penalty_counts.clear();
    for (const auto& [t, n] : count) {
      d->penalty_token_ids.push_back(t);
      d->penalty_counts.push_back(n);
    }
  };
  auto plan = [&](int k, const std::vector<std::vector<int32_t>>& generated, bool fed,
                  bool penalties) {
    StepPlan p;
    for (int s = 0; s < 4; ++s) {
      const int32_t token = fed ? 0 : generated[s].back();
      p.sequences.push_back(Chunk(s, 20 + k, {token}, Tables(1, 8 * s, 4)));
      SequenceChunk& chunk = p.sequences.back();
      if (fed) chunk.fed_row = s;
      DeviceSampling d;
      if (penalties) {
        d.repetition_penalty = 1.8f;
        d.frequency_penalty = 0.7f;
        d.presence_penalty = 0.5f;
        lists(s, generated[s], &d);
        d.count_fed_token = fed;
      }
      chunk.sampling = d;
    }
    return p;
  };
  auto run_one_by_one = [&](bool penalties) {
    std::vector<std::vector<int32_t>> generated(4);
    for (int s = 0; s < 4; ++s) generated[s] = {first[s]};
    for (int k = 0; k < kSteps; ++k) {
      StepOutput out;
      EXPECT_TRUE(cuda->Forward(plan(k, generated, false, penalties), &out).ok());
      for (int s = 0; s < 4; ++s) generated[s].push_back(out.sampled_token_ids[s]);
    }
    return generated;
  };
  const auto ref = run_one_by_one(true);
  const auto plain = run_one_by_one(false);
  EXPECT_NE(ref, plain) << "the penalties change nothing: pick stronger ones";

  // Pipelined: step k submitted before step k - 1 is collected, its lists
  // built from the tokens collected so far (a step behind).
  std::vector<std::vector<int32_t>> known(4);
  for (int s = 0; s < 4; ++s) known[s] = {first[s]};
  ASSERT_TRUE(cuda->Submit(plan(0, known, false, true)).ok());
  for (int k = 1; k <= kSteps; ++k) {
    if (k < kSteps) {
      const absl::Status st = cuda->Submit(plan(k, known, true, true));
      ASSERT_TRUE(st.ok()) << "step " << k << ": " << st;
    }
    StepOutput out;
    ASSERT_TRUE(cuda->Collect(&out).ok());
    for (int s = 0; s < 4; ++s) known[s].push_back(out.sampled_token_ids[s]);
  }
  EXPECT_EQ(known, ref);
}

// What Submit and Collect refuse: a third step in flight, Forward or graph
// replay with steps in flight, Collect with none, and fed chunks that name
// no fed token (no previous step, a row out of range, a row sampled on the
// host, more than one token); a refused Submit leaves the step in flight
// to be collected.
TEST_F(CudaBackendTest, PipelineRefusals) {
  const int V = cuda_->vocab_size();
  std::mt19937 rng(12);
  StepOutput o;
  EXPECT_EQ(cuda_->Collect(&o).code(), absl::StatusCode::kFailedPrecondition);
  StepPlan prefill;
  for (int s = 0; s < 2; ++s) {
    prefill.sequences.push_back(Chunk(s, 0, RandomTokens(10, V, rng), Tables(1, 8 * s, 4)));
  }
  prefill.sequences[0].sampling = DeviceSampling{};  // row 1: logits to the host
  auto fed = [&](int pos, int row0, int row1) {
    StepPlan p;
    p.sequences.push_back(Chunk(0, pos, {0}, Tables(1, 0, 4)));
    p.sequences.push_back(Chunk(1, pos, {0}, Tables(1, 8, 4)));
    p.sequences[0].fed_row = row0;
    p.sequences[1].fed_row = row1;
    for (SequenceChunk& c : p.sequences) c.sampling = DeviceSampling{};
    return p;
  };
  EXPECT_EQ(cuda_->Submit(fed(10, 0, 0)).code(), absl::StatusCode::kInvalidArgument)
      << "no previous step";
  ASSERT_TRUE(cuda_->Submit(prefill).ok());
  EXPECT_EQ(cuda_->Forward(prefill, &o).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cuda_->Submit(fed(10, 0, 1)).code(), absl::StatusCode::kInvalidArgument)
      << "row 1 was sampled on the host";
  EXPECT_EQ(cuda_->Submit(fed(10, 0, 2)).code(), absl::StatusCode::kInvalidArgument)
      << "row 2 of 2";
  StepPlan two = fed(10, 0, 0);
  two.sequences[0].token_ids = {0, 0};
  EXPECT_EQ(cuda_->Submit(two).code(), absl::StatusCode::kInvalidArgument) << "two fed tokens";
  ASSERT_TRUE(cuda_->Submit(fed(10, 0, 0)).ok());  // both from row 0
  EXPECT_EQ(cuda_->Submit(fed(11, 0, 1)).code(), absl::StatusCode::kFailedPrecondition)
      << "a third step in flight";
  EXPECT_EQ(cuda_->TimeGraphReplayForBenchmark(2, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(cuda_->Collect(&o).ok());
  ASSERT_EQ(o.sampled_token_ids.size(), 2u);
  ASSERT_EQ(o.logits.size(), size_t(V));  // row 1's alone, packed
  EXPECT_EQ(o.logits_index, (std::vector<int32_t>{-1, 0}));
  const int32_t token0 = o.sampled_token_ids[0];
  EXPECT_EQ(o.sampled_token_ids[1], -1);
  StepOutput fed_out;
  ASSERT_TRUE(cuda_->Collect(&fed_out).ok());
  EXPECT_EQ(cuda_->Collect(&o).code(), absl::StatusCode::kFailedPrecondition);
  // The fed step equals the same step with token0 passed from the host.
  StepPlan host = fed(10, 0, 0);
  for (SequenceChunk& c : host.sequences) {
    c.fed_row = -1;
    c.token_ids = {token0};
  }
  ASSERT_TRUE(cuda_->Forward(host, &o).ok());
  EXPECT_EQ(o.sampled_token_ids, fed_out.sampled_token_ids);
}

// Plans the backend must refuse, each with nothing run.
TEST_F(CudaBackendTest, RejectsBadPlans) {
  StepOutput o;
  auto expect_invalid = [&](const StepPlan& p, const char* what) {
    const absl::Status st = cuda_->Forward(p, &o);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
  };
  StepPlan p;
  p.sequences.push_back(
      Chunk(1, 0, {1, 2, static_cast<int32_t>(config_.vocab_size)}, Tables(1, 0, 1)));
  expect_invalid(p, "token outside the vocabulary");
  p.sequences[0] = Chunk(1, 1020, {1, 2, 3, 4, 5}, Tables(1, 0, 64));
  expect_invalid(p, "past max_model_len");
  p.sequences[0] = Chunk(1, 0, {1, 2}, Tables(1, 300, 1));
  expect_invalid(p, "block outside the pool");
  p.sequences[0] = Chunk(1, 0, {1, 2}, Tables(1, 0, 1));
  p.sequences.push_back(Chunk(2, 1, {3}, Tables(1, 0, 1)));
  expect_invalid(p, "two tokens write one slot");
  p.sequences.clear();
  for (int s = 0; s < 9; ++s) p.sequences.push_back(Chunk(s, 0, {1}, Tables(1, s, 1)));
  expect_invalid(p, "more sequences than max_num_seqs");
  p.sequences.clear();
  p.sequences.push_back(Chunk(1, 0, {1}, Tables(1, 0, 1)));
  p.sequences[0].sampling = DeviceSampling{};
  p.sequences[0].sampling->uniform = 1.f;
  expect_invalid(p, "uniform outside [0, 1)");
  p.sequences[0].sampling->uniform = 0.f;
  p.sequences[0].sampling->penalty_token_ids = {1};
  expect_invalid(p, "penalty counts missing");
  p.sequences[0].sampling->penalty_counts = {1};
  EXPECT_TRUE(cuda_->Forward(p, &o).ok());
}

// CopyBlocks copies whole blocks (distance 0 to the source afterwards) and
// refuses copies that would race; distance sums agree with the CPU
// backend's on the same prefill.
TEST_F(CudaBackendTest, CopyBlocksAndDistanceSums) {
  std::unique_ptr<cpu::CpuBackend> cpu = MakeCpu(dir_);
  ASSERT_NE(cpu, nullptr);
  std::mt19937 rng(4);
  StepPlan p;
  p.sequences.push_back(Chunk(1, 0, RandomTokens(64, config_.vocab_size, rng), Tables(1, 0, 4)));
  StepOutput o;
  ASSERT_TRUE(cuda_->Forward(p, &o).ok());
  ASSERT_TRUE(cpu->Forward(p, &o).ok());
  const std::vector<kvmanager::BlockPair> pairs = {{1, 0}, {2, 0}, {3, 1}, {3, 2}};
  std::vector<kvmanager::DistanceSums> dg(pairs.size()), dc(pairs.size());
  ASSERT_TRUE(cuda_->ComputeDistanceSums(0, pairs, absl::MakeSpan(dg)).ok());
  ASSERT_TRUE(cpu->ComputeDistanceSums(0, pairs, absl::MakeSpan(dc)).ok());
  for (size_t i = 0; i < pairs.size(); ++i) {
    EXPECT_NEAR(dg[i].RelativeK(), dc[i].RelativeK(), 0.05 * dc[i].RelativeK()) << i;
    EXPECT_NEAR(dg[i].RelativeV(), dc[i].RelativeV(), 0.05 * dc[i].RelativeV()) << i;
    EXPECT_NEAR(dg[i].k_norm_sq, dc[i].k_norm_sq, 0.05 * dc[i].k_norm_sq) << i;
    EXPECT_GT(dg[i].RelativeK(), 0.1) << i;  // different tokens, different blocks
  }
  const std::pair<int32_t, int32_t> copy[] = {{2, 50}, {3, 51}, {5, 5}};
  ASSERT_TRUE(cuda_->CopyBlocks(0, copy).ok());
  const kvmanager::BlockPair after[] = {{50, 2}, {51, 3}, {51, 2}};
  kvmanager::DistanceSums d[3];
  ASSERT_TRUE(cuda_->ComputeDistanceSums(0, after, d).ok());
  EXPECT_EQ(d[0].k_diff_sq, 0.0);
  EXPECT_EQ(d[0].v_diff_sq, 0.0);
  EXPECT_GT(d[0].k_norm_sq, 0.0);
  EXPECT_EQ(d[1].k_diff_sq, 0.0);
  EXPECT_FLOAT_EQ(d[2].RelativeK(), static_cast<float>(dg[3].RelativeK()));
  const std::pair<int32_t, int32_t> twice[] = {{1, 60}, {2, 60}};
  EXPECT_EQ(cuda_->CopyBlocks(0, twice).code(), absl::StatusCode::kInvalidArgument);
  const std::pair<int32_t, int32_t> chain[] = {{1, 60}, {60, 61}};
  EXPECT_EQ(cuda_->CopyBlocks(0, chain).code(), absl::StatusCode::kInvalidArgument);
  const std::pair<int32_t, int32_t> outside[] = {{1, 256}};
  EXPECT_EQ(cuda_->CopyBlocks(0, outside).code(), absl::StatusCode::kInvalidArgument);
  const kvmanager::BlockPair bad[] = {{0, 999}};
  EXPECT_EQ(cuda_->ComputeDistanceSums(0, bad, d).code(), absl::StatusCode::kInvalidArgument);
}

// Distance sums asked while pipelined steps are in flight run beside them
// (another stream) and give the sums computed with nothing in flight, bit
// for bit; a block copied just before (its copy queued behind the steps in
// flight) is seen copied.
TEST_F(CudaBackendTest, DistanceSumsBesideStepsInFlight) {
  std::mt19937 rng(14);
  StepPlan p;
  p.sequences.push_back(Chunk(1, 0, RandomTokens(64, config_.vocab_size, rng), Tables(1, 0, 4)));
  p.sequences[0].sampling = DeviceSampling{};
  StepOutput o;
  ASSERT_TRUE(cuda_->Forward(p, &o).ok());
  const std::vector<kvmanager::BlockPair> pairs = {{1, 0}, {2, 0}, {3, 1}, {3, 2}};
  std::vector<kvmanager::DistanceSums> idle(pairs.size()), beside(pairs.size());
  ASSERT_TRUE(cuda_->ComputeDistanceSums(0, pairs, absl::MakeSpan(idle)).ok());
  // Two decode steps of another sequence in flight (blocks 8..11), fed.
  StepPlan other;
  other.sequences.push_back(
      Chunk(2, 0, RandomTokens(40, config_.vocab_size, rng), Tables(1, 8, 4)));
  other.sequences[0].sampling = DeviceSampling{};
  ASSERT_TRUE(cuda_->Forward(other, &o).ok());
  StepPlan fed;
  fed.sequences.push_back(Chunk(2, 40, {0}, Tables(1, 8, 4)));
  fed.sequences[0].fed_row = 0;
  fed.sequences[0].sampling = DeviceSampling{};
  ASSERT_TRUE(cuda_->Submit(fed).ok());
  fed.sequences[0].start_pos = 41;
  ASSERT_TRUE(cuda_->Submit(fed).ok());
  ASSERT_TRUE(cuda_->ComputeDistanceSums(0, pairs, absl::MakeSpan(beside)).ok());
  for (size_t i = 0; i < pairs.size(); ++i) {
    EXPECT_EQ(beside[i].k_diff_sq, idle[i].k_diff_sq) << i;
    EXPECT_EQ(beside[i].v_diff_sq, idle[i].v_diff_sq) << i;
    EXPECT_EQ(beside[i].k_norm_sq, idle[i].k_norm_sq) << i;
    EXPECT_EQ(beside[i].v_norm_sq, idle[i].v_norm_sq) << i;
  }
  ASSERT_TRUE(cuda_->Collect(&o).ok());
  const std::pair<int32_t, int32_t> copy[] = {{2, 50}};
  ASSERT_TRUE(cuda_->CopyBlocks(0, copy).ok());  // behind the step still in flight
  const kvmanager::BlockPair after[] = {{50, 2}};
  kvmanager::DistanceSums d[1];
  ASSERT_TRUE(cuda_->ComputeDistanceSums(0, after, d).ok());
  EXPECT_EQ(d[0].k_diff_sq, 0.0);
  EXPECT_EQ(d[0].v_diff_sq, 0.0);
  EXPECT_GT(d[0].k_norm_sq, 0.0);
  ASSERT_TRUE(cuda_->Collect(&o).ok());
}

// Shifted reference windows (kvmanager::BlockPair::shift) against the CPU
// backend, one layer group per layer. The text's block 3 repeats tokens
// 7..22, so in layer 0 (K before RoPE is a function of the token alone) it
// equals the window over blocks 0 and 1 at shift 7: distance exactly 0 on
// both backends, while deeper layers differ; and a decode step that reads
// that block as the view gives the logits of the copy, bit for bit.
TEST(CudaShiftedWindowsTest, DistanceSumsMatchCpuAndEqualWindowsShareExactly) {
  const ModelConfig c = SmallConfig(Architecture::kQwen2, 128, 8, 2);
  const std::string dir = WriteCheckpoint("windows", c, 23);
  CudaBackend::Options oc = CudaOptions(dir);
  oc.num_layer_groups = 2;
  std::unique_ptr<CudaBackend> cuda = MakeCuda(oc);
  std::unique_ptr<cpu::CpuBackend> cpu = MakeCpu(dir, 2);
  ASSERT_TRUE(cuda && cpu);
  std::mt19937 rng(29);
  std::vector<int32_t> text = RandomTokens(48, c.vocab_size, rng);
  text.insert(text.end(), text.begin() + 7, text.begin() + 23);
  const std::vector<std::vector<int32_t>> tables = {{0, 1, 2, 3, 4}, {16, 17, 18, 19, 20}};
  StepPlan prefill;
  prefill.sequences.push_back(Chunk(1, 0, text, tables));
  StepOutput o;
  RunBoth(*cuda, *cpu, prefill, &o, "prefill");
  const int32_t next = Argmax(o.logits.data(), c.vocab_size);

  const std::vector<kvmanager::BlockPair> pairs = {{3, 0, 1, 7},  {3, 0, 1, 6}, {2, 0, 1, 9},
                                                   {3, 1, 2, 15}, {2, 1, 2, 1}, {1, 0, -1, 0}};
  std::vector<kvmanager::DistanceSums> dg(pairs.size()), dc(pairs.size());
  ASSERT_TRUE(cuda->ComputeDistanceSums(0, pairs, absl::MakeSpan(dg)).ok());
  ASSERT_TRUE(cpu->ComputeDistanceSums(0, pairs, absl::MakeSpan(dc)).ok());
  EXPECT_EQ(dg[0].k_diff_sq, 0.0);
  EXPECT_EQ(dg[0].v_diff_sq, 0.0);
  EXPECT_EQ(dc[0].k_diff_sq, 0.0);
  EXPECT_GT(dg[0].k_norm_sq, 0.0);
  for (size_t i = 0; i < pairs.size(); ++i) {
    std::printf("window pair %zu (shift %d): relative K %.4f (CPU %.4f), V %.4f (CPU %.4f)\n", i,
                pairs[i].shift, dg[i].RelativeK(), dc[i].RelativeK(), dg[i].RelativeV(),
                dc[i].RelativeV());
    EXPECT_NEAR(dg[i].k_norm_sq, dc[i].k_norm_sq, 0.05 * dc[i].k_norm_sq) << i;
    EXPECT_NEAR(dg[i].v_norm_sq, dc[i].v_norm_sq, 0.05 * dc[i].v_norm_sq) << i;
    EXPECT_NEAR(dg[i].RelativeK(), dc[i].RelativeK(), 0.05 * dc[i].RelativeK()) << i;
    EXPECT_NEAR(dg[i].RelativeV(), dc[i].RelativeV(), 0.05 * dc[i].RelativeV()) << i;
    if (i > 0) {
      EXPECT_GT(dg[i].RelativeK(), 0.1) << i;  // other tokens
    }
  }
  // Layer 1 sees the positions: the same window is not equal there.
  const kvmanager::BlockPair deep[] = {{19, 16, 17, 7}};
  kvmanager::DistanceSums dd[1];
  ASSERT_TRUE(cuda->ComputeDistanceSums(1, deep, dd).ok());
  EXPECT_GT(dd[0].RelativeK(), 1e-3);
  // Refused: shifts outside [0, 16), a window's second block outside the pool.
  kvmanager::DistanceSums d[1];
  for (const kvmanager::BlockPair& bad :
       {kvmanager::BlockPair{3, 0, 1, 16}, kvmanager::BlockPair{3, 0, 1, -1},
        kvmanager::BlockPair{3, 0, 256, 5}, kvmanager::BlockPair{3, 0, -1, 5}}) {
    const kvmanager::BlockPair one[] = {bad};
    EXPECT_EQ(cuda->ComputeDistanceSums(0, one, d).code(), absl::StatusCode::kInvalidArgument)
        << bad.reference_next << " " << bad.shift;
  }

  // Layer 0's logical block 3 read as the view, against its own copy; both
  // plans hold the same view in layer 1 (logical block 1), so both run the
  // same kernels.
  SequenceChunk copy = Chunk(1, 64, {next}, tables);
  SetView(copy, 1, 1, 16, 17, 4);
  SequenceChunk view = copy;
  SetView(view, 0, 3, 0, 1, 7);
  StepPlan with_copy, with_view;
  with_copy.sequences.push_back(copy);
  with_view.sequences.push_back(view);
  StepOutput oa, ob;
  ASSERT_TRUE(cuda->Forward(with_copy, &oa).ok());
  ASSERT_TRUE(cuda->Forward(with_view, &ob).ok());
  EXPECT_EQ(oa.logits, ob.logits);
  StepOutput oc1;
  ASSERT_TRUE(cpu->Forward(with_view, &oc1).ok());
  EXPECT_LE(RelL2(ob.logits.data(), oc1.logits.data(), c.vocab_size), kRelBound);
}

// Plans with views the backend must refuse (the rules of
// engine/plan_validation.h), nothing run.
TEST_F(CudaBackendTest, RejectsBadViews) {
  StepOutput o;
  SequenceChunk base = Chunk(1, 48, {5}, Tables(1, 0, 4));
  auto expect_invalid = [&](const SequenceChunk& c, const char* what) {
    StepPlan p;
    p.sequences.push_back(c);
    const absl::Status st = cuda_->Forward(p, &o);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
    EXPECT_NE(st.message().find(what), absl::string_view::npos) << st;
  };
  SequenceChunk c = base;
  SetView(c, 0, 1, 1, 2, 16);
  expect_invalid(c, "block_shifts[0][1] = 16");
  c = base;
  SetView(c, 0, 1, 1, 256, 3);
  expect_invalid(c, "block_tables_hi[0][1] = 256");
  c = base;
  SetView(c, 0, 3, 1, 2, 3);  // the block the decode token is written to
  expect_invalid(c, "is a shifted view but the step writes");
  c = base;
  SetView(c, 0, 1, 1, 2, 3);
  c.block_shifts[0].pop_back();
  expect_invalid(c, "block_tables_hi[0] / block_shifts[0] have 4 / 3 entries");
  c = base;
  SetView(c, 0, 1, 1, 2, 3);
  EXPECT_TRUE(cuda_->Forward(StepPlan{{c}}, &o).ok());
  EXPECT_EQ(cuda_->view_steps(), 1);
}

// MemShare on both backends: a prompt that repeats one block of text four
// times, one layer group per layer. Verification (relative K and V distance
// of each later block to the first, per group, threshold 0.1) takes the same
// decisions on both backends wherever the CPU distance is not within 0.02 of
// the threshold; remapping the accepted blocks, the next greedy steps give
// the same logits (within the bound) on both.
TEST(CudaMemShareTest, DecisionsAndOutputsMatchCpu) {
  const ModelConfig c = SmallConfig(Architecture::kQwen2, 128, 8, 2);
  const std::string dir = WriteCheckpoint("memshare", c, 6);
  CudaBackend::Options oc = CudaOptions(dir);
  oc.num_layer_groups = 2;
  std::unique_ptr<CudaBackend> cuda = MakeCuda(oc);
  std::unique_ptr<cpu::CpuBackend> cpu = MakeCpu(dir, 2);
  ASSERT_TRUE(cuda && cpu);
  std::mt19937 rng(21);
  const std::vector<int32_t> piece = RandomTokens(16, c.vocab_size, rng);
  std::vector<int32_t> text;
  for (int r = 0; r < 4; ++r) text.insert(text.end(), piece.begin(), piece.end());
  std::vector<std::vector<int32_t>> tables = {{0, 1, 2, 3, 4}, {16, 17, 18, 19, 20}};
  StepPlan prefill;
  prefill.sequences.push_back(Chunk(1, 0, text, tables));
  StepOutput o;
  RunBoth(*cuda, *cpu, prefill, &o, "prefill");
  int32_t next = Argmax(o.logits.data(), c.vocab_size);
  constexpr double kThreshold = 0.1;
  constexpr double kDistanceTolerance = 0.02;
  int accepted = 0, compared = 0;
  for (int g = 0; g < 2; ++g) {
    const std::vector<kvmanager::BlockPair> pairs = {
        {tables[g][1], tables[g][0]}, {tables[g][2], tables[g][0]}, {tables[g][3], tables[g][0]}};
    std::vector<kvmanager::DistanceSums> dg(3), dc(3);
    ASSERT_TRUE(cuda->ComputeDistanceSums(g, pairs, absl::MakeSpan(dg)).ok());
    ASSERT_TRUE(cpu->ComputeDistanceSums(g, pairs, absl::MakeSpan(dc)).ok());
    for (int i = 0; i < 3; ++i) {
      const double k_cpu = dc[i].RelativeK(), v_cpu = dc[i].RelativeV();
      const bool cpu_share = k_cpu < kThreshold && v_cpu < kThreshold;
      const bool cuda_share = dg[i].RelativeK() < kThreshold && dg[i].RelativeV() < kThreshold;
      std::printf("group %d pair %d: relative K %.4f (CPU %.4f), V %.4f (CPU %.4f)\n", g, i,
                  dg[i].RelativeK(), k_cpu, dg[i].RelativeV(), v_cpu);
      if (std::fabs(std::max(k_cpu, v_cpu) - kThreshold) > kDistanceTolerance) {
        EXPECT_EQ(cuda_share, cpu_share) << "group " << g << " pair " << i;
        ++compared;
      }
      if (cuda_share && cpu_share) {
        tables[g][i + 1] = tables[g][0];  // remap: the later block shares the first
        ++accepted;
      }
    }
  }
  EXPECT_GT(compared, 0);
  std::printf("MemShare: %d of 6 pairs accepted on both, %d decided away from the threshold\n",
              accepted, compared);
  int pos = 64;
  for (int step = 0; step < 4; ++step) {
    StepPlan p;
    p.sequences.push_back(Chunk(1, pos++, {next}, tables));
    RunBoth(*cuda, *cpu, p, &o, "decode after remap");
    next = Argmax(o.logits.data(), c.vocab_size);
  }
}

// The backend's dummy weights are ModelWeights::Dummy's, rounded to bf16
// (the draw is a function of seed, tensor name and index on both), and the
// two backends on the same dummy model agree within the bound.
TEST(CudaDummyWeightsTest, EqualModelWeightsDummy) {
  ModelConfig c = SmallConfig(Architecture::kQwen2, 64, 8, 2);
  model::ModelWeights::DummyOptions d;
  d.seed = 42;
  d.std = 0.05f;
  absl::StatusOr<std::unique_ptr<model::ModelWeights>> w = model::ModelWeights::Dummy(c, d);
  ASSERT_TRUE(w.ok()) << w.status();
  // The stream key of model_weights.cc: SplitMix64(seed ^ FNV-1a(name)).
  auto split_mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  auto fnv = [](const std::string& s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
    return h;
  };
  const std::vector<float>& emb = (*w)->embedding();
  DeviceBuffer<Bf16> out(emb.size());
  ASSERT_TRUE(kernels::LaunchDummyNormalBf16(split_mix(d.seed ^ fnv("model.embed_tokens.weight")),
                                             d.std, emb.size(), 0, emb.size(), 0, out.get(),
                                             nullptr)
                  .ok());
  const std::vector<Bf16> got = out.Download();
  int64_t differ = 0;
  for (size_t i = 0; i < emb.size(); ++i) differ += got[i].bits != FloatToBf16(emb[i]).bits;
  EXPECT_EQ(differ, 0) << "of " << emb.size();

  CudaBackend::Options o;
  o.load_format = model::LoadFormat::kDummy;
  o.config = c;
  o.dummy = d;
  o.num_blocks = 64;
  o.max_num_seqs = 4;
  o.max_num_batched_tokens = 256;
  o.max_model_len = 256;
  o.tune_gemms = false;
  std::unique_ptr<CudaBackend> cuda = MakeCuda(o);
  cpu::CpuBackend::Options co;
  co.num_blocks = 64;
  co.num_threads = 8;
  absl::StatusOr<std::unique_ptr<cpu::CpuBackend>> cpu =
      cpu::CpuBackend::Create(std::shared_ptr<const model::ModelWeights>(*std::move(w)), co);
  ASSERT_TRUE(cuda && cpu.ok());
  std::mt19937 rng(5);
  StepPlan p;
  p.sequences.push_back(Chunk(1, 0, RandomTokens(20, c.vocab_size, rng), Tables(1, 0, 2)));
  StepOutput out_cpu;
  // The CPU computes with the unrounded float weights: a little more error.
  const double e = RunBoth(*cuda, **cpu, p, &out_cpu, "dummy");
  std::printf("dummy weights: relative L2 vs CPU (fp32 weights) %.3g\n", e);
}

// gpu_memory_utilization sizes the pool from free memory.
TEST(CudaPoolSizeTest, SizedFromFreeMemory) {
  const ModelConfig c = SmallConfig(Architecture::kLlama, 128, 4, 4);
  CudaBackend::Options o;
  o.load_format = model::LoadFormat::kDummy;
  o.config = c;
  o.max_num_seqs = 4;
  o.max_num_batched_tokens = 64;
  o.max_model_len = 256;
  o.tune_gemms = false;
  o.enable_cuda_graphs = false;
  size_t free_before = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
  o.gpu_memory_utilization = 0.05 + (1.0 - double(free_before) / double(total));
  std::unique_ptr<CudaBackend> b = MakeCuda(o);
  ASSERT_NE(b, nullptr);
  // About 5 % of the card minus the 256 MiB reserve, weights and buffers.
  const double expect = 0.05 * double(total) - double(256 << 20);
  EXPECT_GT(b->kv_pool_bytes(), 0.8 * expect - double(b->weight_bytes()) - double(512 << 20));
  EXPECT_LT(b->kv_pool_bytes(), 1.01 * expect);
  EXPECT_GT(b->kv_spec().num_blocks, 1000);
  o.gpu_memory_utilization = 1e-4;
  EXPECT_EQ(CudaBackend::Create(o).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace memshare::engine::cuda
