// The whole engine (scheduler, KV manager, CPU backend, sampler) against
// transformers' greedy tokens for every golden checkpoint
// (tests/data/golden, made by tools/golden/make_golden.py).
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "engine/cpu_engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

constexpr const char* kCheckpoints[] = {"llama_gqa", "llama_tied_llama3", "mistral_mha",
                                        "qwen2_bias", "qwen3_qknorm"};

struct GoldenPrompt {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
};

std::string Dir(const std::string& name) { return "tests/data/golden/" + name; }

std::vector<GoldenPrompt> ReadGolden(const std::string& name) {
  std::ifstream file(Dir(name) + "/golden.json");
  EXPECT_TRUE(file) << name;
  std::stringstream text;
  text << file.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str());
  std::vector<GoldenPrompt> out;
  for (const auto& p : j["prompts"]) {
    out.push_back(
        {p["prompt"].get<std::vector<int32_t>>(), p["tokens"].get<std::vector<int32_t>>()});
  }
  return out;
}

// Collects one request's stream.
struct Stream {
  absl::Mutex mu;
  std::vector<int32_t> tokens;
  StreamEvent last;
  absl::Notification done;

  InferenceEngine::EventCallback Callback() {
    return [this](const StreamEvent& e) {
      absl::MutexLock lock(&mu);
      tokens.insert(tokens.end(), e.token_ids.begin(), e.token_ids.end());
      if (e.finished) {
        last = e;
        done.Notify();
      }
    };
  }
};

EngineRequest Greedy(const std::string& id, const std::vector<int32_t>& prompt, int n,
                     MemShareParams::Mode memshare) {
  EngineRequest r;
  r.request_id = id;
  r.prompt_token_ids = prompt;
  r.sampling.temperature = 0;
  r.sampling.max_tokens = n;
  r.sampling.ignore_eos = true;
  r.memshare.mode = memshare;
  return r;
}

CpuEngineOptions Options(const std::string& name, int32_t num_blocks) {
  CpuEngineOptions o;
  o.model_dir = Dir(name);
  o.block_size = 16;
  o.num_blocks = num_blocks;
  o.num_threads = 2;
  o.engine.kv.dedup.mode = kvmanager::DedupMode::kOff;
  return o;
}

class GoldenEngineTest : public ::testing::TestWithParam<const char*> {};

// Every prompt of the checkpoint at once, MemShare off: each request's greedy
// tokens are transformers'.
TEST_P(GoldenEngineTest, GreedyTokensMatchTransformers) {
  const std::string name = GetParam();
  auto engine = CreateCpuEngine(Options(name, 64));
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_FALSE(engine->has_tokenizer);
  const std::vector<GoldenPrompt> golden = ReadGolden(name);
  ASSERT_FALSE(golden.empty());
  std::vector<std::unique_ptr<Stream>> streams;
  for (size_t i = 0; i < golden.size(); ++i) {
    streams.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(
        engine->engine
            ->Submit(Greedy(absl::StrCat("p", i), golden[i].prompt,
                            static_cast<int>(golden[i].tokens.size()), MemShareParams::Mode::kOff),
                     streams[i]->Callback())
            .ok());
  }
  for (size_t i = 0; i < golden.size(); ++i) {
    ASSERT_TRUE(streams[i]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    absl::MutexLock lock(&streams[i]->mu);
    EXPECT_TRUE(streams[i]->last.status.ok()) << streams[i]->last.status;
    EXPECT_EQ(streams[i]->tokens, golden[i].tokens) << name << " prompt " << i;
  }
  const ModelInfo info = engine->engine->GetModelInfo();
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.model_id, name);
  EXPECT_EQ(info.num_layers, engine->config.num_layers);
}

// A pool far too small for all prompts at once: requests are preempted and
// recomputed, and their tokens still match.
TEST_P(GoldenEngineTest, GreedyTokensSurvivePreemption) {
  const std::string name = GetParam();
  CpuEngineOptions o = Options(name, 0);
  o.block_size = 4;
  o.num_blocks = 20;  // 80 token slots; the prompts need up to 65 each
  auto engine = CreateCpuEngine(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<GoldenPrompt> golden = ReadGolden(name);
  std::vector<std::unique_ptr<Stream>> streams;
  for (size_t i = 0; i < golden.size(); ++i) {
    streams.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(
        engine->engine
            ->Submit(Greedy(absl::StrCat("p", i), golden[i].prompt,
                            static_cast<int>(golden[i].tokens.size()), MemShareParams::Mode::kOff),
                     streams[i]->Callback())
            .ok());
  }
  for (size_t i = 0; i < golden.size(); ++i) {
    ASSERT_TRUE(streams[i]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    absl::MutexLock lock(&streams[i]->mu);
    EXPECT_EQ(streams[i]->tokens, golden[i].tokens) << name << " prompt " << i;
  }
  EXPECT_GT(engine->engine->GetSchedulerStats().preemptions, 0);
}

// MemShare on, greedy, every golden prompt at once: the engine runs them all
// to the end (remaps may change tokens after the first shared block, so only
// the run itself is checked here).
TEST_P(GoldenEngineTest, MemShareOnRunsEveryPrompt) {
  const std::string name = GetParam();
  CpuEngineOptions o = Options(name, 256);
  o.block_size = 4;
  o.engine.kv.segmenter.min_step_tokens = 8;
  o.engine.kv.segmenter.max_step_tokens = 16;
  auto engine = CreateCpuEngine(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<GoldenPrompt> golden = ReadGolden(name);
  std::vector<std::unique_ptr<Stream>> streams;
  for (size_t i = 0; i < golden.size(); ++i) {
    streams.push_back(std::make_unique<Stream>());
    ASSERT_TRUE(
        engine->engine
            ->Submit(Greedy(absl::StrCat("p", i), golden[i].prompt, 100, MemShareParams::Mode::kOn),
                     streams[i]->Callback())
            .ok());
  }
  for (size_t i = 0; i < golden.size(); ++i) {
    ASSERT_TRUE(streams[i]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    absl::MutexLock lock(&streams[i]->mu);
    EXPECT_TRUE(streams[i]->last.status.ok()) << streams[i]->last.status;
    EXPECT_EQ(streams[i]->tokens.size(), 100u);
  }
  EXPECT_GT(engine->engine->GetKvStats().dedup_steps, 0);
  EXPECT_EQ(engine->engine->GetSchedulerStats().dedup_errors, 0);
}

// The prompt that repeats itself (a 12-token pattern, three times), with a
// repetition penalty below 1 so that the model keeps repeating its tokens:
// MemShare verifies the repeated steps' blocks on the CPU backend's K/V and
// the KV stats show blocks remapped; with MemShare off, none.
TEST_P(GoldenEngineTest, MemShareRemapsWhereThePromptRepeatsItself) {
  const std::string name = GetParam();
  const GoldenPrompt repeating = ReadGolden(name)[4];
  ASSERT_EQ(repeating.prompt.size(), 36u);
  for (const MemShareParams::Mode mode : {MemShareParams::Mode::kOff, MemShareParams::Mode::kOn}) {
    CpuEngineOptions o = Options(name, 256);
    o.block_size = 4;
    o.engine.kv.segmenter.min_step_tokens = 8;
    o.engine.kv.segmenter.max_step_tokens = 16;
    auto engine = CreateCpuEngine(o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    EngineRequest r = Greedy("repeat", repeating.prompt, 200, mode);
    r.sampling.repetition_penalty = 0.2f;
    Stream stream;
    ASSERT_TRUE(engine->engine->Submit(r, stream.Callback()).ok());
    ASSERT_TRUE(stream.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    absl::MutexLock lock(&stream.mu);
    EXPECT_TRUE(stream.last.status.ok()) << stream.last.status;
    EXPECT_EQ(stream.tokens.size(), 200u);
    const kvmanager::KvStatsSnapshot kv = engine->engine->GetKvStats();
    const Usage& usage = stream.last.usage;
    if (mode == MemShareParams::Mode::kOff) {
      EXPECT_EQ(kv.dedup_remapped, 0);
      EXPECT_EQ(usage.shared_blocks, 0);
      EXPECT_EQ(usage.kv_blocks_peak_physical, usage.kv_blocks_peak_logical);
    } else {
      EXPECT_GT(kv.dedup_remapped, 0) << name;
      EXPECT_GE(kv.dedup_candidates, kv.dedup_verified);
      EXPECT_GT(usage.shared_blocks, 0) << name;
      EXPECT_LT(usage.kv_blocks_peak_physical, usage.kv_blocks_peak_logical) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GoldenEngineTest, ::testing::ValuesIn(kCheckpoints));

}  // namespace
}  // namespace memshare::engine
