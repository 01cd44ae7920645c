#include "engine/llm_engine.h"

#include <algorithm>
#include <map>
#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "engine/testing/fake_backend.h"
#include "engine/testing/fake_text_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

using ::testing::HasSubstr;

// The fake backend's K/V distance is sqrt(differing slots / block size): a
// tau_kv below sqrt(1/16) accepts identical blocks only, so sharing cannot
// change the tokens (the server's default, 1.0, accepts any block).
constexpr float kIdenticalOnly = 0.2f;

// Collects the events of one request.
class Stream {
 public:
  InferenceEngine::EventCallback Callback() {
    return [this](const StreamEvent& e) {
      {
        absl::MutexLock lock(&mu_);
        EXPECT_FALSE(finished_) << "event after the final one";
        events_.push_back(e);
        for (int32_t t : e.token_ids) tokens_.push_back(t);
        text_ += e.text_delta;
        if (e.finished) finished_ = true;
      }
      // Last, outside the lock: a test may destroy the Stream as soon as
      // Wait returns (absl::Notification allows that; a mutex still held by
      // this thread would not).
      if (e.finished) done_.Notify();
    };
  }
  bool Wait(absl::Duration timeout = absl::Seconds(20)) {
    return done_.WaitForNotificationWithTimeout(timeout);
  }
  std::vector<int32_t> tokens() const {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  std::string text() const {
    absl::MutexLock lock(&mu_);
    return text_;
  }
  StreamEvent last() const {
    absl::MutexLock lock(&mu_);
    return events_.back();
  }
  size_t num_events() const {
    absl::MutexLock lock(&mu_);
    return events_.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<StreamEvent> events_;
  std::vector<int32_t> tokens_;
  std::string text_;
  bool finished_ = false;
  absl::Notification done_;
};

FakeBackend::Options Model() {
  FakeBackend::Options o;
  o.vocab_size = 64;
  o.num_blocks = 64;
  o.block_size = 4;
  return o;
}

std::unique_ptr<LlmEngine> MakeEngine(LlmEngine::Options options = {},
                                      FakeBackend::Options model = Model(),
                                      std::vector<int32_t> eos = {}) {
  LlmEngine::Parts parts;
  parts.backend = *FakeBackend::Create(model);
  parts.codec = std::make_unique<FakeTextCodec>(std::move(eos));
  options.model_info.model_id = "fake";
  auto engine = LlmEngine::Create(options, std::move(parts));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

std::vector<int32_t> Reference(std::vector<int32_t> history, int max_tokens,
                               FakeBackend::Options model = Model()) {
  auto backend = *FakeBackend::Create(model);
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    std::vector<float> logits = backend->LogitsFor(history);
    const int32_t t =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(t);
    history.push_back(t);
  }
  return out;
}

std::vector<int32_t> Ids(const std::string& text) { return *FakeTextCodec().EncodePrompt(text); }

EngineRequest Text(const std::string& id, const std::string& prompt, int max_tokens) {
  EngineRequest r;
  r.request_id = id;
  r.prompt_text = prompt;
  r.sampling.temperature = 0;
  r.sampling.max_tokens = max_tokens;
  return r;
}

TEST(LlmEngineDigitTokensTest, MarksThePiecesWithADigit) {
  const FakeTextCodec codec;
  const std::vector<bool> digit = LlmEngine::DigitTokens(codec, 64);
  ASSERT_EQ(digit.size(), 64u);
  for (int32_t id = 0; id < 64; ++id) {
    const char c = FakeTextCodec::kAlphabet[id];
    EXPECT_EQ(digit[id], c >= '0' && c <= '9') << id << " '" << c << "'";
  }
  EXPECT_TRUE(LlmEngine::DigitTokens(codec, 0).empty());
}

TEST(LlmEngineTest, StreamsGreedyTokensAndText) {
  auto engine = MakeEngine();
  Stream s;
  ASSERT_TRUE(engine->Submit(Text("a", "hello world", 16), s.Callback()).ok());
  ASSERT_TRUE(s.Wait());
  const std::vector<int32_t> ref = Reference(Ids("hello world"), 16);
  EXPECT_EQ(s.tokens(), ref);
  EXPECT_EQ(s.text(), FakeTextCodec::Decode(ref));
  const StreamEvent last = s.last();
  EXPECT_TRUE(last.finished);
  EXPECT_EQ(last.finish_reason, FinishReason::kLength);
  EXPECT_TRUE(last.status.ok());
  EXPECT_EQ(last.usage.prompt_tokens, 11);
  EXPECT_EQ(last.usage.completion_tokens, 16);
  EXPECT_GE(s.num_events(), 16u);  // one per step
}

TEST(LlmEngineTest, PromptFormsAgree) {
  auto engine = MakeEngine();
  Stream by_text, by_ids, by_chat;
  ASSERT_TRUE(engine->Submit(Text("t", "user hi assistant ", 5), by_text.Callback()).ok());
  EngineRequest ids = Text("i", "", 5);
  ids.prompt_token_ids = Ids("user hi assistant ");
  ASSERT_TRUE(engine->Submit(ids, by_ids.Callback()).ok());
  EngineRequest chat = Text("c", "", 5);
  chat.messages = {{"user", "hi"}};
  ASSERT_TRUE(engine->Submit(chat, by_chat.Callback()).ok());
  ASSERT_TRUE(by_text.Wait() && by_ids.Wait() && by_chat.Wait());
  EXPECT_EQ(by_text.tokens(), Reference(Ids("user hi assistant "), 5));
  EXPECT_EQ(by_ids.tokens(), by_text.tokens());
  EXPECT_EQ(by_chat.tokens(), by_text.tokens());
}

TEST(LlmEngineTest, StopStringEndsTheStreamAndIsNotEmitted) {
  const std::vector<int32_t> ref = Reference(Ids("abc"), 20);
  const std::string full = FakeTextCodec::Decode(ref);
  // Stop at the text of tokens 5..6; make sure it does not occur earlier.
  const std::string stop = full.substr(5, 2);
  ASSERT_EQ(full.find(stop), 5u) << full;
  auto engine = MakeEngine();
  Stream s;
  EngineRequest r = Text("a", "abc", 20);
  r.sampling.stop = {stop};
  ASSERT_TRUE(engine->Submit(r, s.Callback()).ok());
  ASSERT_TRUE(s.Wait());
  EXPECT_EQ(s.text(), full.substr(0, 5));
  EXPECT_EQ(s.last().finish_reason, FinishReason::kStop);
  EXPECT_EQ(s.tokens().size(), 7u);  // generation stopped at the token that completed it
  EXPECT_EQ(s.last().usage.completion_tokens, 7);
  EXPECT_TRUE(engine->Drain(absl::Seconds(5)).ok());
  EXPECT_EQ(engine->GetLoad().kv_blocks_used, 0);
}

TEST(LlmEngineTest, UnmatchedStopPrefixIsFlushedAtTheEnd) {
  const std::vector<int32_t> ref = Reference(Ids("abc"), 6);
  const std::string full = FakeTextCodec::Decode(ref);
  auto engine = MakeEngine();
  Stream s;
  EngineRequest r = Text("a", "abc", 6);
  r.sampling.stop = {full.substr(4, 2) + "!"};  // its start is the end of the output
  ASSERT_TRUE(engine->Submit(r, s.Callback()).ok());
  ASSERT_TRUE(s.Wait());
  EXPECT_EQ(s.text(), full);
  EXPECT_EQ(s.last().finish_reason, FinishReason::kLength);
}

TEST(LlmEngineTest, EosTokenStopsWithoutItsText) {
  const std::vector<int32_t> ref = Reference(Ids("xyz"), 10);
  const int32_t eos = ref[3];
  ASSERT_EQ(std::find(ref.begin(), ref.begin() + 3, eos), ref.begin() + 3);
  auto engine = MakeEngine({}, Model(), {eos});
  Stream s;
  ASSERT_TRUE(engine->Submit(Text("a", "xyz", 10), s.Callback()).ok());
  ASSERT_TRUE(s.Wait());
  EXPECT_EQ(s.tokens(), std::vector<int32_t>(ref.begin(), ref.begin() + 4));
  EXPECT_EQ(s.text(), FakeTextCodec::Decode(std::vector<int32_t>(ref.begin(), ref.begin() + 3)));
  EXPECT_EQ(s.last().finish_reason, FinishReason::kStop);
}

TEST(LlmEngineTest, BadRequestsAreRejectedWithoutEvents) {
  LlmEngine::Options o;
  o.scheduler.max_prompt_len = 20;
  auto engine = MakeEngine(o);
  bool called = false;
  auto never = [&called](const StreamEvent&) { called = true; };
  auto expect = [&](EngineRequest r, absl::StatusCode code, const std::string& text) {
    const absl::Status s = engine->Submit(std::move(r), never);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(text));
  };
  // One good request runs alongside the bad ones. Its first callback holds
  // the scheduler thread until they are all submitted, so it is still live
  // for the duplicate-id check (the fake backend can finish 30 tokens before
  // the test gets there).
  Stream good;
  absl::Notification first, release;
  auto good_cb = good.Callback();
  ASSERT_TRUE(engine
                  ->Submit(Text("good", "abc", 30),
                           [&](const StreamEvent& e) {
                             good_cb(e);
                             if (!first.HasBeenNotified()) {
                               first.Notify();
                               release.WaitForNotification();
                             }
                           })
                  .ok());
  first.WaitForNotification();

  expect(Text("e", "", 5), absl::StatusCode::kInvalidArgument, "prompt: must not be empty");
  expect(Text("", "abc", 5), absl::StatusCode::kInvalidArgument, "request_id");
  expect(Text("l", std::string(21, 'a'), 5), absl::StatusCode::kInvalidArgument,
         "prompt: 21 tokens is longer than the limit of 20");
  expect(Text("u", "abc!", 5), absl::StatusCode::kInvalidArgument, "prompt_text");
  EngineRequest t = Text("t", "abc", 5);
  t.sampling.temperature = -1;
  expect(t, absl::StatusCode::kInvalidArgument, "temperature: must be >= 0");
  EngineRequest k = Text("k", "abc", 5);
  k.sampling.top_k = -3;
  expect(k, absl::StatusCode::kInvalidArgument, "top_k");
  EngineRequest m = Text("m", "abc", 0);
  expect(m, absl::StatusCode::kInvalidArgument, "max_tokens");
  EngineRequest ids = Text("i", "", 5);
  ids.prompt_token_ids = {1, 99};
  expect(ids, absl::StatusCode::kInvalidArgument, "prompt_token_ids[1]");
  EngineRequest chat = Text("c", "", 5);
  chat.messages = {{"wizard", "hi"}};
  expect(chat, absl::StatusCode::kInvalidArgument, "messages[0].role");
  EngineRequest tau = Text("x", "abc", 5);
  tau.memshare.tau_lex = 1.5f;
  expect(tau, absl::StatusCode::kInvalidArgument, "memshare.tau_lex");
  tau.memshare.tau_lex.reset();
  tau.memshare.tau_kv = -0.1f;
  expect(tau, absl::StatusCode::kInvalidArgument, "memshare.tau_kv");
  expect(Text("good", "abc", 5), absl::StatusCode::kAlreadyExists, "already live");
  EXPECT_EQ(engine->Submit(Text("n", "abc", 5), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  release.Notify();

  ASSERT_TRUE(good.Wait());
  EXPECT_EQ(good.tokens(), Reference(Ids("abc"), 30));
  EXPECT_FALSE(called);
}

TEST(LlmEngineTest, AbortEndsTheStreamAndFreesBlocks) {
  auto engine = MakeEngine();
  Stream s;
  absl::Notification first;
  absl::Notification release;
  auto cb = s.Callback();
  // Hold the scheduler thread in the first callback so the abort lands
  // while the request is running.
  ASSERT_TRUE(engine
                  ->Submit(Text("a", "abc", 200),
                           [&](const StreamEvent& e) {
                             cb(e);
                             if (!first.HasBeenNotified()) {
                               first.Notify();
                               release.WaitForNotification();
                             }
                           })
                  .ok());
  first.WaitForNotification();
  EXPECT_TRUE(engine->Abort("a").ok());
  release.Notify();
  ASSERT_TRUE(s.Wait());
  EXPECT_EQ(s.last().finish_reason, FinishReason::kAbort);
  EXPECT_TRUE(s.last().status.ok());
  EXPECT_LT(s.tokens().size(), 200u);
  EXPECT_EQ(engine->Abort("a").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine->Abort("nope").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(engine->Drain(absl::Seconds(5)).ok());
  const LoadReport load = engine->GetLoad();
  EXPECT_EQ(load.kv_blocks_used, 0);
  EXPECT_EQ(load.running_requests, 0);
}

TEST(LlmEngineTest, FullQueueIsResourceExhausted) {
  LlmEngine::Options o;
  o.max_live_requests = 2;
  auto engine = MakeEngine(o);
  absl::Notification held, release;
  Stream a, b, c;
  auto cb = a.Callback();
  ASSERT_TRUE(engine
                  ->Submit(Text("a", "abc", 3),
                           [&](const StreamEvent& e) {
                             cb(e);
                             if (!held.HasBeenNotified()) {
                               held.Notify();
                               release.WaitForNotification();
                             }
                           })
                  .ok());
  held.WaitForNotification();
  ASSERT_TRUE(engine->Submit(Text("b", "abc", 3), b.Callback()).ok());
  const absl::Status full = engine->Submit(Text("c", "abc", 3), c.Callback());
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  const LoadReport load = engine->GetLoad();
  EXPECT_EQ(load.running_requests + load.waiting_requests, 2);
  release.Notify();
  ASSERT_TRUE(a.Wait() && b.Wait());
  ASSERT_TRUE(engine->Drain(absl::Seconds(5)).ok());
}

TEST(LlmEngineTest, DrainRefusesNewWorkAndWaits) {
  auto engine = MakeEngine();
  Stream s;
  ASSERT_TRUE(engine->Submit(Text("a", "abc", 50), s.Callback()).ok());
  EXPECT_TRUE(engine->Drain(absl::Seconds(10)).ok());
  EXPECT_TRUE(s.Wait(absl::ZeroDuration()));
  EXPECT_EQ(s.tokens().size(), 50u);
  EXPECT_EQ(engine->Submit(Text("b", "abc", 5), s.Callback()).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(LlmEngineTest, DeadlineEndsWithDeadlineExceeded) {
  auto engine = MakeEngine();
  Stream s;
  EngineRequest r = Text("a", "abc", 10);
  r.deadline = absl::Now() - absl::Seconds(1);
  ASSERT_TRUE(engine->Submit(r, s.Callback()).ok());
  ASSERT_TRUE(s.Wait());
  EXPECT_EQ(s.last().status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(s.last().finished);
}

TEST(LlmEngineTest, ShutdownEndsLiveRequests) {
  Stream s;
  {
    FakeBackend::Options model = Model();
    model.num_blocks = 1024;  // room for 4000 tokens: far more than the test lasts
    // Before the engine: its destructor delivers the final event to the
    // callback below, which uses them.
    absl::Notification first;
    auto cb = s.Callback();
    auto engine = MakeEngine({}, model);
    ASSERT_TRUE(engine
                    ->Submit(Text("a", "abc", 4000),
                             [&](const StreamEvent& e) {
                               cb(e);
                               if (!first.HasBeenNotified()) {
                                 first.Notify();
                                 // Let the destructor begin while this step is running.
                                 absl::SleepFor(absl::Milliseconds(50));
                               }
                             })
                    .ok());
    first.WaitForNotification();
  }  // destroyed while running
  ASSERT_TRUE(s.Wait(absl::ZeroDuration()));
  EXPECT_EQ(s.last().status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(s.tokens().size(), 4000u);
}

TEST(LlmEngineTest, ConcurrentSubmittersThroughASmallPool) {
  FakeBackend::Options model = Model();
  model.num_blocks = 20;
  LlmEngine::Options o;
  o.scheduler.max_num_batched_tokens = 24;
  auto engine = MakeEngine(o, model);
  constexpr int kThreads = 4, kPerThread = 8;
  std::vector<std::unique_ptr<Stream>> streams(kThreads * kPerThread);
  std::vector<std::string> prompts(streams.size());
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int n = t * kPerThread + i;
        streams[n] = std::make_unique<Stream>();
        prompts[n] = std::string(FakeTextCodec::kAlphabet).substr(n % 40, 3 + (n * 7) % 20);
        EXPECT_TRUE(
            engine
                ->Submit(Text(absl::StrCat("r", n), prompts[n], 5 + n % 17), streams[n]->Callback())
                .ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (size_t n = 0; n < streams.size(); ++n) {
    ASSERT_TRUE(streams[n]->Wait()) << n;
    EXPECT_EQ(streams[n]->tokens(), Reference(Ids(prompts[n]), 5 + n % 17, model)) << n;
  }
  EXPECT_GT(engine->GetSchedulerStats().preemptions, 0);
  EXPECT_TRUE(engine->Drain(absl::Seconds(5)).ok());
  const LoadReport load = engine->GetLoad();
  EXPECT_EQ(load.kv_blocks_used, 0);
  EXPECT_EQ(load.kv_blocks_total, 20);
  EXPECT_EQ(load.preemptions, engine->GetSchedulerStats().preemptions);
}

TEST(LlmEngineTest, ModelInfoAndLogprobs) {
  auto engine = MakeEngine();
  const ModelInfo info = engine->GetModelInfo();
  EXPECT_EQ(info.model_id, "fake");
  EXPECT_EQ(info.vocab_size, 64);
  EXPECT_EQ(info.block_size, 4);
  EXPECT_EQ(info.max_model_len, 256);
  EXPECT_EQ(info.kv_block_bytes, 2 * 2 * 1 * 4 * 1 * 2);  // layers, K/V, heads, slots, dim, bf16
  Stream s;
  EngineRequest r = Text("a", "abc", 3);
  r.sampling.logprobs = 2;
  std::vector<TokenLogprob> got;
  absl::Mutex mu;
  auto cb = s.Callback();
  ASSERT_TRUE(engine
                  ->Submit(r,
                           [&](const StreamEvent& e) {
                             absl::MutexLock lock(&mu);
                             for (const auto& l : e.logprobs) got.push_back(l);
                             cb(e);
                           })
                  .ok());
  ASSERT_TRUE(s.Wait());
  absl::MutexLock lock(&mu);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].top.size(), 2u);
}

TEST(LlmEngineTest, StepObserverSeesEveryPhase) {
  auto engine = MakeEngine();
  absl::Mutex mu;
  std::map<StepPhase, int> seen;
  engine->SetStepObserver([&](StepPhase phase, double seconds) {
    absl::MutexLock lock(&mu);
    EXPECT_GE(seconds, 0);
    ++seen[phase];
  });
  Stream s;
  ASSERT_TRUE(engine->Submit(Text("a", "abc", 5), s.Callback()).ok());
  ASSERT_TRUE(s.Wait());
  ASSERT_TRUE(engine->Drain(absl::Seconds(5)).ok());
  absl::MutexLock lock(&mu);
  EXPECT_EQ(seen[StepPhase::kSchedule], 5);  // one prefill step, four decodes
  EXPECT_EQ(seen[StepPhase::kPrefill], 1);
  EXPECT_EQ(seen[StepPhase::kDecode], 4);
  EXPECT_EQ(seen[StepPhase::kSample], 5);
}

TEST(LlmEngineTest, LoadCountsPrefixCacheAndMemShare) {
  FakeBackend::Options model = Model();
  model.window = 1;  // cycles: MemShare finds repeated blocks
  LlmEngine::Options o;
  o.kv.segmenter.min_step_tokens = 8;
  o.kv.segmenter.max_step_tokens = 16;
  o.kv.dedup.tau_kv = kIdenticalOnly;
  auto engine = MakeEngine(o, model);
  Stream a, b;
  EngineRequest r = Text("a", "abcdefghijklmnop", 150);
  r.memshare.mode = MemShareParams::Mode::kOn;
  ASSERT_TRUE(engine->Submit(r, a.Callback()).ok());
  ASSERT_TRUE(a.Wait());
  r.request_id = "b";
  r.sampling.max_tokens = 2;
  ASSERT_TRUE(engine->Submit(r, b.Callback()).ok());
  ASSERT_TRUE(b.Wait());
  ASSERT_TRUE(engine->Drain(absl::Seconds(5)).ok());
  const LoadReport load = engine->GetLoad();
  EXPECT_GT(load.prefix_cache_queries, 0);
  EXPECT_GT(load.prefix_cache_hits, 0);  // b's prompt is a's
  EXPECT_GT(load.dedup_remapped, 0);
  EXPECT_GE(load.dedup_candidates, load.dedup_verified);
  EXPECT_GE(load.dedup_verified, load.dedup_rejected);
  EXPECT_GT(a.last().usage.shared_blocks, 0);
}

// A backend that cannot read shifted views gets an engine without them
// (the engine turns DedupPolicy::shifted_sharing off), and MemShare still
// shares whole blocks.
TEST(LlmEngineTest, ShiftedSharingOnlyWithABackendThatReadsViews) {
  for (const bool reads_views : {true, false}) {
    FakeBackend::Options model = Model();
    model.window = 1;
    model.shifted_views = reads_views;
    LlmEngine::Options o;
    o.kv.segmenter.min_step_tokens = 8;
    o.kv.segmenter.max_step_tokens = 16;
    o.kv.dedup.tau_kv = kIdenticalOnly;
    auto engine = MakeEngine(o, model);
    ASSERT_NE(engine, nullptr);
    Stream a;
    EngineRequest r = Text("a", "abcdefghijklmnopq", 150);
    r.memshare.mode = MemShareParams::Mode::kOn;
    ASSERT_TRUE(engine->Submit(r, a.Callback()).ok());
    ASSERT_TRUE(a.Wait());
    EXPECT_EQ(a.tokens(), Reference(Ids("abcdefghijklmnopq"), 150, model)) << reads_views;
    const kvmanager::KvStatsSnapshot kv = engine->GetKvStats();
    EXPECT_GT(kv.dedup_remapped, 0) << reads_views;
    if (!reads_views) {
      EXPECT_EQ(kv.dedup_remapped_shifted, 0);
    }
  }
}

// The same requests through an engine whose backend samples on the device:
// the same tokens, text, stop-string ends and logprobs as host sampling.
TEST(LlmEngineTest, DeviceSamplingStreamsWhatHostSamplingStreams) {
  FakeBackend::Options device_model = Model();
  device_model.samples_on_device = true;
  auto host = MakeEngine();
  auto device = MakeEngine({}, device_model);

  EngineRequest seeded = Text("seeded", "the prompt", 30);
  seeded.sampling.temperature = 0.8f;
  seeded.sampling.seed = 99;
  seeded.sampling.top_p = 0.9f;
  seeded.sampling.repetition_penalty = 1.3f;
  seeded.sampling.frequency_penalty = 0.2f;
  // Where the seeded reply stops once a stop string is set: at the first
  // occurrence of two characters taken from its middle.
  Stream probe;
  ASSERT_TRUE(host->Submit(seeded, probe.Callback()).ok());
  ASSERT_TRUE(probe.Wait());
  const std::string full = probe.text();
  ASSERT_EQ(full.size(), 30u);
  const std::string stop = full.substr(12, 2);
  const size_t cut = full.find(stop);
  seeded.request_id = "seeded-stop";
  seeded.sampling.stop = {stop};

  EngineRequest greedy_stop = Text("greedy-stop", "abc", 20);
  const std::string greedy_full = FakeTextCodec::Decode(Reference(Ids("abc"), 20));
  greedy_stop.sampling.stop = {greedy_full.substr(5, 2)};
  EngineRequest with_logprobs = Text("logprobs", "some words", 12);
  with_logprobs.sampling.temperature = 1.0f;
  with_logprobs.sampling.seed = 5;
  with_logprobs.sampling.logprobs = 2;

  std::vector<EngineRequest> requests = {seeded, greedy_stop, with_logprobs};
  std::vector<std::unique_ptr<Stream>> on_host, on_device;
  for (const EngineRequest& r : requests) {
    on_host.push_back(std::make_unique<Stream>());
    on_device.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(host->Submit(r, on_host.back()->Callback()).ok());
    ASSERT_TRUE(device->Submit(r, on_device.back()->Callback()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(requests[i].request_id);
    ASSERT_TRUE(on_host[i]->Wait());
    ASSERT_TRUE(on_device[i]->Wait());
    EXPECT_EQ(on_device[i]->tokens(), on_host[i]->tokens());
    EXPECT_EQ(on_device[i]->text(), on_host[i]->text());
    const StreamEvent a = on_host[i]->last(), b = on_device[i]->last();
    EXPECT_TRUE(b.status.ok()) << b.status;
    EXPECT_EQ(b.finish_reason, a.finish_reason);
    EXPECT_EQ(b.usage.completion_tokens, a.usage.completion_tokens);
  }
  EXPECT_EQ(on_device[0]->text(), full.substr(0, cut));
  EXPECT_EQ(on_device[0]->last().finish_reason, FinishReason::kStop);
  EXPECT_EQ(on_device[1]->text(), greedy_full.substr(0, 5));
  EXPECT_EQ(on_device[1]->last().finish_reason, FinishReason::kStop);
  ASSERT_TRUE(host->Drain(absl::Seconds(5)).ok());
  ASSERT_TRUE(device->Drain(absl::Seconds(5)).ok());
  // Every request was sampled on the device, the logprobs one too.
  const SchedulerStats stats = device->GetSchedulerStats();
  EXPECT_EQ(stats.device_sampled_tokens, stats.generated_tokens);
  EXPECT_GT(stats.device_sampled_tokens, 0);
  EXPECT_EQ(host->GetSchedulerStats().device_sampled_tokens, 0);
  EXPECT_EQ(device->GetLoad().kv_blocks_used, 0);
}

// Pipelined steps (the scheduler's default on a backend that runs them)
// stream what one-by-one steps stream: stop strings found one step late
// drop the token already in flight, and a small pool preempts.
TEST(LlmEngineTest, PipelinedStepsStreamWhatOneByOneStepsStream) {
  FakeBackend::Options model = Model();
  model.samples_on_device = true;
  model.pipelines = true;
  model.num_blocks = 24;
  LlmEngine::Options one_by_one;
  one_by_one.scheduler.pipeline_steps = false;
  one_by_one.scheduler.max_num_batched_tokens = 24;
  LlmEngine::Options pipelined = one_by_one;
  pipelined.scheduler.pipeline_steps = true;
  auto base = MakeEngine(one_by_one, model);
  auto piped = MakeEngine(pipelined, model);

  std::vector<EngineRequest> requests;
  const std::string greedy_full = FakeTextCodec::Decode(Reference(Ids("abc"), 20));
  requests.push_back(Text("greedy-stop", "abc", 20));
  requests.back().sampling.stop = {greedy_full.substr(5, 2)};
  for (int n = 0; n < 10; ++n) {
    EngineRequest r = Text(absl::StrCat("r", n),
                           std::string(FakeTextCodec::kAlphabet).substr(n * 3, 4 + n), 6 + 3 * n);
    if (n % 2 == 1) {
      r.sampling.temperature = 0.9f;
      r.sampling.seed = 40 + n;
      r.sampling.top_k = 8;
    }
    if (n == 3) r.sampling.stop = {"e"};
    requests.push_back(r);
  }
  std::vector<std::unique_ptr<Stream>> a, b;
  for (const EngineRequest& r : requests) {
    a.push_back(std::make_unique<Stream>());
    b.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(base->Submit(r, a.back()->Callback()).ok());
    ASSERT_TRUE(piped->Submit(r, b.back()->Callback()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(requests[i].request_id);
    ASSERT_TRUE(a[i]->Wait());
    ASSERT_TRUE(b[i]->Wait());
    EXPECT_EQ(b[i]->tokens(), a[i]->tokens());
    EXPECT_EQ(b[i]->text(), a[i]->text());
    EXPECT_TRUE(b[i]->last().status.ok()) << b[i]->last().status;
    EXPECT_EQ(b[i]->last().finish_reason, a[i]->last().finish_reason);
    EXPECT_EQ(b[i]->last().usage.completion_tokens, a[i]->last().usage.completion_tokens);
  }
  EXPECT_EQ(b[0]->text(), greedy_full.substr(0, 5));
  ASSERT_TRUE(base->Drain(absl::Seconds(5)).ok());
  ASSERT_TRUE(piped->Drain(absl::Seconds(5)).ok());
  EXPECT_EQ(base->GetSchedulerStats().pipelined_steps, 0);
  EXPECT_GT(piped->GetSchedulerStats().pipelined_steps, 0);
  EXPECT_EQ(piped->GetLoad().kv_blocks_used, 0);
}

}  // namespace
}  // namespace memshare::engine
