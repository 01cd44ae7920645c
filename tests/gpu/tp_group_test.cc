// Tensor parallelism on two GPUs, two processes, and on four where the
// machine has them (tagged gpu, multigpu; the TP=4 tests skip with fewer).
//
// The test process is rank 0 (device 0): it forms each group over the gRPC
// rendezvous (TpGroup), starts ranks 1.. as child processes of this same
// binary (`--tp_child=follower`, device = rank), and drives rank 0's
// GroupLeaderBackend exactly as the worker's scheduler would. A one-GPU
// CudaBackend on device 0 is the reference.
//
//   GoldenCheckpoints  the five golden checkpoints (query heads divisible by
//                      2; llama_tied_llama3 has one KV head, replicated on
//                      both ranks): logits within the bf16 tolerance of the
//                      CUDA golden test against transformers fp32, greedy
//                      tokens equal to TP=1's wherever no near-tie allows a
//                      flip, MemShare distances (all-reduced; shifted
//                      windows too) equal to TP=1's within rounding and
//                      the same decisions, decode steps reading shifted
//                      views (the plan broadcast carries them) close to
//                      TP=1's, a consistency check after every step.
//                      At TP=2 and TP=4 (llama_gqa's intermediate rows do
//                      not split into fours of multiples of 8: skipped).
//   Dummy7B            DeepSeek-R1-Distill-Qwen-7B shapes, dummy weights,
//                      batch of 4 (prefill, then decode from the CUDA
//                      graphs): the same comparisons, at TP=2 and TP=4.
//   ShardSampling      greedy device sampling on the vocabulary shards
//                      (no logits all-gather): the same tokens, bit for
//                      bit, as the sampler on the all-gathered logits of
//                      the same step, without and with penalties, in
//                      prefill (eager) and decode (graph) steps; and the
//                      same as one GPU's wherever no near-tie allows a
//                      flip. At TP=2 and TP=4.
//   Pipeline           pipelined steps (Submit / Collect, tokens fed on the
//                      device, penalties counting the fed token): the same
//                      tokens as the steps one by one. At TP=2 and TP=4.
//   KillFollower       rank 1 killed mid-run: rank 0's next steps fail
//                      within the collective timeout and its health() says
//                      why (the worker then reports NOT_SERVING).
//   KillLeader         rank 0 (a child too here) killed mid-run: rank 1
//                      exits with status 3 within the timeout.
//
// NCCL_NVLS_ENABLE=0 is set for this process and every child it starts.
// MEMSHARE_TP_NO_GRAPHS=1 runs the decode steps eagerly (no CUDA graphs).
#include "engine/parallel/tp_group.h"

#include <signal.h>
#include <sys/stat.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/parallel/group_follower.h"
#include "engine/parallel/group_leader_backend.h"
#include "gtest/gtest.h"
#include "tests/e2e/child_process.h"
#include "tests/gpu/backend_test_util.h"

namespace memshare::engine {
namespace {

using cuda::CudaBackend;
using ::memshare::testing::Argmax;
using ::memshare::testing::Generate;
using ::memshare::testing::Golden;
using ::memshare::testing::GoldenPrompt;
using ::memshare::testing::GoldenStep;
using ::memshare::testing::LogSumExp;
using ::memshare::testing::ReadGolden;
using ::memshare::testing::Top2Gap;

constexpr char kDummy7B[] = "dummy7b";

// config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-7B.
model::ModelConfig R1DistillQwen7B() {
  model::ModelConfig c;
  c.architecture = model::Architecture::kQwen2;
  c.architecture_name = "Qwen2ForCausalLM";
  c.vocab_size = 152064;
  c.hidden_size = 3584;
  c.intermediate_size = 18944;
  c.num_layers = 28;
  c.num_heads = 28;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 131072;
  c.tie_word_embeddings = false;
  c.qkv_bias = true;
  return c;
}

// The same options on every rank (but the rank, the device, the
// collectives).
CudaBackend::Options BackendOptions(const std::string& model, int device, int rank, int size,
                                    cuda::DeviceCollectives* collectives) {
  CudaBackend::Options o;
  if (model == kDummy7B) {
    o.load_format = model::LoadFormat::kDummy;
    o.config = R1DistillQwen7B();
    o.num_blocks = 512;
  } else {
    o.model_dir = ::memshare::testing::GoldenDir() + "/" + model;
    o.num_blocks = 128;
  }
  o.device = device;
  o.max_num_seqs = 8;
  o.max_num_batched_tokens = 512;
  o.max_model_len = 256;
  o.cuda_graph_batch_sizes = {1, 2, 4, 8};
  o.enable_cuda_graphs = ::memshare::testing::EnvOr("MEMSHARE_TP_NO_GRAPHS", "") != "1";
  o.tune_gemms = false;
  o.tp_rank = rank;
  o.tp_size = size;
  o.collectives = collectives;
  return o;
}

std::unique_ptr<CudaBackend> MakeBackend(const CudaBackend::Options& o) {
  absl::StatusOr<std::unique_ptr<CudaBackend>> b = CudaBackend::Create(o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

// ---------------------------------------------------------------- children

struct ChildArgs {
  std::string role;  // follower | leader
  std::string model;
  std::string leader;  // follower: rank 0's rendezvous
  std::string marker;  // leader: file created once it has run its steps
  int rank = 1;
  int world = 2;
  int timeout_ms = 20000;
};

ChildArgs ParseChild(int argc, char** argv) {
  ChildArgs a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    const size_t eq = s.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = s.substr(0, eq), v = s.substr(eq + 1);
    if (k == "--tp_child") a.role = v;
    if (k == "--model") a.model = v;
    if (k == "--leader") a.leader = v;
    if (k == "--marker") a.marker = v;
    if (k == "--rank") a.rank = std::atoi(v.c_str());
    if (k == "--world") a.world = std::atoi(v.c_str());
    if (k == "--timeout_ms") a.timeout_ms = std::atoi(v.c_str());
  }
  return a;
}

[[noreturn]] void ExitSoon(int code) {
  std::fflush(stderr);
  std::fflush(stdout);
  _exit(code);
}

int FollowerMain(const ChildArgs& a) {
  std::printf("tp_child: started\n");
  std::fflush(stdout);
  TpGroup::Options g;
  g.rank = a.rank;
  g.world_size = a.world;
  g.leader_address = a.leader;
  g.formation_timeout = absl::Seconds(60);
  g.collective_timeout = absl::Milliseconds(a.timeout_ms);
  absl::StatusOr<std::shared_ptr<TpGroup>> group = TpGroup::Form(g);
  if (!group.ok()) {
    std::fprintf(stderr, "tp_child rank %d: %s\n", a.rank, group.status().ToString().c_str());
    ExitSoon(1);
  }
  absl::StatusOr<std::unique_ptr<CudaBackend>> backend = CudaBackend::Create(
      BackendOptions(a.model, (*group)->cuda_device(), a.rank, a.world, &(*group)->nccl()));
  if (!backend.ok()) {
    std::fprintf(stderr, "tp_child rank %d: %s\n", a.rank, backend.status().ToString().c_str());
    ExitSoon(1);
  }
  absl::StatusOr<std::unique_ptr<GroupFollower>> follower =
      GroupFollower::Create(*std::move(backend), TpGroup::SharedCommunicator(*group));
  if (!follower.ok()) ExitSoon(1);
  const absl::Status s = (*follower)->Run();
  std::fprintf(stderr, "tp_child rank %d: %s after %ld steps, %ld checks\n", a.rank,
               s.ToString().c_str(), static_cast<long>((*follower)->steps()),
               static_cast<long>((*follower)->checks()));
  // Exit without tearing down: a broken group's teardown must not be what
  // the test waits for.
  ExitSoon(s.ok() ? 0 : 3);
}

// Rank 0 as a child (the kill-the-leader test): forms the group, runs a few
// steps, creates the marker file, then waits to be killed.
int LeaderMain(const ChildArgs& a) {
  TpGroup::Options g;
  g.rank = 0;
  g.world_size = a.world;
  g.listen_address = "127.0.0.1:0";
  g.formation_timeout = absl::Seconds(60);
  g.collective_timeout = absl::Milliseconds(a.timeout_ms);
  g.on_listening = [](int port) {
    std::printf("tp_child: leader port %d\n", port);
    std::fflush(stdout);
  };
  absl::StatusOr<std::shared_ptr<TpGroup>> group = TpGroup::Form(g);
  if (!group.ok()) ExitSoon(1);
  absl::StatusOr<std::unique_ptr<CudaBackend>> local = CudaBackend::Create(
      BackendOptions(a.model, (*group)->cuda_device(), 0, a.world, &(*group)->nccl()));
  if (!local.ok()) ExitSoon(1);
  GroupLeaderBackend::Options lo;
  lo.heartbeat_interval = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<GroupLeaderBackend>> leader =
      GroupLeaderBackend::Create(lo, *std::move(local), TpGroup::SharedCommunicator(*group));
  if (!leader.ok()) ExitSoon(1);
  std::vector<int32_t> prompt(20);
  for (int i = 0; i < 20; ++i) prompt[i] = (7 * i + 3) % 200;
  Generate(**leader, prompt, 8);
  if (FILE* f = std::fopen(a.marker.c_str(), "w")) std::fclose(f);
  while (true) absl::SleepFor(absl::Seconds(1));
}

// ------------------------------------------------------------ test harness

std::string SelfBinary() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  return n > 0 ? std::string(path, n) : std::string();
}

struct Group {
  std::shared_ptr<TpGroup> group;
  std::unique_ptr<e2e::ChildProcess> child;                   // rank 1
  std::vector<std::unique_ptr<e2e::ChildProcess>> children;  // ranks 2..
  std::unique_ptr<GroupLeaderBackend> leader;
  CudaBackend* shard = nullptr;  // rank 0's, inside the leader
};

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

// Forms a group of `world` with ranks 1.. in child processes, and rank 0's
// leader backend in this process.
Group FormGroup(const std::string& model, absl::Duration timeout,
                GroupLeaderBackend::Options leader_options, int world = 2) {
  Group out;
  TpGroup::Options g;
  g.rank = 0;
  g.world_size = world;
  g.listen_address = "127.0.0.1:0";
  g.formation_timeout = absl::Seconds(60);
  g.collective_timeout = timeout;
  g.on_listening = [&](int port) {
    for (int r = 1; r < world; ++r) {
      e2e::ChildProcess::Options c;
      c.binary = SelfBinary();
      c.args = {"--tp_child=follower",
                "--model=" + model,
                absl::StrCat("--leader=127.0.0.1:", port),
                absl::StrCat("--rank=", r),
                absl::StrCat("--world=", world),
                absl::StrCat("--timeout_ms=", absl::ToInt64Milliseconds(timeout))};
      c.ready_prefix = "tp_child: started";
      c.ready_timeout = absl::Seconds(30);
      absl::StatusOr<std::unique_ptr<e2e::ChildProcess>> child = e2e::ChildProcess::Start(c);
      EXPECT_TRUE(child.ok()) << child.status();
      if (!child.ok()) continue;
      if (r == 1) {
        out.child = *std::move(child);
      } else {
        out.children.push_back(*std::move(child));
      }
    }
  };
  absl::StatusOr<std::shared_ptr<TpGroup>> group = TpGroup::Form(g);
  EXPECT_TRUE(group.ok()) << group.status();
  if (!group.ok()) return out;
  out.group = *group;
  std::unique_ptr<CudaBackend> local =
      MakeBackend(BackendOptions(model, out.group->cuda_device(), 0, world, &out.group->nccl()));
  if (local == nullptr) return out;
  out.shard = local.get();
  absl::StatusOr<std::unique_ptr<GroupLeaderBackend>> leader = GroupLeaderBackend::Create(
      leader_options, std::move(local), TpGroup::SharedCommunicator(out.group));
  EXPECT_TRUE(leader.ok()) << leader.status();
  if (leader.ok()) out.leader = *std::move(leader);
  return out;
}

GroupLeaderBackend::Options CheckEveryStep() {
  GroupLeaderBackend::Options o;
  o.consistency_check_interval = 1;
  o.heartbeat_interval = absl::Milliseconds(500);
  return o;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

double RelL2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < ref.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : 0;
}

// Top-1 minus top-2 of a logits row.
double RowGap(const std::vector<float>& v) {
  double a = -INFINITY, b = -INFINITY;
  for (float x : v) {
    if (x > a) {
      b = a;
      a = x;
    } else if (x > b) {
      b = x;
    }
  }
  return a - b;
}

// A prompt of `period` random tokens repeated `times` times: blocks of
// nearly the same content at different positions (MemShare's material).
std::vector<int32_t> RepeatedPrompt(int vocab, int period, int times, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> base(period);
  for (int32_t& t : base) t = static_cast<int32_t>(rng() % vocab);
  std::vector<int32_t> p;
  for (int i = 0; i < times; ++i) p.insert(p.end(), base.begin(), base.end());
  return p;
}

// Prefills the repeated prompt (blocks 0..3 of layer group 0) on both
// backends and compares the distances of every pair of its blocks and of
// some shifted windows: the all-reduced sums of the group against one
// GPU's.
void CompareDistances(Backend& one, Backend& group, int vocab) {
  const std::vector<int32_t> prompt = RepeatedPrompt(vocab, 16, 4, 11);
  Generate(one, prompt, 1);
  Generate(group, prompt, 1);
  std::vector<kvmanager::BlockPair> pairs;
  for (int c = 1; c < 4; ++c) {
    for (int r = 0; r < c; ++r) pairs.push_back({c, r});
  }
  pairs.push_back({3, 0, 1, 5});
  pairs.push_back({3, 1, 2, 15});
  pairs.push_back({2, 0, 1, 1});
  std::vector<kvmanager::DistanceSums> s1(pairs.size()), s2(pairs.size());
  ASSERT_TRUE(one.ComputeDistanceSums(0, pairs, absl::MakeSpan(s1)).ok());
  ASSERT_TRUE(group.ComputeDistanceSums(0, pairs, absl::MakeSpan(s2)).ok());
  constexpr double kTauKv = 0.2;  // the worker's default --tau_kv
  int same = 0, near = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    for (const auto& [d1, d2] : {std::pair{s1[i].RelativeK(), s2[i].RelativeK()},
                                 std::pair{s1[i].RelativeV(), s2[i].RelativeV()}}) {
      // Rounding of bf16 activations moves a distance by far less than the
      // distances between different content.
      EXPECT_NEAR(d2, d1, 0.02 + 0.05 * d1)
          << "pair " << pairs[i].candidate << "," << pairs[i].reference;
      if (std::fabs(d1 - kTauKv) < 0.02 + 0.05 * d1) {
        ++near;
      } else {
        EXPECT_EQ(d1 <= kTauKv, d2 <= kTauKv) << "decision of pair " << i;
        ++same;
      }
    }
    std::printf("  distance pair (%d,%d shift %d): K %.4f / %.4f  V %.4f / %.4f (TP=1 / group)\n",
                pairs[i].candidate, pairs[i].reference, pairs[i].shift, s1[i].RelativeK(),
                s2[i].RelativeK(), s1[i].RelativeV(), s2[i].RelativeV());
  }
  std::printf("  MemShare decisions at tau_kv %.2f: %d equal, %d too close to call\n", kTauKv, same,
              near);
}

// After CompareDistances: three decode steps whose block table reads two
// MemShare shifted views over the prompt's blocks (logical 1: blocks 0, 1
// at shift 5; logical 3: blocks 1, 2 at shift 9), fed TP=1's tokens. The
// views travel in the plan broadcast to rank 1, which must read them too:
// a rank reading plain blocks moves the logits by O(1).
void CompareViews(Backend& one, Backend& group, int vocab) {
  engine::SequenceChunk layout = ::memshare::testing::Chunk(1, 0, {}, {{0, 1, 2, 3, 4}});
  ::memshare::testing::SetView(layout, 0, 1, 0, 1, 5);
  ::memshare::testing::SetView(layout, 0, 3, 1, 2, 9);
  int32_t token = 7;
  double worst = 0;
  for (int s = 0; s < 3; ++s) {
    StepPlan plan;
    plan.sequences.push_back(::memshare::testing::ChunkLike(layout, 1, 64 + s, {token}));
    StepOutput o1, o2;
    ASSERT_TRUE(one.Forward(plan, &o1).ok());
    const absl::Status st = group.Forward(plan, &o2);
    ASSERT_TRUE(st.ok()) << st;
    const double rel = RelL2(o2.logits, o1.logits);
    EXPECT_LE(rel, 0.1) << "view step " << s;
    worst = std::max(worst, rel);
    token = Argmax(o1.logits.data(), vocab);
  }
  std::printf("  decode through shifted views: group vs TP=1 max rel L2 %.2e\n", worst);
}

// Stops the group: the leader's shutdown reaches ranks 1.., which exit 0.
void Shutdown(Group& g) {
  g.leader.reset();
  std::vector<e2e::ChildProcess*> all;
  if (g.child != nullptr) all.push_back(g.child.get());
  for (auto& c : g.children) all.push_back(c.get());
  for (e2e::ChildProcess* c : all) {
    absl::StatusOr<int> code = c->Wait(absl::Seconds(30));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0);
  }
}

class TpGoldenTest : public ::testing::TestWithParam<const char*> {};

void RunGolden(const char* name, int world) {
  const Golden g = ReadGolden(name);
  ASSERT_FALSE(g.prompts.empty());
  ASSERT_GT(g.max_abs_diff_bf16_vs_fp32, 0) << "no golden_bf16.json";
  const double tol = 2 * g.max_abs_diff_bf16_vs_fp32;
  std::unique_ptr<CudaBackend> one = MakeBackend(BackendOptions(name, 0, 0, 1, nullptr));
  ASSERT_NE(one, nullptr);
  Group group = FormGroup(name, absl::Seconds(20), CheckEveryStep(), world);
  ASSERT_NE(group.leader, nullptr);
  Backend& two = *group.leader;
  const int V = two.vocab_size();
  double worst_fp32 = 0, worst_tp1 = 0;
  int steps = 0, same_forced = 0, decided = 0, identical_prompts = 0;
  for (size_t p = 0; p < g.prompts.size(); ++p) {
    const GoldenPrompt& gp = g.prompts[p];
    const int n = static_cast<int>(gp.steps.size());
    const auto f1 = Generate(*one, gp.prompt, n, &gp.tokens);
    const auto f2 = Generate(two, gp.prompt, n, &gp.tokens);
    ASSERT_EQ(static_cast<int>(f2.size()), n);
    for (int s = 0; s < n; ++s) {
      const GoldenStep& gs = gp.steps[s];
      for (size_t k = 0; k < gs.ids.size(); ++k) {
        const double err = std::fabs(f2[s][gs.ids[k]] - gs.fp32[k]);
        EXPECT_LE(err, tol) << "prompt " << p << " step " << s << " id " << gs.ids[k];
        worst_fp32 = std::max(worst_fp32, err);
      }
      EXPECT_NEAR(LogSumExp(f2[s].data(), V), gs.lse_fp32, tol) << "prompt " << p << " step " << s;
      worst_tp1 = std::max(worst_tp1, MaxAbsDiff(f2[s], f1[s]));
      ++steps;
      same_forced += Argmax(f2[s].data(), V) == Argmax(f1[s].data(), V);
      if (Top2Gap(gs.fp32) > 2 * tol) {
        ++decided;
        EXPECT_EQ(Argmax(f2[s].data(), V), gp.tokens[s]) << "prompt " << p << " step " << s;
      }
    }
    // Free-running greedy: the same tokens as one GPU until a step whose
    // top-2 gap is within the tolerance (a legitimate flip).
    const auto g1 = Generate(*one, gp.prompt, n);
    const auto g2 = Generate(two, gp.prompt, n);
    bool identical = true;
    for (int s = 0; s < n; ++s) {
      const int t1 = Argmax(g1[s].data(), V), t2 = Argmax(g2[s].data(), V);
      if (t1 != t2) {
        identical = false;
        EXPECT_LE(RowGap(g1[s]), 2 * tol) << "prompt " << p << " step " << s << ": TP=2 chose "
                                          << t2 << ", TP=1 " << t1 << " with a clear margin";
        break;
      }
    }
    identical_prompts += identical;
  }
  std::printf(
      "%s: TP=%d vs transformers fp32 max %.4f (bound %.4f = 2 D16); vs TP=1 max %.4f; "
      "forced argmax equal to TP=1 at %d of %d steps; %d of %d decided steps checked; "
      "free-running greedy identical to TP=1 for %d of %zu prompts\n",
      name, world, worst_fp32, tol, worst_tp1, same_forced, steps, decided, decided,
      identical_prompts, g.prompts.size());
  CompareDistances(*one, two, V);
  CompareViews(*one, two, V);
  EXPECT_TRUE(group.leader->CheckConsistency().ok());
  EXPECT_GT(group.leader->checks(), steps);
  EXPECT_TRUE(group.leader->health().ok()) << group.leader->health();
  Shutdown(group);
}

TEST_P(TpGoldenTest, Tp2MatchesOneGpu) { RunGolden(GetParam(), 2); }

TEST_P(TpGoldenTest, Tp4MatchesOneGpu) {
  if (DeviceCount() < 4) GTEST_SKIP() << "fewer than four GPUs";
  if (std::string(GetParam()) == "llama_gqa") {
    GTEST_SKIP() << "intermediate_size 176 does not split into fours of multiples of 8";
  }
  RunGolden(GetParam(), 4);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, TpGoldenTest,
                         ::testing::Values("llama_gqa", "llama_tied_llama3", "mistral_mha",
                                           "qwen2_bias", "qwen3_qknorm"));

// Runs a batch: every prompt prefilled in one step, then `steps - 1` decode
// steps of the whole batch (from the decode graphs); feeds `feed[i][s]` when
// given, else the argmax. Returns logits[step][sequence].
std::vector<std::vector<std::vector<float>>> RunBatch(
    Backend& b, const std::vector<std::vector<int32_t>>& prompts, int steps,
    const std::vector<std::vector<int32_t>>* feed = nullptr) {
  const int n = static_cast<int>(prompts.size());
  const int V = b.vocab_size();
  std::vector<std::vector<std::vector<int32_t>>> tables(n);
  for (int i = 0; i < n; ++i) tables[i] = ::memshare::testing::Tables(1, 1 + 32 * i, 32);
  std::vector<std::vector<std::vector<float>>> out;
  std::vector<int32_t> pos(n);
  StepPlan plan;
  for (int i = 0; i < n; ++i) {
    plan.sequences.push_back(::memshare::testing::Chunk(i + 1, 0, prompts[i], tables[i]));
    pos[i] = static_cast<int32_t>(prompts[i].size());
  }
  for (int s = 0; s < steps; ++s) {
    StepOutput o;
    const absl::Status st = b.Forward(plan, &o);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return out;
    std::vector<std::vector<float>> rows(n);
    for (int i = 0; i < n; ++i)
      rows[i].assign(o.logits.begin() + size_t(i) * V, o.logits.begin() + size_t(i + 1) * V);
    out.push_back(rows);
    plan.sequences.clear();
    for (int i = 0; i < n; ++i) {
      const int32_t t = feed != nullptr ? (*feed)[i][s] : Argmax(rows[i].data(), V);
      plan.sequences.push_back(::memshare::testing::Chunk(i + 1, pos[i]++, {t}, tables[i]));
    }
  }
  return out;
}

void RunDummy7B(int world) {
  std::unique_ptr<CudaBackend> one = MakeBackend(BackendOptions(kDummy7B, 0, 0, 1, nullptr));
  ASSERT_NE(one, nullptr);
  Group group = FormGroup(kDummy7B, absl::Seconds(30), CheckEveryStep(), world);
  ASSERT_NE(group.leader, nullptr);
  Backend& two = *group.leader;
  const int V = two.vocab_size();
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> prompts(4, std::vector<int32_t>(48));
  for (auto& p : prompts) {
    for (int32_t& t : p) t = static_cast<int32_t>(rng() % V);
  }
  constexpr int kSteps = 24;
  const auto free1 = RunBatch(*one, prompts, kSteps);
  ASSERT_EQ(free1.size(), size_t{kSteps});
  std::vector<std::vector<int32_t>> tokens1(4);
  for (int s = 0; s < kSteps; ++s) {
    for (int i = 0; i < 4; ++i) tokens1[i].push_back(Argmax(free1[s][i].data(), V));
  }
  // Teacher-forced on TP=1's tokens: the logits of the same histories.
  const auto forced2 = RunBatch(two, prompts, kSteps, &tokens1);
  ASSERT_EQ(forced2.size(), size_t{kSteps});
  double worst_rel = 0, worst_abs = 0, min_gap = INFINITY;
  int flips = 0;
  for (int s = 0; s < kSteps; ++s) {
    for (int i = 0; i < 4; ++i) {
      const double rel = RelL2(forced2[s][i], free1[s][i]);
      const double diff = MaxAbsDiff(forced2[s][i], free1[s][i]);
      worst_rel = std::max(worst_rel, rel);
      worst_abs = std::max(worst_abs, diff);
      // A wrong shard (head, slice or all-reduce) moves logits by O(1): a
      // relative L2 near 1. bf16 rounding of the all-reduced partial sums
      // stays far below.
      EXPECT_LE(rel, 0.1) << "step " << s << " sequence " << i;
      const double gap = RowGap(free1[s][i]);
      min_gap = std::min(min_gap, gap);
      if (Argmax(forced2[s][i].data(), V) != tokens1[i][s]) {
        ++flips;
        // Only a near-tie may flip: a gap the rounding difference can cross.
        EXPECT_LE(gap, 2 * diff) << "step " << s << " sequence " << i;
      }
    }
  }
  // Free-running on the group: the same tokens until a near-tie.
  const auto free2 = RunBatch(two, prompts, kSteps);
  int identical = 0;
  for (int i = 0; i < 4; ++i) {
    int s = 0;
    while (s < kSteps && Argmax(free2[s][i].data(), V) == tokens1[i][s]) ++s;
    identical += s == kSteps;
    if (s < kSteps) {
      EXPECT_LE(RowGap(free1[s][i]), 2 * worst_abs)
          << "sequence " << i << " diverged at step " << s << " without a near-tie";
      std::printf("  sequence %d: first divergence at step %d (TP=1 top-2 gap %.4f)\n", i, s,
                  RowGap(free1[s][i]));
    }
  }
  std::printf(
      "R1-Distill-Qwen-7B dummy, TP=%d vs TP=1, batch 4 x %d steps: max rel L2 %.2e, "
      "max |diff| %.4f, smallest TP=1 top-2 gap %.4f; teacher-forced argmax flips %d of "
      "%d; free-running greedy identical for %d of 4 sequences\n",
      world, kSteps, worst_rel, worst_abs, min_gap, flips, kSteps * 4, identical);
  CompareDistances(*one, two, V);
  CompareViews(*one, two, V);
  EXPECT_TRUE(group.leader->CheckConsistency().ok());
  Shutdown(group);
}

TEST(TpDummy7BTest, Tp2MatchesOneGpu) { RunDummy7B(2); }

TEST(TpDummy7BTest, Tp4MatchesOneGpu) {
  if (DeviceCount() < 4) GTEST_SKIP() << "fewer than four GPUs";
  RunDummy7B(4);
}

// Greedy device sampling on the vocabulary shards (the default of a group
// on one host) against the sampler on the all-gathered logits of the same
// step (the same plan again with every row asking for its logits, which
// makes the step all-gather), without and with penalties (repetition,
// presence, frequency over each sequence's history), in the prefill step
// (eager) and decode steps (CUDA graphs); then against one GPU fed the same
// tokens: equal wherever no near-tie allows a flip.
// The sampler's penalties (kernels/sampling.h) applied to a row on the host.
std::vector<float> Penalized(std::vector<float> row, const DeviceSampling& d) {
  for (size_t k = 0; k < d.penalty_token_ids.size(); ++k) {
    float& x = row[d.penalty_token_ids[k]];
    if (d.repetition_penalty != 1.f) {
      x = x > 0.f ? x / d.repetition_penalty : x * d.repetition_penalty;
    }
    x -= d.presence_penalty * (d.penalty_counts[k] > 0 ? 1.f : 0.f) +
         d.frequency_penalty * d.penalty_counts[k];
  }
  return row;
}

void RunShardSampling(const std::string& model, int world) {
  std::unique_ptr<CudaBackend> one = MakeBackend(BackendOptions(model, 0, 0, 1, nullptr));
  ASSERT_NE(one, nullptr);
  Group group = FormGroup(model, absl::Seconds(30), CheckEveryStep(), world);
  ASSERT_NE(group.leader, nullptr);
  ASSERT_TRUE(group.group->nccl().samples_on_shards());
  Backend& two = *group.leader;
  const int V = two.vocab_size();
  constexpr int kSeqs = 4, kPrompt = 24, kSteps = 12;
  std::mt19937 rng(23);
  std::vector<std::vector<int32_t>> history(kSeqs);
  std::vector<std::vector<std::vector<int32_t>>> tables(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    for (int t = 0; t < kPrompt; ++t) history[i].push_back(static_cast<int32_t>(rng() % V));
    tables[i] = ::memshare::testing::Tables(1, 1 + 8 * i, 8);
  }
  // Sequence i's sampling: greedy, with penalties over its history (prompt
  // tokens count 0, generated ones their count) and over `pick` (this
  // step's unpenalized pick, so that the penalties move it; its count 1 at
  // least) when `penalized`.
  auto sampling = [&](int i, bool penalized, bool logits, int32_t pick) {
    DeviceSampling d;
    d.return_logits = logits;
    if (!penalized) return d;
    d.repetition_penalty = 1.7f;
    d.presence_penalty = 0.4f;
    d.frequency_penalty = 0.25f;
    std::map<int32_t, int32_t> count;
    for (size_t k = 0; k < history[i].size(); ++k) {
      count[history[i][k]] += k >= static_cast<size_t>(kPrompt) ? 1 : 0;
    }
    count[pick] = std::max(count[pick], 1);
    for (const auto& [t, c] : count) {
      d.penalty_token_ids.push_back(t);
      d.penalty_counts.push_back(c);
    }
    return d;
  };
  int compared = 0, with_penalty_changed = 0, flips = 0;
  double worst_diff = 0;
  for (int s = 0; s < kSteps; ++s) {
    std::vector<int32_t> shard_tokens[2];
    for (const bool penalized : {false, true}) {
      StepPlan plan[2];  // on shards; all-gathered
      for (int g = 0; g < 2; ++g) {
        for (int i = 0; i < kSeqs; ++i) {
          const int start = s == 0 ? 0 : kPrompt + s - 1;
          std::vector<int32_t> tokens(history[i].begin() + start, history[i].end());
          SequenceChunk c = ::memshare::testing::Chunk(i + 1, start, tokens, tables[i]);
          c.sampling = sampling(i, penalized, /*logits=*/g == 1,
                                penalized ? shard_tokens[0][i] : 0);
          plan[g].sequences.push_back(std::move(c));
        }
      }
      StepOutput shard, gathered, ref;
      const int64_t before = group.shard->shard_sampled_steps();
      absl::Status st = two.Forward(plan[0], &shard);
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_EQ(group.shard->shard_sampled_steps(), before + 1) << "step " << s;
      EXPECT_TRUE(shard.logits.empty());
      st = two.Forward(plan[1], &gathered);
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_EQ(group.shard->shard_sampled_steps(), before + 1) << "step " << s;
      ASSERT_EQ(shard.sampled_token_ids.size(), size_t{kSeqs});
      ASSERT_EQ(gathered.sampled_token_ids.size(), size_t{kSeqs});
      ASSERT_EQ(gathered.logits.size(), size_t{kSeqs} * V);
      // Bit for bit the sampler on whole rows: the same tokens.
      EXPECT_EQ(shard.sampled_token_ids, gathered.sampled_token_ids)
          << "step " << s << (penalized ? " with penalties" : "");
      shard_tokens[penalized] = shard.sampled_token_ids;
      // One GPU, the same histories.
      st = one->Forward(plan[1], &ref);
      ASSERT_TRUE(st.ok()) << st;
      for (int i = 0; i < kSeqs; ++i) {
        const std::vector<float> r1(ref.logits.begin() + size_t(i) * V,
                                    ref.logits.begin() + size_t(i + 1) * V);
        const std::vector<float> r2(gathered.logits.begin() + size_t(i) * V,
                                    gathered.logits.begin() + size_t(i + 1) * V);
        const double diff = MaxAbsDiff(r2, r1);
        worst_diff = std::max(worst_diff, diff);
        ++compared;
        const int32_t mine = shard.sampled_token_ids[i], theirs = ref.sampled_token_ids[i];
        if (mine != theirs) {
          ++flips;
          // Only a near-tie may flip: TP=1's penalized logits of the two
          // picks within what the rounding difference (times the
          // repetition penalty, at most) can cross.
          const std::vector<float> p1 = Penalized(r1, *plan[1].sequences[i].sampling);
          EXPECT_LE(p1[theirs] - p1[mine], 2 * 1.7 * diff)
              << "step " << s << " sequence " << i << ": TP=" << world << " chose " << mine
              << ", TP=1 " << theirs;
        }
      }
    }
    for (int i = 0; i < kSeqs; ++i) {
      with_penalty_changed += shard_tokens[0][i] != shard_tokens[1][i];
      history[i].push_back(shard_tokens[0][i]);
    }
  }
  // The penalties acted (on the shard holding each token).
  EXPECT_GT(with_penalty_changed, 0);
  std::printf(
      "%s: TP=%d greedy sampling on vocabulary shards = sampling the all-gathered logits at "
      "%d of %d rows (half with penalties, which changed %d picks); = TP=1 but %d near-tie "
      "flips (max |logit diff| %.4f)\n",
      model.c_str(), world, 2 * kSteps * kSeqs, 2 * kSteps * kSeqs, with_penalty_changed, flips,
      worst_diff);
  EXPECT_TRUE(group.leader->CheckConsistency().ok());
  Shutdown(group);
}

// Pipelined steps on the group (GroupLeaderBackend::Submit / Collect: step
// s + 1 submitted before step s is collected, its tokens fed on the device
// from step s's rows; every rank keeps two in flight), greedy on vocabulary
// shards, two of the four sequences with penalties whose lists lack the fed
// token (DeviceSampling::count_fed_token): exactly the tokens of the same
// steps run one by one with the tokens and complete lists from the host.
void RunPipelined(const std::string& model, int world) {
  Group group = FormGroup(model, absl::Seconds(30), CheckEveryStep(), world);
  ASSERT_NE(group.leader, nullptr);
  ASSERT_TRUE(group.group->nccl().samples_on_shards());
  ASSERT_TRUE(group.leader->SupportsPipelining());
  Backend& two = *group.leader;
  const int V = two.vocab_size();
  constexpr int kSeqs = 4, kPrompt = 24, kSteps = 10;
  std::mt19937 rng(31);
  std::vector<std::vector<int32_t>> prompts(kSeqs);
  for (auto& p : prompts) {
    for (int t = 0; t < kPrompt; ++t) p.push_back(static_cast<int32_t>(rng() % V));
  }
  // Step s of sequence i over `generated` (the tokens the host knows): the
  // prompt at s = 0, else one token at position kPrompt + s - 1, the host's
  // or (fed) the one step s - 1 sampled for row i.
  auto chunk = [&](int i, int s, const std::vector<int32_t>& generated, int first_block, bool fed) {
    const int start = s == 0 ? 0 : kPrompt + s - 1;
    std::vector<int32_t> tokens =
        s == 0 ? prompts[i] : std::vector<int32_t>{fed ? -1 : generated.back()};
    SequenceChunk c = ::memshare::testing::Chunk(
        i + 1, start, tokens, ::memshare::testing::Tables(1, first_block + 8 * i, 8));
    if (fed) c.fed_row = i;
    DeviceSampling d;  // greedy
    if (i % 2 == 1) {
      d.repetition_penalty = 1.6f;
      d.presence_penalty = 0.5f;
      d.frequency_penalty = 0.3f;
      std::map<int32_t, int32_t> count;
      for (int32_t t : prompts[i]) count[t] += 0;
      for (int32_t t : generated) count[t] += 1;
      for (const auto& [t, n] : count) {
        d.penalty_token_ids.push_back(t);
        d.penalty_counts.push_back(n);
      }
      d.count_fed_token = fed;  // the fed token is not in `generated` yet
    }
    c.sampling = d;
    return c;
  };
  // One by one, blocks 1 ..
  std::vector<std::vector<int32_t>> want(kSeqs);
  for (int s = 0; s < kSteps; ++s) {
    StepPlan plan;
    for (int i = 0; i < kSeqs; ++i) plan.sequences.push_back(chunk(i, s, want[i], 1, false));
    StepOutput out;
    const absl::Status st = two.Forward(plan, &out);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(out.sampled_token_ids.size(), size_t{kSeqs});
    for (int i = 0; i < kSeqs; ++i) want[i].push_back(out.sampled_token_ids[i]);
  }
  // Pipelined, blocks 33 ..: step s submitted while step s - 1 runs.
  std::vector<std::vector<int32_t>> got(kSeqs);
  const int64_t sharded = group.shard->shard_sampled_steps();
  for (int s = 0; s <= kSteps; ++s) {
    if (s < kSteps) {
      StepPlan plan;
      for (int i = 0; i < kSeqs; ++i) plan.sequences.push_back(chunk(i, s, got[i], 33, s > 0));
      const absl::Status st = two.Submit(plan);
      ASSERT_TRUE(st.ok()) << "step " << s << ": " << st;
    }
    if (s == 0) continue;
    StepOutput out;
    const absl::Status st = two.Collect(&out);
    ASSERT_TRUE(st.ok()) << "step " << s - 1 << ": " << st;
    ASSERT_EQ(out.sampled_token_ids.size(), size_t{kSeqs});
    for (int i = 0; i < kSeqs; ++i) got[i].push_back(out.sampled_token_ids[i]);
  }
  EXPECT_EQ(group.shard->shard_sampled_steps(), sharded + kSteps);
  for (int i = 0; i < kSeqs; ++i) EXPECT_EQ(got[i], want[i]) << "sequence " << i;
  std::printf("%s, TP=%d: %d pipelined steps of %d sequences (2 with penalties) equal one by one\n",
              model.c_str(), world, kSteps, kSeqs);
  EXPECT_TRUE(group.leader->CheckConsistency().ok());
  Shutdown(group);
}

TEST(TpPipelineTest, Tp2PipelinedStepsEqualOneByOne) {
  RunPipelined("qwen2_bias", 2);
  RunPipelined(kDummy7B, 2);
}

TEST(TpPipelineTest, Tp4PipelinedStepsEqualOneByOne) {
  if (DeviceCount() < 4) GTEST_SKIP() << "fewer than four GPUs";
  RunPipelined("qwen2_bias", 4);
  RunPipelined(kDummy7B, 4);
}

TEST(TpShardSamplingTest, Tp2GreedyOnShardsEqualsWholeRows) {
  RunShardSampling("qwen2_bias", 2);
  RunShardSampling(kDummy7B, 2);
}

TEST(TpShardSamplingTest, Tp4GreedyOnShardsEqualsWholeRows) {
  if (DeviceCount() < 4) GTEST_SKIP() << "fewer than four GPUs";
  RunShardSampling("qwen2_bias", 4);
  RunShardSampling(kDummy7B, 4);
}


TEST(TpFailureTest, KillingRank1MakesRank0FailWithinTheTimeout) {
  const absl::Duration timeout = absl::Seconds(3);
  GroupLeaderBackend::Options lo;
  lo.heartbeat_interval = absl::Milliseconds(250);
  Group group = FormGroup("qwen2_bias", timeout, lo);
  ASSERT_NE(group.leader, nullptr);
  std::vector<int32_t> prompt = RepeatedPrompt(640, 8, 3, 3);
  Generate(*group.leader, prompt, 6);
  ASSERT_TRUE(group.leader->health().ok());
  group.child->Signal(SIGKILL);
  const absl::Time kill = absl::Now();
  // Steps go on until one needs rank 1 (at once: every step all-reduces).
  absl::Status s;
  for (int k = 0; k < 20 && s.ok(); ++k) {
    StepPlan plan;
    plan.sequences.push_back(::memshare::testing::Chunk(9, k, {prompt[k % prompt.size()]},
                                                        ::memshare::testing::Tables(1, 40, 4)));
    StepOutput out;
    s = group.leader->Forward(plan, &out);
  }
  const absl::Duration took = absl::Now() - kill;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_FALSE(group.leader->health().ok());
  // The timeout, NCCL's abort (up to 2 s), then the way out.
  EXPECT_LT(took, timeout + absl::Seconds(6));
  std::printf("rank 1 killed: rank 0 failed after %s (collective timeout %s): %s\n",
              absl::FormatDuration(took).c_str(), absl::FormatDuration(timeout).c_str(),
              std::string(group.leader->health().message()).c_str());
  // Tearing the broken group down (the backend waits for its stream, whose
  // collectives NCCL's abort released), on a thread: a hang is reported,
  // not waited for.
  const absl::Time teardown = absl::Now();
  auto done = std::make_shared<absl::Notification>();
  std::thread([leader = group.leader.release(), done] {
    delete leader;
    done->Notify();
  }).detach();
  const bool torn_down = done->WaitForNotificationWithTimeout(absl::Seconds(10));
  EXPECT_TRUE(torn_down) << "rank 0's backend did not tear down within 10 s";
  std::printf("rank 0 teardown after the failure: %s\n",
              torn_down ? absl::FormatDuration(absl::Now() - teardown).c_str() : "hangs");
  // Still stuck: leave the group's remains alone (freeing device memory
  // would wait for the device); the binary _exits at the end.
  if (!torn_down) new std::shared_ptr<TpGroup>(std::move(group.group));
}

TEST(TpFailureTest, KillingRank0MakesRank1ExitWithinTheTimeout) {
  const absl::Duration timeout = absl::Seconds(3);
  const std::string marker = absl::StrCat("/tmp/tp_leader_stepped_", getpid());
  unlink(marker.c_str());
  e2e::ChildProcess::Options lo;
  lo.binary = SelfBinary();
  lo.args = {"--tp_child=leader", "--model=qwen2_bias", "--world=2", "--marker=" + marker,
             absl::StrCat("--timeout_ms=", absl::ToInt64Milliseconds(timeout))};
  lo.ready_prefix = "tp_child: leader port";
  absl::StatusOr<std::unique_ptr<e2e::ChildProcess>> leader = e2e::ChildProcess::Start(lo);
  ASSERT_TRUE(leader.ok()) << leader.status();
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      (*leader)->ready_line().substr((*leader)->ready_line().rfind(' ') + 1), &port));
  e2e::ChildProcess::Options fo;
  fo.binary = SelfBinary();
  fo.args = {"--tp_child=follower",
             "--model=qwen2_bias",
             absl::StrCat("--leader=127.0.0.1:", port),
             "--rank=1",
             "--world=2",
             absl::StrCat("--timeout_ms=", absl::ToInt64Milliseconds(timeout))};
  fo.ready_prefix = "tp_child: started";
  absl::StatusOr<std::unique_ptr<e2e::ChildProcess>> follower = e2e::ChildProcess::Start(fo);
  ASSERT_TRUE(follower.ok()) << follower.status();
  struct stat st;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (stat(marker.c_str(), &st) != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(stat(marker.c_str(), &st), 0) << "the leader child never ran its steps";
  EXPECT_TRUE((*follower)->running());
  (*leader)->Signal(SIGKILL);
  const absl::Time kill = absl::Now();
  absl::StatusOr<int> code = (*follower)->Wait(timeout + absl::Seconds(10));
  const absl::Duration took = absl::Now() - kill;
  ASSERT_TRUE(code.ok()) << "rank 1 still runs " << absl::FormatDuration(took)
                         << " after rank 0 was killed";
  EXPECT_EQ(*code, 3);
  // The timeout, NCCL's abort (up to 2 s), then the way out.
  EXPECT_LT(took, timeout + absl::Seconds(6));
  std::printf("rank 0 killed: rank 1 exited with status %d after %s (collective timeout %s)\n",
              *code, absl::FormatDuration(took).c_str(), absl::FormatDuration(timeout).c_str());
  unlink(marker.c_str());
}

}  // namespace
}  // namespace memshare::engine

int main(int argc, char** argv) {
  // Never NVLink multicast on the shared GPU hosts; children inherit it.
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]).rfind("--tp_child=", 0) == 0) {
      const memshare::engine::ChildArgs a = memshare::engine::ParseChild(argc, argv);
      return a.role == "leader" ? memshare::engine::LeaderMain(a)
                                : memshare::engine::FollowerMain(a);
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  // A group broken by the kill tests may leave NCCL's teardown thread
  // behind (nccl_communicator.h): do not let it hold up the exit.
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(rc);
}
