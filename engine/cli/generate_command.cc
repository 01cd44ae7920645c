#include "engine/cli/generate_command.h"

#include <deque>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"

namespace memshare::engine::cli {
namespace {

const char* ReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "unknown";
}

// Events cross from the engine's thread to the caller's, so that writing to
// a slow stdout never blocks the engine.
class EventQueue {
 public:
  void Push(const StreamEvent& e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(e);
  }
  StreamEvent Pop() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::deque<StreamEvent>* q) { return !q->empty(); }, &events_));
    StreamEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

 private:
  absl::Mutex mu_;
  std::deque<StreamEvent> events_ ABSL_GUARDED_BY(mu_);
};

int64_t CountSavedBytes(const Usage& u, int64_t kv_block_bytes) {
  return int64_t{u.shared_blocks} * kv_block_bytes;
}

}  // namespace

std::string FormatSummary(const RunSummary& run, int64_t kv_block_bytes) {
  const Usage& u = run.usage;
  const double total_s = absl::ToDoubleSeconds(run.total);
  const double first_s = absl::ToDoubleSeconds(run.first_token);
  const double tok_s = total_s > 0 ? u.completion_tokens / total_s : 0;
  const double decode_s = total_s - first_s;
  const double decode_tok_s =
      decode_s > 0 && u.completion_tokens > 1 ? (u.completion_tokens - 1) / decode_s : 0;
  return absl::StrFormat(
      "prompt %d tokens (%d cached), generated %d tokens in %.3f s: %.1f tok/s "
      "(first token %.3f s, decode %.1f tok/s) | KV blocks peak %d physical / %d logical, "
      "%d shared by MemShare, %d bytes saved | finish %s",
      u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, total_s, tok_s, first_s,
      decode_tok_s, u.kv_blocks_peak_physical, u.kv_blocks_peak_logical, u.shared_blocks,
      CountSavedBytes(u, kv_block_bytes), ReasonName(run.finish_reason));
}

absl::StatusOr<RunSummary> RunRequest(InferenceEngine& engine, EngineRequest request,
                                      const GenerateIo& io) {
  const bool logprobs = request.sampling.logprobs > 0;
  EventQueue queue;
  const absl::Time start = absl::Now();
  absl::Status submitted =
      engine.Submit(std::move(request), [&queue](const StreamEvent& e) { queue.Push(e); });
  if (!submitted.ok()) return submitted;

  RunSummary run;
  bool first = true;
  std::vector<TokenLogprob> all_logprobs;
  while (true) {
    StreamEvent e = queue.Pop();
    if (first && !e.token_ids.empty()) {
      run.first_token = absl::Now() - start;
      first = false;
    }
    if (!e.text_delta.empty()) {
      *io.out << e.text_delta << std::flush;
      run.text += e.text_delta;
    }
    if (logprobs) all_logprobs.insert(all_logprobs.end(), e.logprobs.begin(), e.logprobs.end());
    if (e.finished) {
      run.total = absl::Now() - start;
      run.usage = e.usage;
      run.finish_reason = e.finish_reason;
      if (!e.status.ok()) return e.status;
      break;
    }
  }
  *io.out << "\n" << std::flush;
  for (size_t i = 0; i < all_logprobs.size(); ++i) {
    const TokenLogprob& t = all_logprobs[i];
    *io.err << absl::StrFormat("logprobs[%d] token %d %.4f |", i, t.token_id, t.logprob);
    for (const auto& [id, lp] : t.top) *io.err << absl::StrFormat(" %d:%.4f", id, lp);
    *io.err << "\n";
  }
  return run;
}

absl::Status RunGenerate(const GenerateArgs& args, InferenceEngine& engine, int64_t kv_block_bytes,
                         const GenerateIo& io) {
  EngineRequest base;
  base.sampling = args.sampling;
  base.memshare.mode = args.memshare;
  base.memshare.tau_lex = args.tau_lex;
  base.memshare.tau_kv = args.tau_kv;

  auto summarize = [&](const RunSummary& run) {
    *io.err << "[memshare] " << FormatSummary(run, kv_block_bytes) << "\n" << std::flush;
  };

  if (!args.chat) {
    EngineRequest request = base;
    request.request_id = "generate";
    if (!args.prompt_file.empty()) {
      std::stringstream text;
      if (args.prompt_file == "-") {
        text << io.in->rdbuf();
      } else {
        std::ifstream file(args.prompt_file, std::ios::binary);
        if (!file) {
          return absl::NotFoundError(
              absl::StrCat("--prompt-file: cannot read \"", args.prompt_file, "\""));
        }
        text << file.rdbuf();
      }
      request.prompt_text = text.str();
    } else {
      request.prompt_text = args.prompt;
    }
    absl::StatusOr<RunSummary> run = RunRequest(engine, std::move(request), io);
    if (!run.ok()) return run.status();
    summarize(*run);
    return absl::OkStatus();
  }

  std::vector<ChatMessage> conversation;
  if (!args.system_prompt.empty()) conversation.push_back({"system", args.system_prompt});
  for (int turn = 1;; ++turn) {
    if (!args.quiet) *io.err << "you> " << std::flush;
    std::string line;
    if (!std::getline(*io.in, line) || line.empty()) {
      if (!args.quiet) *io.err << "\n";
      break;
    }
    conversation.push_back({"user", line});
    EngineRequest request = base;
    request.request_id = absl::StrCat("chat-", turn);
    request.messages = conversation;
    absl::StatusOr<RunSummary> run = RunRequest(engine, std::move(request), io);
    if (!run.ok()) return run.status();
    conversation.push_back({"assistant", run->text});
    summarize(*run);
  }
  return absl::OkStatus();
}

}  // namespace memshare::engine::cli
