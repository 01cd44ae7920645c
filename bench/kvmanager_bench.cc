// Benchmarks of the KV bookkeeping (kvmanager/): what the scheduler thread
// spends on the paged KV store per step, without any K/V bytes. The block
// distance is a stand-in that accepts every pair at once (the backend's
// kernel time is not bookkeeping), so every aligned pair is remapped — the
// most bookkeeping a dedup pass can cause.
//
//   bazel run -c opt //bench:kvmanager_bench
//
// Results and the machine they were taken on: bench/RESULTS.md.
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "kvmanager/block_pool.h"
#include "kvmanager/block_table.h"
#include "kvmanager/kv_manager.h"

namespace memshare::kvmanager {
namespace {

constexpr int32_t kVocab = 5000;
constexpr int32_t kBlankLine = 0;  // ends a reasoning step
constexpr int32_t kStepTokens = 64;

// Decoded pieces by token id: " w<id>", and "\n\n" for the blank line.
const std::vector<std::string>& Pieces() {
  static const auto* pieces = [] {
    auto* p = new std::vector<std::string>(kVocab);
    (*p)[kBlankLine] = "\n\n";
    for (int32_t t = 1; t < kVocab; ++t) (*p)[t] = absl::StrCat(" w", t);
    return p;
  }();
  return *pieces;
}

// Reasoning steps of 63 tokens and a blank line, each a copy of one of
// `templates` fixed passages with a fraction of its tokens replaced: a trace
// that keeps revisiting the same few thoughts. With max_lead > 0 each step
// starts with 0 .. max_lead - 1 fresh words ("Let me check:"), so that
// restatements fall at any offset from the block grid (shifted sharing).
class StepGenerator {
 public:
  StepGenerator(uint64_t seed, int templates, double mutation, int max_lead = 0)
      : rng_(seed), mutation_(mutation), max_lead_(max_lead) {
    std::uniform_int_distribution<int32_t> word(1, kVocab - 1);
    templates_.resize(templates);
    for (auto& t : templates_) {
      for (int i = 0; i < kStepTokens - 1; ++i) t.push_back(word(rng_));
      t.push_back(kBlankLine);
    }
  }

  int32_t NextToken() {
    if (pos_ == step_.size()) NewStep();
    return step_[pos_++];
  }

 private:
  void NewStep() {
    std::uniform_int_distribution<size_t> pick(0, templates_.size() - 1);
    std::uniform_int_distribution<int32_t> word(1, kVocab - 1);
    std::bernoulli_distribution mutate(mutation_);
    step_.clear();
    if (max_lead_ > 0) {
      std::uniform_int_distribution<int> lead(0, max_lead_ - 1);
      for (int i = lead(rng_); i > 0; --i) step_.push_back(word(rng_));
    }
    const std::vector<int32_t>& t = templates_[pick(rng_)];
    step_.insert(step_.end(), t.begin(), t.end());
    for (size_t i = 0; i + 1 < step_.size(); ++i) {
      if (mutate(rng_)) step_[i] = word(rng_);
    }
    pos_ = 0;
  }

  std::mt19937_64 rng_;
  double mutation_;
  int max_lead_;
  std::vector<std::vector<int32_t>> templates_;
  std::vector<int32_t> step_;
  size_t pos_ = 0;
};

class AcceptAllDistance : public BlockDistance {
 public:
  absl::Status ComputeDistanceSums(int, absl::Span<const BlockPair> pairs,
                                   absl::Span<DistanceSums> out) override {
    for (size_t i = 0; i < pairs.size(); ++i) out[i] = DistanceSums{0, 1, 0, 1};
    return absl::OkStatus();
  }
};

// The server's MemShare defaults; `max_step_tokens` >= 0 overrides the
// segmenter's cut of long steps (0: steps end at delimiters only).
std::unique_ptr<KvManager> MakeManager(int32_t num_blocks, int32_t max_step_tokens = -1) {
  KvManager::Options o;
  if (max_step_tokens >= 0) o.segmenter.max_step_tokens = max_step_tokens;
  o.num_blocks = num_blocks;
  o.block_size = 16;
  o.block_bytes = {2 * 28 * 8 * 16 * 128 * 2};  // a 28-layer, 8-KV-head model
  auto m = KvManager::Create(o);
  if (!m.ok()) std::abort();
  return *std::move(m);
}

// Many sequences decoding together, as the scheduler drives them.
class DecodeWorld {
 public:
  // Sequence i finishes after 1024 + (i * 2053) % 6144 tokens, so lengths
  // (and finishes) are spread once every sequence has finished once.
  DecodeWorld(int32_t num_seqs, int32_t prompt_tokens, int max_lead = 0)
      : prompt_tokens_(prompt_tokens) {
    manager_ = MakeManager(num_seqs * (kMaxTokens / 16 + 2) + 64);
    for (int32_t i = 0; i < num_seqs; ++i) {
      // The tokens each sequence will sample, drawn before any timing.
      StepGenerator gen(1000 + i, /*templates=*/12, /*mutation=*/0.05, max_lead);
      std::vector<int32_t> script(kMaxTokens);
      for (int32_t& t : script) t = gen.NextToken();
      seqs_.push_back(Seq{0, 0, 1024 + (i * 2053) % (kMaxTokens - 1024), std::move(script)});
      Admit(&seqs_.back());
    }
    if (!manager_->CommitStep().ok()) std::abort();
    for (Seq& s : seqs_) Sample(&s);
  }

  // One decode step of every sequence: append the token sampled last step,
  // hand out copy-on-write copies, read the block tables for the plan,
  // commit, report the new samples, deduplicate finished steps. A sequence
  // reaching its length finishes and a new one takes its place.
  void Step() {
    for (Seq& s : seqs_) {
      if (s.length >= s.max_tokens) {
        if (!manager_->Free(s.id).ok()) std::abort();
        Admit(&s);
        continue;
      }
      if (!manager_->AppendTokens(s.id, {s.next}).ok()) std::abort();
      ++s.length;
    }
    copies_ = manager_->TakePendingCopies();
    for (const Seq& s : seqs_) benchmark::DoNotOptimize(manager_->GetBlockTable(s.id, 0));
    if (!manager_->CommitStep().ok()) std::abort();
    for (Seq& s : seqs_) Sample(&s);
    if (manager_->HasPendingDedup() && !manager_->RunDedup(distance_).ok()) std::abort();
  }

  KvManager& manager() { return *manager_; }

 private:
  static constexpr int32_t kMaxTokens = 7168;

  struct Seq {
    uint64_t id;
    int32_t length;
    int32_t max_tokens;
    std::vector<int32_t> script;
    size_t script_pos = 0;
    int32_t next = 0;
  };

  void Admit(Seq* s) {
    s->id = next_id_++;
    std::vector<int32_t> prompt(prompt_tokens_);
    for (int32_t i = 0; i < prompt_tokens_; ++i) {
      prompt[i] = static_cast<int32_t>((s->id * 7919 + i * 104729) % (kVocab - 1)) + 1;
    }
    KvManager::SequenceSpec spec;
    spec.seq_id = s->id;
    spec.prompt_token_ids = prompt;
    if (!manager_->AddSequence(spec, prompt_tokens_).ok()) std::abort();
    s->length = prompt_tokens_;
  }

  void Sample(Seq* s) {
    s->next = s->script[s->script_pos++ % s->script.size()];
    const absl::string_view piece[] = {Pieces()[s->next]};
    if (!manager_->OnTokensGenerated(s->id, piece).ok()) std::abort();
  }

  int32_t prompt_tokens_;
  std::unique_ptr<KvManager> manager_;
  std::vector<Seq> seqs_;
  uint64_t next_id_ = 1;
  AcceptAllDistance distance_;
  std::vector<std::vector<BlockCopy>> copies_;
};

// --- allocate + free -------------------------------------------------------

void BM_PoolAllocateFree(benchmark::State& state) {
  auto pool = *BlockPool::Create({.num_blocks = 4096});
  for (auto _ : state) {
    const int32_t b = *pool->Allocate();
    benchmark::DoNotOptimize(b);
    (void)pool->Unref(b);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolAllocateFree);

// A 1024-token sequence's table: 64 block allocations, then release.
void BM_BlockTableAppendRelease1024(benchmark::State& state) {
  auto pool = *BlockPool::Create({.num_blocks = 4096});
  std::vector<BlockCopy> copies;
  for (auto _ : state) {
    BlockTable table(pool.get(), 16);
    (void)table.Append(1024, &copies);
    benchmark::DoNotOptimize(table.blocks().data());
    (void)table.Release();
  }
  state.SetItemsProcessed(state.iterations() * 64);
}
BENCHMARK(BM_BlockTableAppendRelease1024);

// --- one token appended to 256 sequences -----------------------------------

void BM_AppendOneTokenTo256Sequences(benchmark::State& state) {
  constexpr int32_t kSeqs = 256;
  auto manager = MakeManager(kSeqs * 260);
  std::vector<int32_t> prompt(64);
  for (uint64_t id = 1; id <= kSeqs; ++id) {
    for (int32_t i = 0; i < 64; ++i) prompt[i] = static_cast<int32_t>(id * 64 + i);
    KvManager::SequenceSpec spec;
    spec.seq_id = id;
    spec.prompt_token_ids = prompt;
    (void)manager->AddSequence(spec, 64);
  }
  (void)manager->CommitStep();
  int32_t length = 64;
  int32_t token = 1;
  for (auto _ : state) {
    if (length == 4096) {  // keep the pool bounded: start over, untimed
      state.PauseTiming();
      for (uint64_t id = 1; id <= kSeqs; ++id) {
        (void)manager->Free(id);
        for (int32_t i = 0; i < 64; ++i) prompt[i] = static_cast<int32_t>(id * 64 + i);
        KvManager::SequenceSpec spec;
        spec.seq_id = id;
        spec.prompt_token_ids = prompt;
        (void)manager->AddSequence(spec, 64);
      }
      (void)manager->CommitStep();
      length = 64;
      state.ResumeTiming();
    }
    for (uint64_t id = 1; id <= kSeqs; ++id) {
      if (!manager->AppendTokens(id, {token}).ok()) std::abort();
    }
    if (!manager->CommitStep().ok()) std::abort();
    ++length;
    token = token % (kVocab - 1) + 1;
  }
  state.SetItemsProcessed(state.iterations() * kSeqs);
}
BENCHMARK(BM_AppendOneTokenTo256Sequences)->Unit(benchmark::kMicrosecond);

// --- one dedup pass: a 64-token step against 200 earlier steps -------------

void BM_DedupPassStep64Against200Steps(benchmark::State& state) {
  // Steps end at their blank line only: 64-token steps (the default cut at
  // 48 tokens would split each in two).
  auto manager = MakeManager(8192, /*max_step_tokens=*/0);
  std::vector<int32_t> prompt(64);
  for (int32_t i = 0; i < 64; ++i) prompt[i] = 1 + i;
  KvManager::SequenceSpec spec;
  spec.seq_id = 1;
  spec.prompt_token_ids = prompt;
  (void)manager->AddSequence(spec, 64);
  (void)manager->CommitStep();
  // 20 recurring thoughts, 5% of tokens varied (two versions share ~58% of
  // their 3-token shingles): about ten earlier versions of each new step.
  StepGenerator gen(7, /*templates=*/20, /*mutation=*/0.05);
  AcceptAllDistance distance;
  auto generate = [&](int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
      const int32_t t = gen.NextToken();
      const absl::string_view piece[] = {Pieces()[t]};
      (void)manager->OnTokensGenerated(1, piece);
      (void)manager->AppendTokens(1, {t});
      (void)manager->CommitStep();
    }
  };
  for (int step = 0; step < 200; ++step) {
    generate(kStepTokens);
    (void)manager->RunDedup(distance);
  }
  generate(kStepTokens);  // step 201: finished, written, not yet deduplicated
  if (manager->GetSequenceInfo(1)->dedup_steps != 200 || !manager->HasPendingDedup()) {
    state.SkipWithError("setup did not leave 200 indexed steps and one pending");
    return;
  }
  const KvStatsSnapshot before = manager->Stats();
  uint64_t child = 2;
  for (auto _ : state) {
    // Each pass runs on a fresh fork of the same state (fork and free not
    // timed).
    (void)manager->Fork(1, child);
    const auto start = std::chrono::steady_clock::now();
    const absl::Status s = manager->RunDedupFor(child, distance);
    const auto end = std::chrono::steady_clock::now();
    if (!s.ok()) std::abort();
    state.SetIterationTime(std::chrono::duration<double>(end - start).count());
    (void)manager->Free(child);
    ++child;
  }
  const KvStatsSnapshot after = manager->Stats();
  const double n = static_cast<double>(state.iterations());
  state.counters["candidate_steps"] =
      (after.dedup_candidate_steps - before.dedup_candidate_steps) / n;
  state.counters["pairs_verified"] = (after.dedup_verified - before.dedup_verified) / n;
  state.counters["remaps"] = (after.dedup_remapped - before.dedup_remapped) / n;
}
BENCHMARK(BM_DedupPassStep64Against200Steps)->UseManualTime()->Unit(benchmark::kMicrosecond);

// --- the target: all bookkeeping of one decode step of 256 sequences -------

// range(0) = max_lead: 0 restates steps on the block grid; 16 starts each
// step 0 .. 15 words late, so restatements fall at any shift.
void BM_DecodeStep256Sequences(benchmark::State& state) {
  // 256 sequences of 1024 to 7168 tokens (16 to 112 steps), at staggered
  // lengths: the warm-up lets every one finish and restart once.
  DecodeWorld world(256, /*prompt_tokens=*/64, static_cast<int>(state.range(0)));
  for (int i = 0; i < 8192; ++i) world.Step();
  const KvStatsSnapshot before = world.manager().Stats();
  for (auto _ : state) world.Step();
  if (absl::Status s = world.manager().CheckInvariants(); !s.ok()) {
    state.SkipWithError(std::string(s.message()).c_str());
    return;
  }
  const KvStatsSnapshot after = world.manager().Stats();
  const double n = static_cast<double>(state.iterations());
  state.counters["steps_deduped_per_iter"] = (after.dedup_steps - before.dedup_steps) / n;
  state.counters["candidate_steps_per_iter"] =
      (after.dedup_candidate_steps - before.dedup_candidate_steps) / n;
  state.counters["pairs_verified_per_iter"] = (after.dedup_verified - before.dedup_verified) / n;
  state.counters["remaps_per_iter"] = (after.dedup_remapped - before.dedup_remapped) / n;
  state.counters["shifted_per_iter"] =
      (after.dedup_remapped_shifted - before.dedup_remapped_shifted) / n;
  state.counters["saved_share"] =
      1.0 - static_cast<double>(after.PhysicalBlocks()) /
                static_cast<double>(std::max<int64_t>(after.LogicalBlocks(), 1));
  state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK(BM_DecodeStep256Sequences)->Arg(0)->Arg(16)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace memshare::kvmanager
