#include "engine/server/testing/fake_inference_engine.h"

#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

struct Collected {
  absl::Mutex mu;
  std::vector<int32_t> tokens;
  std::string text;
  StreamEvent last;
  absl::Notification done;
};

InferenceEngine::EventCallback Collect(Collected* c) {
  return [c](const StreamEvent& e) {
    absl::MutexLock lock(&c->mu);
    c->tokens.insert(c->tokens.end(), e.token_ids.begin(), e.token_ids.end());
    c->text += e.text_delta;
    if (e.finished || !e.status.ok()) {
      c->last = e;
      c->done.Notify();
    }
  };
}

EngineRequest Text(const std::string& id, const std::string& text, int max_tokens) {
  EngineRequest r;
  r.request_id = id;
  r.prompt_text = text;
  r.sampling.max_tokens = max_tokens;
  return r;
}

std::unique_ptr<FakeInferenceEngine> Make(FakeInferenceEngine::Options o = {}) {
  auto e = FakeInferenceEngine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return *std::move(e);
}

TEST(FakeInferenceEngineTest, GeneratesDeterministicTokensUntilLength) {
  // Before the engine: its thread may still be inside a callback when a
  // test returns, so the engine (which joins it) must be destroyed first.
  Collected a, b;
  auto engine = Make();
  ASSERT_TRUE(engine->Submit(Text("a", "hello", 20), Collect(&a)).ok());
  ASSERT_TRUE(engine->Submit(Text("b", "hello", 20), Collect(&b)).ok());
  ASSERT_TRUE(a.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(b.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(a.tokens.size(), 20u);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text.size(), 20u);
  EXPECT_EQ(a.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(a.last.usage.prompt_tokens, 5);
  EXPECT_EQ(a.last.usage.completion_tokens, 20);
  const std::vector<int32_t> prompt = {'h', 'e', 'l', 'l', 'o'};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(a.tokens[i], FakeInferenceEngine::TokenAt(prompt, 0, i));
  EXPECT_EQ(engine->GetLoad().kv_blocks_used, 0);
}

TEST(FakeInferenceEngineTest, StopStringsEndTheStreamAndAreNotReturned) {
  // Before the engine: its thread may still be inside a callback when a
  // test returns, so the engine (which joins it) must be destroyed first.
  Collected probe;
  Collected c;
  auto engine = Make();
  // Find the text the prompt generates, and stop on its characters 5..6.
  ASSERT_TRUE(engine->Submit(Text("p", "xyz", 12), Collect(&probe)).ok());
  ASSERT_TRUE(probe.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EngineRequest r = Text("s", "xyz", 12);
  r.sampling.stop = {probe.text.substr(5, 2)};
  ASSERT_TRUE(engine->Submit(std::move(r), Collect(&c)).ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(c.text, probe.text.substr(0, probe.text.find(probe.text.substr(5, 2))));
}

TEST(FakeInferenceEngineTest, AbortFreesBlocksEvenWhilePaused) {
  FakeInferenceEngine::Options o;
  o.start_paused = true;
  // Before the engine: its thread may still be inside a callback when a
  // test returns, so the engine (which joins it) must be destroyed first.
  Collected c;
  auto engine = Make(o);
  ASSERT_TRUE(engine->Submit(Text("a", std::string(100, 'x'), 10), Collect(&c)).ok());
  EXPECT_EQ(engine->GetLoad().waiting_requests, 1);
  EXPECT_EQ(engine->GetLoad().waiting_tokens, 100);
  ASSERT_TRUE(engine->Abort("a").ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kAbort);
  EXPECT_EQ(engine->GetLoad().waiting_requests, 0);
  EXPECT_EQ(engine->Abort("a").code(), absl::StatusCode::kNotFound);
}

TEST(FakeInferenceEngineTest, RefusesBadRequestsAndAFullQueue) {
  FakeInferenceEngine::Options o;
  o.start_paused = true;
  o.max_waiting = 1;
  o.max_model_len = 50;
  // Before the engine: its thread may still be inside a callback when a
  // test returns, so the engine (which joins it) must be destroyed first.
  Collected c;
  auto engine = Make(o);
  EXPECT_EQ(engine->Submit(Text("a", "", 10), Collect(&c)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Text("a", "hi", 100), Collect(&c)).code(),
            absl::StatusCode::kInvalidArgument);
  EngineRequest ids = Text("a", "", 10);
  ids.prompt_token_ids = {1, 999};
  EXPECT_EQ(engine->Submit(std::move(ids), Collect(&c)).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(engine->Submit(Text("a", "hi", 10), Collect(&c)).ok());
  EXPECT_EQ(engine->Submit(Text("a", "hi", 10), Collect(&c)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(engine->Submit(Text("b", "hi", 10), Collect(&c)).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(FakeInferenceEngineTest, DeadlineEndsWithDeadlineExceeded) {
  FakeInferenceEngine::Options o;
  o.start_paused = true;
  // Before the engine: its thread may still be inside a callback when a
  // test returns, so the engine (which joins it) must be destroyed first.
  Collected c;
  auto engine = Make(o);
  EngineRequest r = Text("a", "hi", 10);
  r.deadline = absl::Now() + absl::Milliseconds(20);
  ASSERT_TRUE(engine->Submit(std::move(r), Collect(&c)).ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(c.last.status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(FakeInferenceEngineTest, SharesBlocksWithMemShareOnAndReportsSteps) {
  FakeInferenceEngine::Options o;
  o.block_size = 4;
  // Before the engine: its thread may still be inside a callback when a
  // test returns, so the engine (which joins it) must be destroyed first.
  Collected c;
  auto engine = Make(o);
  std::atomic<int> steps{0};
  engine->SetStepObserver([&](StepPhase, double) { ++steps; });
  ASSERT_TRUE(engine->Submit(Text("a", "hi", 64), Collect(&c)).ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(c.last.usage.shared_blocks, 4);  // 16 generated blocks / 4
  EXPECT_GT(c.last.usage.kv_blocks_peak_logical, c.last.usage.kv_blocks_peak_physical);
  EXPECT_EQ(engine->GetLoad().dedup_remapped, 4);
  EXPECT_GT(steps.load(), 0);
}

}  // namespace
}  // namespace memshare::engine
