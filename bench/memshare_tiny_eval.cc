// MemShare on the bundled tiny reasoner, end to end on the CPU engine:
// accuracy and KV blocks saved with MemShare off, with whole-block sharing
// only (the block grid), and with shifted sharing (views over two blocks).
//
//   bazel run -c opt //bench:memshare_tiny_eval -- [--records N] [--tau_kv X]
//       [--tau_lex X] [--min_overlap X] [--threads T]
//
// Prompts and answers: tests/data/tiny_reasoner/hf_greedy_bf16.jsonl (the
// first N records). Greedy, up to 1000 tokens, every request submitted at
// once. A reply is correct when it contains "Final answer: <answer>".
// Saved = Σ over requests of the largest (logical − physical) blocks of
// layer group 0 seen while the request ran, over Σ of its largest logical
// block count (engine Usage: shared_blocks / kv_blocks_peak_logical).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/cpu_engine.h"
#include "nlohmann/json.hpp"

namespace memshare::engine {
namespace {

struct Record {
  std::vector<int32_t> prompt_ids;
  int64_t answer = 0;
};

std::vector<Record> ReadRecords(const std::string& path, int n) {
  std::ifstream file(path);
  if (!file) {
    std::fprintf(stderr, "cannot read %s (run from the repository root)\n", path.c_str());
    std::exit(1);
  }
  std::vector<Record> out;
  std::string line;
  while (static_cast<int>(out.size()) < n && std::getline(file, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    out.push_back({j["prompt_ids"].get<std::vector<int32_t>>(), j["answer"].get<int64_t>()});
  }
  return out;
}

struct Stream {
  absl::Mutex mu;
  std::string text;
  StreamEvent last;
  absl::Notification done;

  InferenceEngine::EventCallback Callback() {
    return [this](const StreamEvent& e) {
      absl::MutexLock lock(&mu);
      text += e.text_delta;
      if (e.finished) {
        last = e;
        done.Notify();
      }
    };
  }
};

struct Mode {
  const char* name;
  bool memshare;
  bool shifted;
};

struct Flags {
  int records = 100;
  float tau_kv = -1;
  float tau_lex = -1;
  float min_overlap = -1;
  int threads = 0;
};

void RunMode(const Mode& mode, const Flags& flags, const std::vector<Record>& records) {
  CpuEngineOptions o;
  o.model_dir = "assets/models/tiny-reasoner";
  o.num_threads = flags.threads;
  kvmanager::DedupPolicy& d = o.engine.kv.dedup;
  d.mode = mode.memshare ? kvmanager::DedupMode::kMemShare : kvmanager::DedupMode::kOff;
  d.shifted_sharing = mode.shifted;
  if (flags.tau_kv >= 0) d.tau_kv = d.max_tau_kv = flags.tau_kv;
  if (flags.tau_lex >= 0) d.tau_lex = d.min_tau_lex = flags.tau_lex;
  if (flags.min_overlap > 0) d.min_block_token_overlap = flags.min_overlap;
  absl::StatusOr<CpuEngine> engine = CreateCpuEngine(o);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    std::exit(1);
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<Stream>> streams;
  for (size_t i = 0; i < records.size(); ++i) {
    EngineRequest r;
    r.request_id = absl::StrCat("r", i);
    r.prompt_token_ids = records[i].prompt_ids;
    r.sampling.temperature = 0;
    r.sampling.max_tokens = 1000;
    streams.push_back(std::make_unique<Stream>());
    const absl::Status s = engine->engine->Submit(r, streams.back()->Callback());
    if (!s.ok()) {
      std::fprintf(stderr, "submit: %s\n", s.ToString().c_str());
      std::exit(1);
    }
  }
  int correct = 0;
  int64_t saved = 0, logical = 0, tokens = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    Stream& s = *streams[i];
    s.done.WaitForNotification();
    absl::MutexLock lock(&s.mu);
    correct += s.text.find(absl::StrCat("Final answer: ", records[i].answer)) != std::string::npos;
    saved += s.last.usage.shared_blocks;
    logical += s.last.usage.kv_blocks_peak_logical;
    tokens += s.last.usage.completion_tokens;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const kvmanager::KvStatsSnapshot kv = engine->engine->GetKvStats();
  std::printf(
      "%-8s accuracy %5.1f%% (%d/%zu)  saved %5.1f%% of blocks (%lld/%lld)  remaps %lld "
      "(shifted %lld)  funnel: steps %lld, candidate steps %lld, pairs %lld, verified %lld, "
      "rejected %lld  %lld tokens in %.1f s\n",
      mode.name, 100.0 * correct / records.size(), correct, records.size(),
      100.0 * saved / std::max<int64_t>(1, logical), static_cast<long long>(saved),
      static_cast<long long>(logical), static_cast<long long>(kv.dedup_remapped),
      static_cast<long long>(kv.dedup_remapped_shifted), static_cast<long long>(kv.dedup_steps),
      static_cast<long long>(kv.dedup_candidate_steps), static_cast<long long>(kv.dedup_candidates),
      static_cast<long long>(kv.dedup_verified), static_cast<long long>(kv.dedup_rejected),
      static_cast<long long>(tokens), seconds);
  std::fflush(stdout);
}

}  // namespace
}  // namespace memshare::engine

int main(int argc, char** argv) {
  using namespace memshare::engine;
  Flags flags;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--records") {
      flags.records = std::atoi(v);
    } else if (k == "--tau_kv") {
      flags.tau_kv = std::strtof(v, nullptr);
    } else if (k == "--tau_lex") {
      flags.tau_lex = std::strtof(v, nullptr);
    } else if (k == "--min_overlap") {
      flags.min_overlap = std::strtof(v, nullptr);
    } else if (k == "--threads") {
      flags.threads = std::atoi(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  const std::vector<Record> records =
      ReadRecords("tests/data/tiny_reasoner/hf_greedy_bf16.jsonl", flags.records);
  for (const Mode& m :
       {Mode{"off", false, false}, Mode{"grid", true, false}, Mode{"shifted", true, true}}) {
    RunMode(m, flags, records);
  }
  return 0;
}
