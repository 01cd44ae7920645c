#include "engine/scheduler.h"

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "engine/testing/fake_backend.h"
#include "engine/testing/fake_text_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

using ::testing::HasSubstr;

struct Result {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;  // one per token
  FinishReason reason = FinishReason::kNone;
  absl::Status status;
  Usage usage;
  bool finished = false;
};

kvmanager::KvManager::Options KvOptions(const FakeBackend::Options& model) {
  kvmanager::KvManager::Options o;
  o.num_layer_groups = model.num_layer_groups;
  o.num_blocks = model.num_blocks;
  o.block_size = model.block_size;
  o.block_bytes.assign(model.num_layer_groups, 100);
  o.dedup.mode = kvmanager::DedupMode::kOff;  // tests turn MemShare on per request
  o.segmenter.min_step_tokens = 2 * model.block_size;
  o.segmenter.max_step_tokens = 4 * model.block_size;
  return o;
}

class Harness {
 public:
  Harness(FakeBackend::Options backend_options, Scheduler::Options options,
          kvmanager::KvManager::Options kv_options) {
    backend_ = *FakeBackend::Create(backend_options);
    auto kv = kvmanager::KvManager::Create(kv_options);
    EXPECT_TRUE(kv.ok()) << kv.status();
    kv_ = std::move(*kv);
    auto s = Scheduler::Create(options, backend_.get(), kv_.get());
    EXPECT_TRUE(s.ok()) << s.status();
    scheduler_ = std::move(*s);
  }
  Harness(FakeBackend::Options backend_options, Scheduler::Options options)
      : Harness(backend_options, options, KvOptions(backend_options)) {}

  ~Harness() {
    EXPECT_TRUE(kv_->CheckInvariants().ok()) << kv_->CheckInvariants();
    EXPECT_EQ(backend_->history_mismatches(), 0);
  }

  void Record(const std::vector<SequenceOutput>& outputs) {
    for (const SequenceOutput& o : outputs) {
      Result& r = results_[o.seq_id];
      EXPECT_FALSE(r.finished) << "event after the end of " << o.seq_id;
      for (const TokenLogprob& t : o.tokens) {
        r.tokens.push_back(t.token_id);
        r.logprobs.push_back(t);
      }
      if (o.finished) {
        r.finished = true;
        r.reason = o.finish_reason;
        r.status = o.status;
        r.usage = o.usage;
      }
    }
  }

  // Steps until no work is left (or `max_steps`).
  int RunToEnd(int max_steps = 100000) {
    int steps = 0;
    while (scheduler_->HasWork() && steps < max_steps) {
      Record(scheduler_->Step(now_));
      ++steps;
    }
    return steps;
  }

  FakeBackend& backend() { return *backend_; }
  kvmanager::KvManager& kv() { return *kv_; }
  Scheduler& scheduler() { return *scheduler_; }
  std::map<uint64_t, Result>& results() { return results_; }
  absl::Time now_ = absl::FromUnixSeconds(1000);

 private:
  std::unique_ptr<FakeBackend> backend_;
  std::unique_ptr<kvmanager::KvManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<uint64_t, Result> results_;
};

SequenceRequest Greedy(uint64_t id, std::vector<int32_t> prompt, int32_t max_tokens) {
  SequenceRequest r;
  r.seq_id = id;
  r.prompt_token_ids = std::move(prompt);
  r.sampling.temperature = 0;
  r.sampling.max_tokens = max_tokens;
  return r;
}

std::vector<int32_t> Prompt(int n, int seed, int vocab = 64) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p(n);
  for (int32_t& t : p) t = std::uniform_int_distribution<int32_t>(0, vocab - 1)(rng);
  return p;
}

// Greedy continuation computed straight from the fake model.
std::vector<int32_t> Reference(const FakeBackend& backend, std::vector<int32_t> history,
                               int max_tokens, int32_t eos = -1) {
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    std::vector<float> logits = backend.LogitsFor(history);
    const int32_t t =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(t);
    history.push_back(t);
    if (t == eos) break;
  }
  return out;
}

FakeBackend::Options SmallModel() {
  FakeBackend::Options o;
  o.vocab_size = 64;
  o.num_blocks = 64;
  o.block_size = 4;
  return o;
}

TEST(SchedulerTest, CreateChecksOptions) {
  auto backend = *FakeBackend::Create(SmallModel());
  auto kv_owner = *kvmanager::KvManager::Create(KvOptions(SmallModel()));
  kvmanager::KvManager& kv = *kv_owner;
  Scheduler::Options o;
  o.max_num_batched_tokens = 0;
  EXPECT_THAT(std::string(Scheduler::Create(o, backend.get(), &kv).status().message()),
              HasSubstr("max_num_batched_tokens"));
  o = {};
  o.max_num_seqs = 0;
  EXPECT_FALSE(Scheduler::Create(o, backend.get(), &kv).ok());
  o = {};
  o.eos_token_ids = {64};
  EXPECT_THAT(std::string(Scheduler::Create(o, backend.get(), &kv).status().message()),
              HasSubstr("eos_token_ids"));
  FakeBackend::Options smaller = SmallModel();
  smaller.num_blocks = 32;
  auto other = *kvmanager::KvManager::Create(KvOptions(smaller));
  EXPECT_THAT(std::string(Scheduler::Create({}, backend.get(), other.get()).status().message()),
              HasSubstr("disagree"));
  EXPECT_FALSE(Scheduler::Create({}, nullptr, &kv).ok());
}

TEST(SchedulerTest, ModelLengthIsCappedByThePool) {
  Harness h(SmallModel(), {});  // 64 blocks × 4 = 256 tokens
  EXPECT_EQ(h.scheduler().max_model_len(), 256);
  EXPECT_EQ(h.scheduler().max_prompt_len(), 255);
}

TEST(SchedulerTest, GreedyMatchesTheModel) {
  Harness h(SmallModel(), {});
  const std::vector<int32_t> prompt = Prompt(10, 1);
  ASSERT_TRUE(h.scheduler().Add(Greedy(7, prompt, 12)).ok());
  h.RunToEnd();
  const Result& r = h.results()[7];
  EXPECT_TRUE(r.finished);
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(r.tokens, Reference(h.backend(), prompt, 12));
  EXPECT_EQ(r.usage.prompt_tokens, 10);
  EXPECT_EQ(r.usage.completion_tokens, 12);
  // 10 + 12 = 22 tokens, 21 with KV (the last sampled token is never run).
  EXPECT_EQ(r.usage.kv_blocks_peak_logical, 6);
  EXPECT_EQ(h.kv().NumAvailableBlocks(), 64);
  EXPECT_EQ(h.kv().num_sequences(), 0);
  EXPECT_FALSE(h.scheduler().HasWork());
  EXPECT_EQ(h.scheduler().stats().generated_tokens, 12);
}

TEST(SchedulerTest, EosAndStopTokensEndGeneration) {
  FakeBackend::Options model = SmallModel();
  auto probe = *FakeBackend::Create(model);
  const std::vector<int32_t> prompt = Prompt(5, 2);
  const std::vector<int32_t> ref = Reference(*probe, prompt, 8);
  const int32_t third = ref[2];
  ASSERT_EQ(std::find(ref.begin(), ref.begin() + 2, third), ref.begin() + 2)
      << "pick another prompt: the third token appears earlier";

  Scheduler::Options o;
  o.eos_token_ids = {third};
  Harness h(model, o);
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, prompt, 8)).ok());
  SequenceRequest ignoring = Greedy(2, prompt, 8);
  ignoring.sampling.ignore_eos = true;
  ASSERT_TRUE(h.scheduler().Add(ignoring).ok());
  h.RunToEnd();
  EXPECT_EQ(h.results()[1].reason, FinishReason::kStop);
  EXPECT_EQ(h.results()[1].tokens, std::vector<int32_t>(ref.begin(), ref.begin() + 3));
  EXPECT_EQ(h.results()[2].reason, FinishReason::kLength);
  EXPECT_EQ(h.results()[2].tokens, ref);

  Harness h2(model, {});
  SequenceRequest stop = Greedy(3, prompt, 8);
  stop.sampling.stop_token_ids = {ref[1]};
  ASSERT_TRUE(h2.scheduler().Add(stop).ok());
  h2.RunToEnd();
  EXPECT_EQ(h2.results()[3].reason, FinishReason::kStop);
  EXPECT_EQ(h2.results()[3].tokens.size(), 2u);
}

TEST(SchedulerTest, ChunkedPrefillRespectsTheTokenBudget) {
  Scheduler::Options o;
  o.max_num_batched_tokens = 8;
  Harness h(SmallModel(), o);
  const std::vector<int32_t> prompt = Prompt(50, 3);
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, prompt, 5)).ok());
  h.RunToEnd();
  EXPECT_EQ(h.results()[1].tokens, Reference(h.backend(), prompt, 5));
  EXPECT_LE(h.backend().max_tokens_in_step(), 8);
  // ceil(50 / 8) = 7 prefill steps (the last also samples), then 4 decodes.
  EXPECT_EQ(h.backend().forward_calls(), 7 + 4);
  EXPECT_EQ(h.scheduler().stats().prompt_tokens_computed, 50);
}

TEST(SchedulerTest, DecodeAndPrefillShareAStep) {
  Scheduler::Options o;
  o.max_num_batched_tokens = 16;
  Harness h(SmallModel(), o);
  const std::vector<int32_t> p1 = Prompt(6, 4), p2 = Prompt(40, 5);
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, p1, 10)).ok());
  h.Record(h.scheduler().Step(h.now_));  // prefill of 1
  ASSERT_TRUE(h.scheduler().Add(Greedy(2, p2, 3)).ok());
  h.Record(h.scheduler().Step(h.now_));
  const SchedulerStats& st = h.scheduler().stats();
  EXPECT_EQ(st.last_step_decode_tokens, 1);
  EXPECT_EQ(st.last_step_prefill_tokens, 15);  // the rest of the budget
  EXPECT_EQ(st.last_step_sequences, 2);
  h.RunToEnd();
  EXPECT_EQ(h.results()[1].tokens, Reference(h.backend(), p1, 10));
  EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), p2, 3));
}

TEST(SchedulerTest, MaxNumSeqsBoundsTheBatch) {
  Scheduler::Options o;
  o.max_num_seqs = 3;
  Harness h(SmallModel(), o);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(h.scheduler().Add(Greedy(i, Prompt(3, i), 4)).ok());
  h.Record(h.scheduler().Step(h.now_));
  EXPECT_EQ(h.scheduler().stats().running, 3);
  EXPECT_EQ(h.scheduler().stats().waiting, 5);
  EXPECT_EQ(h.scheduler().stats().waiting_tokens, 15);
  h.RunToEnd();
  EXPECT_EQ(h.backend().max_sequences_in_step(), 3);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(h.results()[i].tokens, Reference(h.backend(), Prompt(3, i), 4)) << i;
  }
}

// The acceptance test: many concurrent requests of mixed lengths through a
// pool too small for all of them; each output equals its output alone.
TEST(SchedulerTest, PoolTooSmallPreemptsAndKeepsOutputs) {
  FakeBackend::Options model = SmallModel();
  model.num_blocks = 24;  // 96 tokens for requests that need up to 60 each
  model.num_layer_groups = 2;
  model.num_layers = 4;
  Scheduler::Options o;
  o.max_num_batched_tokens = 32;
  o.max_num_seqs = 16;

  struct Spec {
    std::vector<int32_t> prompt;
    int32_t max_tokens;
  };
  std::vector<Spec> specs;
  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) {
    specs.push_back({Prompt(std::uniform_int_distribution<int>(1, 40)(rng), 100 + i),
                     std::uniform_int_distribution<int>(1, 20)(rng)});
  }

  std::map<uint64_t, std::vector<int32_t>> solo;
  for (size_t i = 0; i < specs.size(); ++i) {
    Harness alone(model, o);
    ASSERT_TRUE(alone.scheduler().Add(Greedy(i, specs[i].prompt, specs[i].max_tokens)).ok());
    alone.RunToEnd();
    EXPECT_EQ(alone.scheduler().stats().preemptions, 0);
    solo[i] = alone.results()[i].tokens;
    EXPECT_EQ(solo[i], Reference(alone.backend(), specs[i].prompt, specs[i].max_tokens));
  }

  Harness crowd(model, o);
  for (size_t i = 0; i < specs.size(); ++i) {
    ASSERT_TRUE(crowd.scheduler().Add(Greedy(i, specs[i].prompt, specs[i].max_tokens)).ok());
  }
  crowd.RunToEnd();
  EXPECT_GT(crowd.scheduler().stats().preemptions, 0);
  for (size_t i = 0; i < specs.size(); ++i) {
    const Result& r = crowd.results()[i];
    EXPECT_TRUE(r.finished) << i;
    EXPECT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.reason, FinishReason::kLength);
    EXPECT_EQ(r.tokens, solo[i]) << "request " << i;
  }
  EXPECT_EQ(crowd.kv().NumAvailableBlocks(), 24);
  EXPECT_EQ(crowd.kv().num_sequences(), 0);
  EXPECT_LE(crowd.backend().max_tokens_in_step(), 32);
}

// Conservative admission: once a resident sequence had to be preempted,
// waiting ones come in only while the pool keeps a reserve for the
// residents' growth, so a pool that bounds the batch preempts (and
// recomputes) far less; outputs do not change. reserve_ratio_step 0 admits
// as long as the tokens fit.
TEST(SchedulerTest, ConservativeAdmissionPreemptsLess) {
  FakeBackend::Options model = SmallModel();
  model.num_blocks = 40;  // 160 tokens for 24 requests of up to 70 each
  std::mt19937 rng(11);
  std::vector<SequenceRequest> requests;
  for (int i = 0; i < 24; ++i) {
    requests.push_back(Greedy(i, Prompt(std::uniform_int_distribution<int>(4, 20)(rng), 300 + i),
                              std::uniform_int_distribution<int>(30, 50)(rng)));
  }
  auto run = [&](double step) {
    Scheduler::Options o;
    o.max_num_seqs = 16;
    o.reserve_ratio_step = step;
    Harness h(model, o);
    for (const SequenceRequest& r : requests) EXPECT_TRUE(h.scheduler().Add(r).ok());
    h.RunToEnd();
    std::map<uint64_t, std::vector<int32_t>> tokens;
    for (auto& [id, r] : h.results()) {
      EXPECT_TRUE(r.finished && r.status.ok()) << id;
      tokens[id] = r.tokens;
    }
    return std::make_tuple(h.scheduler().stats().preemptions,
                           h.scheduler().stats().prompt_tokens_computed, tokens);
  };
  const auto [eager_preemptions, eager_computed, eager_tokens] = run(0);
  const auto [preemptions, computed, tokens] = run(0.2);
  EXPECT_GT(eager_preemptions, 0);
  EXPECT_LT(preemptions, eager_preemptions / 2);
  EXPECT_LT(computed, eager_computed);  // less recompute
  EXPECT_EQ(tokens, eager_tokens);
  for (const SequenceRequest& r : requests) {
    Harness alone(model, {});
    EXPECT_EQ(tokens.at(r.seq_id),
              Reference(alone.backend(), r.prompt_token_ids, r.sampling.max_tokens));
  }
}

TEST(SchedulerTest, SeededSamplingSurvivesPreemption) {
  FakeBackend::Options model = SmallModel();
  model.num_blocks = 12;
  auto make = [](uint64_t id, int seed) {
    SequenceRequest r;
    r.seq_id = id;
    r.prompt_token_ids = Prompt(10, seed);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = 1000 + id;
    r.sampling.max_tokens = 12;
    return r;
  };
  std::map<uint64_t, std::vector<int32_t>> solo;
  for (uint64_t i = 0; i < 6; ++i) {
    Harness alone(model, {});
    ASSERT_TRUE(alone.scheduler().Add(make(i, i)).ok());
    alone.RunToEnd();
    solo[i] = alone.results()[i].tokens;
  }
  Harness crowd(model, {});
  for (uint64_t i = 0; i < 6; ++i) ASSERT_TRUE(crowd.scheduler().Add(make(i, i)).ok());
  crowd.RunToEnd();
  EXPECT_GT(crowd.scheduler().stats().preemptions, 0);
  for (uint64_t i = 0; i < 6; ++i) EXPECT_EQ(crowd.results()[i].tokens, solo[i]) << i;
}

TEST(SchedulerTest, PriorityThenFcfs) {
  Scheduler::Options o;
  o.max_num_seqs = 1;
  Harness h(SmallModel(), o);
  std::vector<uint64_t> order;
  auto add = [&](uint64_t id, int32_t priority) {
    SequenceRequest r = Greedy(id, Prompt(3, static_cast<int>(id)), 2);
    r.priority = priority;
    ASSERT_TRUE(h.scheduler().Add(r).ok());
  };
  add(1, 0);
  add(2, 5);
  add(3, 0);
  add(4, 5);
  add(5, -1);
  while (h.scheduler().HasWork()) {
    for (const SequenceOutput& out : h.scheduler().Step(h.now_)) {
      if (out.finished) order.push_back(out.seq_id);
    }
  }
  EXPECT_EQ(order, (std::vector<uint64_t>{2, 4, 1, 3, 5}));
}

TEST(SchedulerTest, PreemptsTheLowestPriorityFirst) {
  FakeBackend::Options model = SmallModel();
  model.num_blocks = 8;  // 32 tokens
  Harness h(model, {});
  SequenceRequest high = Greedy(1, Prompt(8, 1), 16);
  high.priority = 10;
  SequenceRequest low = Greedy(2, Prompt(8, 2), 16);
  ASSERT_TRUE(h.scheduler().Add(low).ok());
  ASSERT_TRUE(h.scheduler().Add(high).ok());
  std::vector<uint64_t> finished;
  while (h.scheduler().HasWork()) {
    auto outputs = h.scheduler().Step(h.now_);
    h.Record(outputs);
    for (const auto& o : outputs) {
      if (o.finished) finished.push_back(o.seq_id);
    }
  }
  EXPECT_GT(h.scheduler().stats().preemptions, 0);
  EXPECT_EQ(finished, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), Prompt(8, 2), 16));
  EXPECT_EQ(h.results()[1].tokens, Reference(h.backend(), Prompt(8, 1), 16));
}

TEST(SchedulerTest, HigherPriorityArrivalPreemptsALowerRunningOne) {
  FakeBackend::Options model = SmallModel();
  model.num_blocks = 10;  // 40 tokens: one of the two at a time
  Harness h(model, {});
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(10, 1), 20)).ok());
  for (int i = 0; i < 5; ++i) h.Record(h.scheduler().Step(h.now_));
  ASSERT_EQ(h.results()[1].tokens.size(), 5u);
  SequenceRequest urgent = Greedy(2, Prompt(10, 2), 20);
  urgent.priority = 1;
  ASSERT_TRUE(h.scheduler().Add(urgent).ok());
  std::vector<uint64_t> finished;
  while (h.scheduler().HasWork()) {
    auto outputs = h.scheduler().Step(h.now_);
    h.Record(outputs);
    for (const auto& o : outputs) {
      if (o.finished) finished.push_back(o.seq_id);
    }
  }
  EXPECT_EQ(finished, (std::vector<uint64_t>{2, 1}));
  EXPECT_GT(h.scheduler().stats().preemptions, 0);
  EXPECT_EQ(h.results()[1].tokens, Reference(h.backend(), Prompt(10, 1), 20));
  EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), Prompt(10, 2), 20));
}

TEST(SchedulerTest, HigherPriorityArrivalTakesASlotOfAFullBatch) {
  Scheduler::Options o;
  o.max_num_seqs = 2;
  Harness h(SmallModel(), o);
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(4, 1), 30)).ok());
  ASSERT_TRUE(h.scheduler().Add(Greedy(2, Prompt(4, 2), 30)).ok());
  h.Record(h.scheduler().Step(h.now_));
  SequenceRequest urgent = Greedy(3, Prompt(4, 3), 3);
  urgent.priority = 5;
  ASSERT_TRUE(h.scheduler().Add(urgent).ok());
  h.Record(h.scheduler().Step(h.now_));
  EXPECT_EQ(h.scheduler().stats().running, 2);
  EXPECT_EQ(h.scheduler().stats().preemptions, 1);
  h.RunToEnd();
  for (uint64_t id : {1, 2, 3}) {
    EXPECT_EQ(h.results()[id].tokens,
              Reference(h.backend(), Prompt(4, static_cast<int>(id)), id == 3 ? 3 : 30))
        << id;
  }
  EXPECT_LE(h.backend().max_sequences_in_step(), 2);
}

TEST(SchedulerTest, AbortFreesBlocksAtOnce) {
  Harness h(SmallModel(), {});
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(20, 1), 50)).ok());
  ASSERT_TRUE(h.scheduler().Add(Greedy(2, Prompt(5, 2), 5)).ok());
  h.Record(h.scheduler().Step(h.now_));
  h.Record(h.scheduler().Step(h.now_));
  const int64_t free_before = h.kv().NumAvailableBlocks();
  auto out = h.scheduler().Abort(1);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->finished);
  EXPECT_EQ(out->finish_reason, FinishReason::kAbort);
  EXPECT_EQ(out->usage.completion_tokens, 2);
  EXPECT_EQ(h.kv().NumAvailableBlocks(), free_before + 6);  // 21 tokens of KV: 6 blocks
  EXPECT_FALSE(h.scheduler().IsLive(1));
  EXPECT_EQ(h.scheduler().Abort(1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.scheduler().stats().aborted, 1);
  h.RunToEnd();
  EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), Prompt(5, 2), 5));
  // A waiting sequence can be aborted too.
  ASSERT_TRUE(h.scheduler().Add(Greedy(3, Prompt(5, 3), 5)).ok());
  EXPECT_TRUE(h.scheduler().Abort(3).ok());
  EXPECT_FALSE(h.scheduler().HasWork());
}

TEST(SchedulerTest, DeadlineEndsTheSequenceAndFreesBlocks) {
  Harness h(SmallModel(), {});
  SequenceRequest r = Greedy(1, Prompt(10, 1), 100);
  r.deadline = h.now_ + absl::Seconds(5);
  ASSERT_TRUE(h.scheduler().Add(r).ok());
  ASSERT_TRUE(h.scheduler().Add(Greedy(2, Prompt(10, 2), 10)).ok());
  h.Record(h.scheduler().Step(h.now_));
  h.Record(h.scheduler().Step(h.now_));
  h.now_ += absl::Seconds(6);
  h.Record(h.scheduler().Step(h.now_));
  const Result& r1 = h.results()[1];
  EXPECT_TRUE(r1.finished);
  EXPECT_EQ(r1.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(r1.reason, FinishReason::kAbort);
  EXPECT_EQ(r1.tokens.size(), 2u);
  EXPECT_EQ(h.kv().num_sequences(), 1);
  EXPECT_EQ(h.scheduler().stats().deadline_exceeded, 1);
  h.RunToEnd();
  EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), Prompt(10, 2), 10));
}

TEST(SchedulerTest, FinishEndsALiveSequence) {
  Harness h(SmallModel(), {});
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(10, 1), 100)).ok());
  h.Record(h.scheduler().Step(h.now_));
  auto out = h.scheduler().Finish(1, FinishReason::kStop);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->finish_reason, FinishReason::kStop);
  EXPECT_EQ(h.kv().NumAvailableBlocks(), 64);
  EXPECT_EQ(h.scheduler().Finish(1, FinishReason::kStop).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SchedulerTest, BadRequestsAreRejectedAndOthersGoOn) {
  Scheduler::Options o;
  o.max_model_len = 40;
  o.max_prompt_len = 30;
  Harness h(SmallModel(), o);
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(10, 1), 10)).ok());
  h.Record(h.scheduler().Step(h.now_));

  auto code_and_message = [&](SequenceRequest r) {
    absl::Status s = h.scheduler().Add(std::move(r));
    return std::make_pair(s.code(), std::string(s.message()));
  };
  auto [c1, m1] = code_and_message(Greedy(2, {}, 5));
  EXPECT_EQ(c1, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m1, HasSubstr("prompt: must not be empty"));
  auto [c2, m2] = code_and_message(Greedy(2, Prompt(31, 2), 5));
  EXPECT_EQ(c2, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m2, HasSubstr("prompt: 31 tokens is longer than the limit of 30"));
  auto [c3, m3] = code_and_message(Greedy(2, {1, 2, 64}, 5));
  EXPECT_EQ(c3, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m3, HasSubstr("prompt_token_ids[2]: must be in [0, 64), got 64"));
  SequenceRequest bad_sampling = Greedy(2, {1, 2}, 5);
  bad_sampling.sampling.top_p = 2;
  auto [c4, m4] = code_and_message(bad_sampling);
  EXPECT_EQ(c4, absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m4, HasSubstr("top_p"));
  auto [c5, m5] = code_and_message(Greedy(1, {1, 2}, 5));
  EXPECT_EQ(c5, absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(h.scheduler().stats().waiting, 0);

  h.RunToEnd();
  EXPECT_EQ(h.results()[1].tokens, Reference(h.backend(), Prompt(10, 1), 10));
  EXPECT_EQ(h.results().count(2), 0u);
}

TEST(SchedulerTest, GenerationStopsAtTheModelLength) {
  Scheduler::Options o;
  o.max_model_len = 20;
  Harness h(SmallModel(), o);
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(19, 1), 100)).ok());
  ASSERT_TRUE(h.scheduler().Add(Greedy(2, Prompt(15, 2), 100)).ok());
  h.RunToEnd();
  EXPECT_EQ(h.results()[1].tokens.size(), 1u);
  EXPECT_EQ(h.results()[1].reason, FinishReason::kLength);
  EXPECT_EQ(h.results()[2].tokens.size(), 5u);
}

TEST(SchedulerTest, BackendFailureEndsOnlyThatStep) {
  Harness h(SmallModel(), {});
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(10, 1), 5)).ok());
  h.backend().FailNextForwards(1);
  h.Record(h.scheduler().Step(h.now_));
  EXPECT_TRUE(h.results()[1].finished);
  EXPECT_EQ(h.results()[1].reason, FinishReason::kError);
  EXPECT_EQ(h.results()[1].status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(h.kv().NumAvailableBlocks(), 64);
  ASSERT_TRUE(h.scheduler().Add(Greedy(2, Prompt(10, 2), 5)).ok());
  h.RunToEnd();
  EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), Prompt(10, 2), 5));
  EXPECT_EQ(h.scheduler().stats().failed, 1);
}

TEST(SchedulerTest, LogprobsTravelWithTokens) {
  Harness h(SmallModel(), {});
  SequenceRequest r = Greedy(1, Prompt(4, 1), 3);
  r.sampling.logprobs = 3;
  ASSERT_TRUE(h.scheduler().Add(r).ok());
  std::vector<TokenLogprob> got;
  while (h.scheduler().HasWork()) {
    for (auto& o : h.scheduler().Step(h.now_)) {
      for (auto& t : o.tokens) got.push_back(t);
    }
  }
  ASSERT_EQ(got.size(), 3u);
  for (const TokenLogprob& t : got) {
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_EQ(t.top[0].first, t.token_id);  // greedy takes the most likely
    EXPECT_FLOAT_EQ(t.top[0].second, t.logprob);
    EXPECT_LT(t.logprob, 0);
  }
}

TEST(SchedulerTest, PrefixCacheServesARepeatedPrompt) {
  Harness h(SmallModel(), {});
  const std::vector<int32_t> prompt = Prompt(30, 9);
  ASSERT_TRUE(h.scheduler().Add(Greedy(1, prompt, 6)).ok());
  h.RunToEnd();
  const int64_t tokens_first = h.backend().total_tokens();
  ASSERT_TRUE(h.scheduler().Add(Greedy(2, prompt, 6)).ok());
  SequenceRequest salted = Greedy(3, prompt, 6);
  salted.cache_salt = "tenant-b";
  ASSERT_TRUE(h.scheduler().Add(salted).ok());
  h.RunToEnd();
  // Whole blocks of the first 29 tokens: 7 blocks = 28 tokens.
  EXPECT_EQ(h.results()[1].usage.cached_prompt_tokens, 0);
  EXPECT_EQ(h.results()[2].usage.cached_prompt_tokens, 28);
  EXPECT_EQ(h.results()[3].usage.cached_prompt_tokens, 0);  // another tenant's cache
  EXPECT_EQ(h.results()[2].tokens, h.results()[1].tokens);
  EXPECT_EQ(h.results()[3].tokens, h.results()[1].tokens);
  EXPECT_EQ(h.scheduler().stats().prefix_cached_tokens, 28);
  // Request 2 computed 2 prompt tokens and 5 decodes; request 3 all of it.
  EXPECT_EQ(h.backend().total_tokens() - tokens_first, (30 - 28 + 5) + (30 + 5));
  EXPECT_GT(h.kv().Stats().prefix_cache_hits, 0);
}

TEST(SchedulerTest, PreemptedSequencesComeBackThroughThePrefixCache) {
  FakeBackend::Options model = SmallModel();
  model.num_blocks = 16;
  Scheduler::Options o;
  o.max_num_batched_tokens = 64;
  Harness h(model, o);
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(h.scheduler().Add(Greedy(i, Prompt(12, 50 + i), 12)).ok());
  h.RunToEnd();
  EXPECT_GT(h.scheduler().stats().preemptions, 0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(h.results()[i].tokens, Reference(h.backend(), Prompt(12, 50 + i), 12)) << i;
  }
}

// MemShare through the real KV manager: a model whose text falls into a
// cycle repeats whole blocks; dedup remaps them (verified by the backend's
// distance: identical token ids only), and the output does not change.
TEST(SchedulerTest, MemShareRemapsRepeatedBlocksWithoutChangingOutput) {
  FakeBackend::Options model = SmallModel();
  model.window = 1;  // next token depends on the last one: cycles
  model.num_blocks = 128;
  const std::vector<int32_t> prompt = Prompt(8, 77);

  auto run = [&](bool memshare) {
    Harness h(model, {});
    SequenceRequest r = Greedy(1, prompt, 200);
    r.memshare.mode = memshare ? kvmanager::DedupMode::kMemShare : kvmanager::DedupMode::kOff;
    EXPECT_TRUE(h.scheduler().Add(r).ok());
    h.RunToEnd();
    const kvmanager::KvStatsSnapshot stats = h.kv().Stats();
    return std::make_tuple(h.results()[1], stats.dedup_remapped,
                           h.scheduler().stats().dedup_errors);
  };
  auto [off, off_remapped, off_errors] = run(false);
  auto [on, on_remapped, on_errors] = run(true);
  EXPECT_EQ(off_remapped, 0);
  EXPECT_GT(on_remapped, 0);
  EXPECT_EQ(on_errors, 0);
  EXPECT_EQ(on.tokens, off.tokens);
  EXPECT_EQ(on.tokens.size(), 200u);
  EXPECT_GT(on.usage.shared_blocks, 0);
  EXPECT_LT(on.usage.kv_blocks_peak_physical, on.usage.kv_blocks_peak_logical);
  EXPECT_EQ(off.usage.kv_blocks_peak_physical, off.usage.kv_blocks_peak_logical);
}

// A MemShare sequence preempted by a higher-priority arrival is recomputed
// with its output as prompt; its output is segmented again, so the blocks it
// shared before are shared again as soon as the recompute is written (not
// only the steps it generates afterwards), and its tokens do not change.
TEST(SchedulerTest, MemShareSharesAgainAfterPreemption) {
  FakeBackend::Options model = SmallModel();
  model.window = 1;      // cycles: repeated steps
  model.num_blocks = 48;  // 192 tokens: the long sequence or the urgent one
  kvmanager::KvManager::Options kv = KvOptions(model);
  kv.dedup.tau_kv = 0.2f;  // the fake's distance: identical blocks only
  Harness h(model, {}, kv);
  const std::vector<int32_t> prompt = Prompt(8, 77);
  SequenceRequest long_one = Greedy(1, prompt, 170);
  long_one.memshare.mode = kvmanager::DedupMode::kMemShare;
  ASSERT_TRUE(h.scheduler().Add(long_one).ok());
  for (int i = 0; i < 120; ++i) h.Record(h.scheduler().Step(h.now_));
  absl::StatusOr<kvmanager::KvManager::SequenceInfo> before = h.kv().GetSequenceInfo(1);
  ASSERT_TRUE(before.ok());
  ASSERT_GT(before->remapped_blocks, 0);
  const int32_t tokens_before = before->num_tokens;

  SequenceRequest urgent = Greedy(2, Prompt(150, 2), 30);  // 45 of the 48 blocks
  urgent.priority = 1;
  ASSERT_TRUE(h.scheduler().Add(urgent).ok());
  while (h.kv().Contains(1)) h.Record(h.scheduler().Step(h.now_));
  ASSERT_EQ(h.scheduler().stats().preemptions, 1);
  ASSERT_FALSE(h.results()[1].finished);
  // Re-admitted once the urgent one is done; step until its recompute (the
  // tokens it had) is written, then MemShare has run on it.
  int64_t remapped_after_recompute = -1;
  while (h.scheduler().HasWork() && remapped_after_recompute < 0) {
    h.Record(h.scheduler().Step(h.now_));
    if (!h.kv().Contains(1)) continue;
    absl::StatusOr<kvmanager::KvManager::SequenceInfo> info = h.kv().GetSequenceInfo(1);
    ASSERT_TRUE(info.ok());
    if (info->num_computed_tokens >= tokens_before) {
      remapped_after_recompute = info->remapped_blocks;
    }
  }
  EXPECT_GE(remapped_after_recompute, before->remapped_blocks);
  h.RunToEnd();
  EXPECT_EQ(h.scheduler().stats().dedup_errors, 0);
  EXPECT_EQ(h.results()[1].tokens, Reference(h.backend(), prompt, 170));
  EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), Prompt(150, 2), 30));
}

// With two layer groups of which only group 1 may share, the group-0 peaks
// show no saving while the peaks summed over the groups do.
TEST(SchedulerTest, UsageSumsPeaksOverLayerGroups) {
  FakeBackend::Options model = SmallModel();
  model.window = 1;
  model.num_blocks = 128;
  model.num_layer_groups = 2;
  model.num_layers = 4;
  kvmanager::KvManager::Options kv = KvOptions(model);
  kv.dedup.layer_groups = {1};
  Harness h(model, {}, kv);
  SequenceRequest r = Greedy(1, Prompt(8, 77), 200);
  r.memshare.mode = kvmanager::DedupMode::kMemShare;
  ASSERT_TRUE(h.scheduler().Add(r).ok());
  h.RunToEnd();
  const Usage& u = h.results()[1].usage;
  EXPECT_EQ(u.kv_blocks_peak_physical, u.kv_blocks_peak_logical);
  EXPECT_EQ(u.shared_blocks, 0);
  EXPECT_EQ(u.kv_group_blocks_peak_logical, 2 * u.kv_blocks_peak_logical);
  EXPECT_GT(u.kv_group_blocks_peak_physical, u.kv_blocks_peak_physical);
  EXPECT_LT(u.kv_group_blocks_peak_physical, u.kv_group_blocks_peak_logical);
  EXPECT_GT(h.kv().Stats().dedup_remapped, 0);
}

// The usage peaks are the largest distinct-block counts the tables had,
// counted here independently in every plan the backend runs, over two
// sequences sharing within themselves in two layer groups.
TEST(SchedulerTest, UsagePeaksCountDistinctBlocks) {
  FakeBackend::Options model = SmallModel();
  model.window = 1;
  model.num_blocks = 256;
  model.num_layer_groups = 2;
  model.num_layers = 4;
  kvmanager::KvManager::Options kv = KvOptions(model);
  kv.dedup.tau_kv = 0.2f;  // the fake's distance: identical blocks only
  Harness h(model, {}, kv);
  struct Peaks {
    int32_t physical = 0, logical = 0, group_physical = 0, group_logical = 0;
  };
  std::map<uint64_t, Peaks> want;
  h.backend().SetPlanObserver([&want](const StepPlan& plan) {
    for (const SequenceChunk& c : plan.sequences) {
      Peaks& p = want[c.seq_id];
      int32_t gp = 0, gl = 0;
      for (size_t g = 0; g < c.block_tables.size(); ++g) {
        const std::vector<int32_t>& table = c.block_tables[g];
        const auto distinct =
            static_cast<int32_t>(std::set<int32_t>(table.begin(), table.end()).size());
        const auto logical = static_cast<int32_t>(table.size());
        gp += distinct;
        gl += logical;
        if (g == 0) {
          p.physical = std::max(p.physical, distinct);
          p.logical = std::max(p.logical, logical);
        }
      }
      p.group_physical = std::max(p.group_physical, gp);
      p.group_logical = std::max(p.group_logical, gl);
    }
  });
  for (uint64_t id : {1, 2}) {
    SequenceRequest r = Greedy(id, Prompt(8, 70 + static_cast<int>(id)), 150);
    r.memshare.mode = kvmanager::DedupMode::kMemShare;
    ASSERT_TRUE(h.scheduler().Add(r).ok());
  }
  h.RunToEnd();
  for (uint64_t id : {1, 2}) {
    const Usage& u = h.results()[id].usage;
    EXPECT_EQ(u.kv_blocks_peak_physical, want[id].physical) << id;
    EXPECT_EQ(u.kv_blocks_peak_logical, want[id].logical) << id;
    EXPECT_EQ(u.kv_group_blocks_peak_physical, want[id].group_physical) << id;
    EXPECT_EQ(u.kv_group_blocks_peak_logical, want[id].group_logical) << id;
    EXPECT_LT(u.kv_blocks_peak_physical, u.kv_blocks_peak_logical) << id;  // shared something
  }
}

// Shifted sharing through the scheduler: a model whose text cycles with a
// period that is not a multiple of the block size repeats it off the block
// grid; those blocks become shifted views (the plans carry block_tables_hi
// and block_shifts, the fake reads through them and checks every read
// against what was written), and the output does not change.
TEST(SchedulerTest, MemShareSharesOffGridRepeatsAsShiftedViews) {
  int64_t shifted = 0;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    FakeBackend::Options model = SmallModel();
    model.window = 1;
    model.num_blocks = 128;
    model.seed = seed;
    const std::vector<int32_t> prompt = Prompt(9, 70 + static_cast<int>(seed));
    auto run = [&](bool memshare) {
      Harness h(model, {});
      SequenceRequest r = Greedy(1, prompt, 120);
      r.memshare.mode = memshare ? kvmanager::DedupMode::kMemShare : kvmanager::DedupMode::kOff;
      EXPECT_TRUE(h.scheduler().Add(r).ok());
      h.RunToEnd();
      EXPECT_EQ(h.scheduler().stats().dedup_errors, 0);
      return std::make_pair(h.results()[1].tokens, h.kv().Stats().dedup_remapped_shifted);
    };
    const auto [off, off_shifted] = run(false);
    const auto [on, on_shifted] = run(true);
    EXPECT_EQ(on, off) << "seed " << seed;
    EXPECT_EQ(off_shifted, 0);
    shifted += on_shifted;
  }
  EXPECT_GT(shifted, 0);
}

// A KV manager that may make shifted views needs a backend that reads them.
TEST(SchedulerTest, ShiftedSharingNeedsABackendThatReadsViews) {
  FakeBackend::Options model = SmallModel();
  model.shifted_views = false;
  auto backend = *FakeBackend::Create(model);
  kvmanager::KvManager::Options kv_options = KvOptions(model);
  auto kv = *kvmanager::KvManager::Create(kv_options);
  const absl::Status refused = Scheduler::Create({}, backend.get(), kv.get()).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("SupportsShiftedViews"));
  kv_options.dedup.shifted_sharing = false;
  auto grid_only = *kvmanager::KvManager::Create(kv_options);
  EXPECT_TRUE(Scheduler::Create({}, backend.get(), grid_only.get()).ok());
}

// --- Sampling on the device (a FakeBackend that samples by the CPU rules) ---

FakeBackend::Options DeviceModel(FakeBackend::Options model = SmallModel()) {
  model.samples_on_device = true;
  return model;
}

struct Outcome {
  std::map<uint64_t, Result> results;
  SchedulerStats stats;
  int64_t device_sampled_rows = 0;
  int64_t logits_rows_returned = 0;
};

// Runs `requests` to the end on one scheduler; `observe` sees every plan.
Outcome RunAll(const FakeBackend::Options& model, const Scheduler::Options& options,
               const std::vector<SequenceRequest>& requests,
               std::function<void(const StepPlan&, Harness&)> observe = nullptr) {
  Harness h(model, options);
  if (observe) {
    h.backend().SetPlanObserver([&h, observe](const StepPlan& plan) { observe(plan, h); });
  }
  for (const SequenceRequest& r : requests) EXPECT_TRUE(h.scheduler().Add(r).ok());
  h.RunToEnd();
  Outcome out;
  out.results = h.results();
  out.stats = h.scheduler().stats();
  out.device_sampled_rows = h.backend().device_sampled_rows();
  out.logits_rows_returned = h.backend().logits_rows_returned();
  for (const SequenceRequest& r : requests) {
    EXPECT_TRUE(out.results[r.seq_id].finished) << r.seq_id;
    EXPECT_TRUE(out.results[r.seq_id].status.ok()) << out.results[r.seq_id].status;
  }
  return out;
}

void ExpectSameOutputs(const Outcome& a, const Outcome& b) {
  ASSERT_EQ(a.results.size(), b.results.size());
  for (const auto& [id, ra] : a.results) {
    const Result& rb = b.results.at(id);
    EXPECT_EQ(ra.tokens, rb.tokens) << "sequence " << id;
    EXPECT_EQ(ra.reason, rb.reason) << "sequence " << id;
    ASSERT_EQ(ra.logprobs.size(), rb.logprobs.size());
    for (size_t i = 0; i < ra.logprobs.size(); ++i) {
      EXPECT_EQ(ra.logprobs[i].logprob, rb.logprobs[i].logprob) << id << " token " << i;
      EXPECT_EQ(ra.logprobs[i].top, rb.logprobs[i].top) << id << " token " << i;
    }
  }
}

SequenceRequest Seeded(uint64_t id, std::vector<int32_t> prompt, int32_t max_tokens,
                       uint64_t seed) {
  SequenceRequest r;
  r.seq_id = id;
  r.prompt_token_ids = std::move(prompt);
  r.sampling.temperature = 0.9f;
  r.sampling.seed = seed;
  r.sampling.max_tokens = max_tokens;
  return r;
}

// Requests that cover every rule: greedy, temperature, top-k, top-p, min-p
// and the three penalties, with and without a seed-driven draw.
std::vector<SequenceRequest> MixedRequests(int32_t max_tokens) {
  std::vector<SequenceRequest> r;
  r.push_back(Greedy(0, Prompt(9, 1), max_tokens));
  r.push_back(Seeded(1, Prompt(5, 2), max_tokens, 11));
  r.push_back(Seeded(2, Prompt(14, 3), max_tokens, 12));
  r.back().sampling.top_k = 5;
  r.push_back(Seeded(3, Prompt(3, 4), max_tokens, 13));
  r.back().sampling.top_p = 0.7f;
  r.back().sampling.min_p = 0.05f;
  r.push_back(Seeded(4, Prompt(7, 5), max_tokens, 14));
  r.back().sampling.repetition_penalty = 1.5f;
  r.push_back(Seeded(5, Prompt(6, 6), max_tokens, 15));
  r.back().sampling.frequency_penalty = 0.8f;
  r.back().sampling.presence_penalty = 0.5f;
  r.push_back(Greedy(6, Prompt(8, 7), max_tokens));
  r.back().sampling.repetition_penalty = 2.0f;
  r.back().sampling.frequency_penalty = 0.3f;
  r.push_back(Greedy(7, Prompt(4, 8), max_tokens));
  r.back().sampling.presence_penalty = 1.0f;
  return r;
}

// The penalty lists a chunk must carry: each token of the prompt (when the
// repetition penalty is set) and of the output once, with its output count.
void ExpectPenaltyLists(const DeviceSampling& d, const SamplingParams& p,
                        const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated) {
  std::map<int32_t, int32_t> want;
  const bool any =
      p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (any && p.repetition_penalty != 1.0f) {
    for (int32_t t : prompt) want[t] += 0;
  }
  if (any) {
    for (int32_t t : generated) ++want[t];
  }
  std::map<int32_t, int32_t> got;
  ASSERT_EQ(d.penalty_token_ids.size(), d.penalty_counts.size());
  for (size_t i = 0; i < d.penalty_token_ids.size(); ++i) {
    EXPECT_TRUE(got.emplace(d.penalty_token_ids[i], d.penalty_counts[i]).second)
        << "token " << d.penalty_token_ids[i] << " listed twice";
  }
  EXPECT_EQ(got, want);
}

// Checks every sampled chunk of `plan` against the requests and the tokens
// generated before this step.
std::function<void(const StepPlan&, Harness&)> CheckEveryChunk(
    const std::vector<SequenceRequest>& requests, int64_t* checked, int64_t* mixed_steps) {
  return [&requests, checked, mixed_steps](const StepPlan& plan, Harness& h) {
    bool device = false, host = false;
    for (const SequenceChunk& c : plan.sequences) {
      const SequenceRequest& r = requests.at(c.seq_id);
      if (!c.compute_logits) {
        EXPECT_FALSE(c.sampling.has_value());
        continue;
      }
      ASSERT_TRUE(c.sampling.has_value()) << c.seq_id;
      // Top-n logprobs: sampled on the device too, the row's logits back
      // beside the token.
      (r.sampling.logprobs > 0 ? host : device) = true;
      const DeviceSampling& d = *c.sampling;
      EXPECT_EQ(d.temperature, r.sampling.temperature);
      EXPECT_EQ(d.top_k, r.sampling.top_k);
      EXPECT_EQ(d.top_p, r.sampling.top_p);
      EXPECT_EQ(d.min_p, r.sampling.min_p);
      EXPECT_EQ(d.repetition_penalty, r.sampling.repetition_penalty);
      EXPECT_EQ(d.presence_penalty, r.sampling.presence_penalty);
      EXPECT_EQ(d.frequency_penalty, r.sampling.frequency_penalty);
      if (r.sampling.temperature == 0) {
        EXPECT_EQ(d.uniform, 0.0f);
      }
      EXPECT_EQ(d.return_logits, r.sampling.logprobs > 0);
      ExpectPenaltyLists(d, r.sampling, r.prompt_token_ids, h.results()[c.seq_id].tokens);
      ++*checked;
    }
    if (device && host) ++*mixed_steps;
  };
}

TEST(SchedulerTest, DeviceSamplingGreedyMatchesHostSampling) {
  std::vector<SequenceRequest> requests;
  for (uint64_t i = 0; i < 5; ++i) requests.push_back(Greedy(i, Prompt(3 + 4 * i, 20 + i), 16));
  const Outcome host = RunAll(SmallModel(), {}, requests);
  const Outcome device = RunAll(DeviceModel(), {}, requests);
  ExpectSameOutputs(host, device);
  auto probe = *FakeBackend::Create(SmallModel());
  for (const SequenceRequest& r : requests) {
    EXPECT_EQ(device.results.at(r.seq_id).tokens, Reference(*probe, r.prompt_token_ids, 16));
  }
  // Every token was sampled on the device, and no logits row came back.
  EXPECT_EQ(device.stats.generated_tokens, 5 * 16);
  EXPECT_EQ(device.stats.device_sampled_tokens, 5 * 16);
  EXPECT_EQ(device.device_sampled_rows, 5 * 16);
  EXPECT_EQ(device.logits_rows_returned, 0);
  EXPECT_EQ(host.stats.device_sampled_tokens, 0);
  EXPECT_EQ(host.logits_rows_returned, 5 * 16);
}

TEST(SchedulerTest, DeviceSamplingMatchesHostSamplingForEveryRule) {
  const std::vector<SequenceRequest> requests = MixedRequests(40);
  int64_t checked = 0, mixed = 0;
  const Outcome host = RunAll(SmallModel(), {}, requests);
  const Outcome device =
      RunAll(DeviceModel(), {}, requests, CheckEveryChunk(requests, &checked, &mixed));
  ExpectSameOutputs(host, device);
  EXPECT_EQ(checked, static_cast<int64_t>(requests.size()) * 40);
  EXPECT_EQ(device.logits_rows_returned, 0);
  // The rules do act: seeded sequences sample, and the penalties change the
  // greedy outputs.
  EXPECT_GT(
      std::set<int32_t>(device.results.at(1).tokens.begin(), device.results.at(1).tokens.end())
          .size(),
      8u);
  auto probe = *FakeBackend::Create(SmallModel());
  EXPECT_NE(device.results.at(6).tokens, Reference(*probe, requests[6].prompt_token_ids, 40));
  // A seeded sequence on the device gives the same tokens alone.
  const Outcome alone = RunAll(DeviceModel(), {}, {requests[3]});
  EXPECT_EQ(alone.results.at(3).tokens, device.results.at(3).tokens);
}

// Top-n logprobs: such rows are sampled on the device too and come back
// with their logits, from which the alternatives and the token's logprob
// are computed here; the same outputs as host sampling.
TEST(SchedulerTest, TopLogprobsSampleOnTheDeviceWithTheirLogits) {
  std::vector<SequenceRequest> requests = MixedRequests(24);
  requests[1].sampling.logprobs = 3;
  requests[4].sampling.logprobs = 1;
  requests[6].sampling.logprobs = 5;
  int64_t checked = 0, mixed = 0;
  const Outcome host = RunAll(SmallModel(), {}, requests);
  const Outcome device =
      RunAll(DeviceModel(), {}, requests, CheckEveryChunk(requests, &checked, &mixed));
  ExpectSameOutputs(host, device);
  EXPECT_EQ(checked, 8 * 24);
  EXPECT_GT(mixed, 10);  // steps with rows of both kinds
  EXPECT_EQ(device.stats.device_sampled_tokens, 8 * 24);
  EXPECT_GT(device.logits_rows_returned, 0);  // every row of a step with a top-n row
  for (uint64_t id : {1, 4, 6}) {
    const Result& r = device.results.at(id);
    ASSERT_EQ(r.logprobs.size(), 24u);
    EXPECT_EQ(r.logprobs[0].top.size(), static_cast<size_t>(requests[id].sampling.logprobs));
    EXPECT_LT(r.logprobs[0].logprob, 0);
  }
  // A backend that returns only the rows asked for, packed (StepOutput::
  // logits_index): the same outputs, and just the top-n rows cross.
  FakeBackend::Options packed_model = DeviceModel();
  packed_model.pack_logits = true;
  const Outcome packed = RunAll(packed_model, {}, requests);
  ExpectSameOutputs(host, packed);
  EXPECT_EQ(packed.logits_rows_returned, 3 * 24);
}

TEST(SchedulerTest, DeviceSamplingSurvivesPreemption) {
  FakeBackend::Options model = DeviceModel();
  model.num_blocks = 16;  // 64 tokens for 8 sequences of up to 44
  Scheduler::Options o;
  o.max_num_batched_tokens = 16;
  const std::vector<SequenceRequest> requests = MixedRequests(30);
  int64_t checked = 0, mixed = 0;
  const Outcome crowd = RunAll(model, o, requests, CheckEveryChunk(requests, &checked, &mixed));
  EXPECT_GT(crowd.stats.preemptions, 0);
  EXPECT_EQ(checked, static_cast<int64_t>(requests.size()) * 30);
  FakeBackend::Options roomy = DeviceModel();
  roomy.num_blocks = 256;
  const Outcome calm = RunAll(roomy, o, requests);
  EXPECT_EQ(calm.stats.preemptions, 0);
  ExpectSameOutputs(calm, crowd);
  FakeBackend::Options host = model;
  host.samples_on_device = false;
  ExpectSameOutputs(RunAll(host, o, requests), crowd);
}

TEST(SchedulerTest, StopTokensEndDeviceSampledSequences) {
  auto probe = *FakeBackend::Create(SmallModel());
  const std::vector<int32_t> prompt = Prompt(5, 2);
  const std::vector<int32_t> ref = Reference(*probe, prompt, 8);
  const int32_t third = ref[2];
  ASSERT_EQ(std::find(ref.begin(), ref.begin() + 2, third), ref.begin() + 2);
  Scheduler::Options o;
  o.eos_token_ids = {third};
  SequenceRequest ignoring = Greedy(2, prompt, 8);
  ignoring.sampling.ignore_eos = true;
  SequenceRequest stop_id = Greedy(3, prompt, 8);
  stop_id.sampling.ignore_eos = true;
  stop_id.sampling.stop_token_ids = {ref[1]};
  const Outcome out = RunAll(DeviceModel(), o, {Greedy(1, prompt, 8), ignoring, stop_id});
  EXPECT_EQ(out.results.at(1).reason, FinishReason::kStop);
  EXPECT_EQ(out.results.at(1).tokens, std::vector<int32_t>(ref.begin(), ref.begin() + 3));
  EXPECT_EQ(out.results.at(2).reason, FinishReason::kLength);
  EXPECT_EQ(out.results.at(2).tokens, ref);
  EXPECT_EQ(out.results.at(3).reason, FinishReason::kStop);
  EXPECT_EQ(out.results.at(3).tokens, std::vector<int32_t>(ref.begin(), ref.begin() + 2));
  EXPECT_EQ(out.stats.device_sampled_tokens, 3 + 8 + 2);
}

TEST(SchedulerTest, SampleOnDeviceCanBeTurnedOff) {
  const std::vector<SequenceRequest> requests = MixedRequests(12);
  Scheduler::Options o;
  o.sample_on_device = false;
  int64_t sampled_chunks = 0;
  const Outcome off = RunAll(DeviceModel(), o, requests, [&](const StepPlan& plan, Harness& h) {
    EXPECT_FALSE(h.scheduler().samples_on_device());
    for (const SequenceChunk& c : plan.sequences) sampled_chunks += c.sampling.has_value();
  });
  EXPECT_EQ(sampled_chunks, 0);
  EXPECT_EQ(off.device_sampled_rows, 0);
  EXPECT_EQ(off.stats.device_sampled_tokens, 0);
  ExpectSameOutputs(off, RunAll(DeviceModel(), {}, requests));
  // A backend without device sampling never gets a DeviceSampling.
  sampled_chunks = 0;
  RunAll(SmallModel(), {}, requests, [&](const StepPlan& plan, Harness& h) {
    EXPECT_FALSE(h.scheduler().samples_on_device());
    for (const SequenceChunk& c : plan.sequences) sampled_chunks += c.sampling.has_value();
  });
  EXPECT_EQ(sampled_chunks, 0);
}

// Delegates to a FakeBackend, and replaces the token it samples for one
// sequence with `token`.
// --- Pipelined steps (Scheduler::Options::pipeline_steps) -----------------

FakeBackend::Options PipelinedModel(FakeBackend::Options model = DeviceModel()) {
  model.samples_on_device = true;
  model.pipelines = true;
  return model;
}

// Requests without penalties (every one can be pipelined): greedy and
// seeded draws under each cut, some ending at an EOS id, more of them than
// the batch holds so that admissions interrupt the pipeline.
std::vector<SequenceRequest> PipelinableRequests(int32_t max_tokens) {
  std::vector<SequenceRequest> r;
  for (uint64_t i = 0; i < 12; ++i) {
    SequenceRequest q = i % 3 == 0 ? Greedy(i, Prompt(3 + 2 * i, 40 + i), max_tokens - i)
                                   : Seeded(i, Prompt(4 + i, 60 + i), max_tokens, 100 + i);
    if (i % 3 == 2) q.sampling.top_k = 6;
    if (i % 4 == 1) q.sampling.top_p = 0.8f;
    if (i % 5 == 4) q.sampling.min_p = 0.1f;
    r.push_back(q);
  }
  return r;
}

// The same requests give the same tokens, logprobs and ends with the steps
// pipelined as one by one, through admissions mid-run, EOS stops (the token
// of the step already in flight is dropped) and a pool small enough to
// preempt; the fake checks every read-back against what was written.
TEST(SchedulerTest, PipelinedStepsGiveTheSameOutputs) {
  for (const int32_t blocks : {256, 24}) {
    SCOPED_TRACE(::testing::Message() << blocks << " blocks");
    FakeBackend::Options model = DeviceModel();
    model.num_blocks = blocks;
    Scheduler::Options o;
    o.max_num_seqs = 5;
    o.max_num_batched_tokens = 24;
    o.eos_token_ids = {7};
    const std::vector<SequenceRequest> requests = PipelinableRequests(40);
    Scheduler::Options one_by_one = o;
    one_by_one.pipeline_steps = false;
    const Outcome base = RunAll(PipelinedModel(model), one_by_one, requests);
    EXPECT_EQ(base.stats.pipelined_steps, 0);
    const Outcome piped = RunAll(PipelinedModel(model), o, requests);
    EXPECT_GT(piped.stats.pipelined_steps, piped.stats.steps / 3) << piped.stats.steps;
    ExpectSameOutputs(base, piped);
    int stopped = 0;
    for (const auto& [id, r] : piped.results) stopped += r.reason == FinishReason::kStop;
    EXPECT_GT(stopped, 0);
    if (blocks == 24) {
      // The pool bounds the batch while sequences wait: the pipeline goes on
      // through most of it all the same.
      EXPECT_GT(piped.stats.preemptions, 0);
      EXPECT_GT(piped.stats.pipelined_steps, piped.stats.steps / 2) << piped.stats.steps;
    }
  }
}

// Penalties pipeline: the lists a chunk carries are a step behind its fed
// token, which counts in them on the device (count_fed_token); the outputs
// are those of steps one by one, through preemption too. A sequence with
// top-n logprobs pipelines as well (its logits come back with each step).
TEST(SchedulerTest, PenaltiesAndTopLogprobsPipeline) {
  for (const int32_t blocks : {64, 16}) {
    SCOPED_TRACE(::testing::Message() << blocks << " blocks");
    FakeBackend::Options model = PipelinedModel();
    model.num_blocks = blocks;
    Scheduler::Options o;
    o.max_num_batched_tokens = 16;
    const std::vector<SequenceRequest> requests = MixedRequests(30);
    Scheduler::Options one_by_one = o;
    one_by_one.pipeline_steps = false;
    const Outcome base = RunAll(model, one_by_one, requests);
    const Outcome piped = RunAll(model, o, requests);
    EXPECT_GT(piped.stats.pipelined_steps, piped.stats.steps / 2) << piped.stats.steps;
    ExpectSameOutputs(base, piped);
    if (blocks == 16) {
      EXPECT_GT(piped.stats.preemptions, 0);
    }
  }
  std::vector<SequenceRequest> requests = MixedRequests(20);
  requests.push_back(Greedy(8, Prompt(6, 9), 20));
  requests.back().sampling.logprobs = 2;
  Scheduler::Options one_by_one;
  one_by_one.pipeline_steps = false;
  const Outcome base = RunAll(PipelinedModel(), one_by_one, requests);
  const Outcome piped = RunAll(PipelinedModel(), {}, requests);
  EXPECT_GT(piped.stats.pipelined_steps, piped.stats.steps / 2) << piped.stats.steps;
  ExpectSameOutputs(base, piped);
  ASSERT_EQ(piped.results.at(8).logprobs.size(), 20u);
  EXPECT_EQ(piped.results.at(8).logprobs[5].top.size(), 2u);
  // Packed logits (only the top-n row's cross) under pipelined steps.
  FakeBackend::Options packed_model = PipelinedModel();
  packed_model.pack_logits = true;
  const Outcome packed = RunAll(packed_model, {}, requests);
  ExpectSameOutputs(base, packed);
  EXPECT_EQ(packed.logits_rows_returned, 20);
}

// Ending a sequence while a pipelined step that computes its next token is
// in flight (abort, Finish for a stop string, a deadline) drops that token:
// no event follows the end, its blocks are free at once, and the others go
// on unchanged.
TEST(SchedulerTest, EndingASequenceDuringAPipelinedStepDropsItsToken) {
  FakeBackend::Options model = PipelinedModel();
  for (const int how : {0, 1, 2}) {
    SCOPED_TRACE(::testing::Message() << "how " << how);
    Harness h(model, {});
    SequenceRequest r1 = Greedy(1, Prompt(10, 1), 50);
    r1.deadline = h.now_ + absl::Seconds(5);
    ASSERT_TRUE(h.scheduler().Add(r1).ok());
    ASSERT_TRUE(h.scheduler().Add(Greedy(2, Prompt(7, 2), 12)).ok());
    for (int i = 0; i < 4; ++i) h.Record(h.scheduler().Step(h.now_));
    ASSERT_GT(h.scheduler().stats().pipelined_steps, 0);
    ASSERT_TRUE(h.scheduler().HasWork());
    const size_t tokens = h.results()[1].tokens.size();
    EXPECT_EQ(tokens, 4u);
    if (how == 0) {
      absl::StatusOr<SequenceOutput> out = h.scheduler().Abort(1);
      ASSERT_TRUE(out.ok());
      h.Record({*out});
    } else if (how == 1) {
      absl::StatusOr<SequenceOutput> out = h.scheduler().Finish(1, FinishReason::kStop);
      ASSERT_TRUE(out.ok());
      h.Record({*out});
    } else {
      h.now_ += absl::Seconds(6);
    }
    h.RunToEnd();  // the harness fails on an event after an end
    EXPECT_TRUE(h.results()[1].finished);
    EXPECT_EQ(h.results()[1].tokens.size(), tokens);
    EXPECT_EQ(h.results()[2].tokens, Reference(h.backend(), Prompt(7, 2), 12));
    EXPECT_EQ(h.kv().num_sequences(), 0);
    EXPECT_EQ(h.kv().NumAvailableBlocks(), model.num_blocks);
    EXPECT_FALSE(h.scheduler().HasWork());
  }
}

// MemShare under pipelined steps: the same remaps as one by one and the
// same tokens (a step's last token is committed by the step that writes
// it, so no block is shared before it is written).
TEST(SchedulerTest, MemShareUnderPipelinedSteps) {
  FakeBackend::Options model = PipelinedModel();
  model.window = 1;  // next token depends on the last one: cycles
  model.num_blocks = 256;
  auto run = [&](bool pipelined) {
    Scheduler::Options o;
    o.pipeline_steps = pipelined;
    Harness h(model, o);
    for (uint64_t i = 0; i < 3; ++i) {
      SequenceRequest r = Greedy(i, Prompt(8, 77 + i), 150);
      r.memshare.mode = kvmanager::DedupMode::kMemShare;
      EXPECT_TRUE(h.scheduler().Add(r).ok());
    }
    h.RunToEnd();
    return std::make_tuple(h.results(), h.kv().Stats().dedup_remapped,
                           h.scheduler().stats().pipelined_steps);
  };
  auto [base, base_remapped, base_piped] = run(false);
  auto [piped, piped_remapped, piped_steps] = run(true);
  EXPECT_EQ(base_piped, 0);
  EXPECT_GT(piped_steps, 100);
  EXPECT_GT(base_remapped, 0);
  EXPECT_EQ(piped_remapped, base_remapped);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(piped[i].tokens, base[i].tokens) << i;
    EXPECT_EQ(piped[i].usage.shared_blocks, base[i].usage.shared_blocks) << i;
  }
}

// A backend failure in a pipelined step ends that step's sequences with
// the error, whichever step it hits; nothing else is lost.
TEST(SchedulerTest, BackendFailureUnderPipelinedSteps) {
  for (const int after : {1, 3, 4}) {
    SCOPED_TRACE(::testing::Message() << "failure after " << after << " steps");
    Harness h(PipelinedModel(), {});
    ASSERT_TRUE(h.scheduler().Add(Greedy(1, Prompt(6, 1), 10)).ok());
    ASSERT_TRUE(h.scheduler().Add(Greedy(2, Prompt(9, 2), 10)).ok());
    for (int i = 0; i < after; ++i) h.Record(h.scheduler().Step(h.now_));
    h.backend().FailNextForwards(1);
    h.RunToEnd();
    for (const uint64_t id : {1, 2}) {
      const Result& r = h.results()[id];
      EXPECT_TRUE(r.finished) << id;
      EXPECT_EQ(r.status.code(), absl::StatusCode::kInternal) << id;
    }
    ASSERT_TRUE(h.scheduler().Add(Greedy(3, Prompt(5, 3), 6)).ok());
    h.RunToEnd();
    EXPECT_EQ(h.results()[3].tokens, Reference(h.backend(), Prompt(5, 3), 6));
    EXPECT_EQ(h.kv().NumAvailableBlocks(), 64);
  }
}

class CorruptingBackend : public Backend {
 public:
  CorruptingBackend(FakeBackend* inner, uint64_t victim, int32_t token)
      : inner_(inner), victim_(victim), token_(token) {}
  const KvCacheSpec& kv_spec() const override { return inner_->kv_spec(); }
  int32_t vocab_size() const override { return inner_->vocab_size(); }
  bool SamplesOnDevice() const override { return inner_->SamplesOnDevice(); }
  bool SupportsShiftedViews() const override { return inner_->SupportsShiftedViews(); }
  absl::Status Forward(const StepPlan& plan, StepOutput* output) override {
    absl::Status st = inner_->Forward(plan, output);
    for (size_t r = 0; st.ok() && r < output->sampled_token_ids.size(); ++r) {
      if (plan.sequences[output->rows[r]].seq_id == victim_) output->sampled_token_ids[r] = token_;
    }
    return st;
  }
  absl::Status CopyBlocks(int group,
                          absl::Span<const std::pair<int32_t, int32_t>> src_dst) override {
    return inner_->CopyBlocks(group, src_dst);
  }
  absl::Status ComputeDistanceSums(int group, absl::Span<const kvmanager::BlockPair> pairs,
                                   absl::Span<kvmanager::DistanceSums> out) override {
    return inner_->ComputeDistanceSums(group, pairs, out);
  }

 private:
  FakeBackend* const inner_;
  const uint64_t victim_;
  const int32_t token_;
};

TEST(SchedulerTest, ABadDeviceSampleFailsOnlyItsSequence) {
  for (int32_t bad : {64, -1}) {
    SCOPED_TRACE(bad);
    auto fake = *FakeBackend::Create(DeviceModel());
    CorruptingBackend backend(fake.get(), 1, bad);
    auto kv = *kvmanager::KvManager::Create(KvOptions(DeviceModel()));
    auto scheduler = *Scheduler::Create({}, &backend, kv.get());
    ASSERT_TRUE(scheduler->Add(Greedy(1, Prompt(6, 1), 5)).ok());
    ASSERT_TRUE(scheduler->Add(Greedy(2, Prompt(6, 2), 5)).ok());
    std::map<uint64_t, std::vector<SequenceOutput>> outs;
    while (scheduler->HasWork()) {
      for (SequenceOutput& o : scheduler->Step(absl::Now())) outs[o.seq_id].push_back(o);
    }
    ASSERT_EQ(outs[1].size(), 1u);
    EXPECT_EQ(outs[1][0].finish_reason, FinishReason::kError);
    EXPECT_EQ(outs[1][0].status.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(std::string(outs[1][0].status.message()),
                HasSubstr(bad < 0 ? "did not sample" : "outside the vocabulary"));
    std::vector<int32_t> tokens;
    for (const SequenceOutput& o : outs[2]) {
      for (const TokenLogprob& t : o.tokens) tokens.push_back(t.token_id);
    }
    EXPECT_EQ(tokens, Reference(*fake, Prompt(6, 2), 5));
    EXPECT_EQ(scheduler->stats().failed, 1);
    EXPECT_EQ(kv->NumAvailableBlocks(), 64);
    EXPECT_TRUE(kv->CheckInvariants().ok());
  }
}

}  // namespace
}  // namespace memshare::engine
