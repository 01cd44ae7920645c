// `memshare generate` once the engine is up: builds the request(s), streams
// the generated text to stdout, prints progress and a summary on stderr.
#ifndef MEMSHARE_ENGINE_CLI_GENERATE_COMMAND_H_
#define MEMSHARE_ENGINE_CLI_GENERATE_COMMAND_H_

#include <cstdint>
#include <iosfwd>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/cli/generate_args.h"
#include "engine/inference_engine.h"
#include "engine/request.h"

namespace memshare::engine::cli {

struct GenerateIo {
  std::istream* in = nullptr;   // --prompt-file -, --chat turns
  std::ostream* out = nullptr;  // generated text
  std::ostream* err = nullptr;  // progress, summary, logprobs
};

// What one request did, for the summary line.
struct RunSummary {
  Usage usage;
  FinishReason finish_reason = FinishReason::kNone;
  absl::Duration total;        // submit to last event
  absl::Duration first_token;  // submit to first token
  std::string text;            // everything streamed
};

// The summary line, e.g.
//   prompt 12 tokens, generated 64 tokens in 1.234 s: 51.9 tok/s (first token
//   0.101 s, decode 56.5 tok/s) | KV blocks peak 5 physical / 6 logical,
//   1 shared by MemShare, 16384 bytes saved | finish length
std::string FormatSummary(const RunSummary& run, int64_t kv_block_bytes);

// Runs one request on `engine` and waits for its end, streaming text to
// io.out. `kv_block_bytes` (one block, every layer) prices the saved blocks.
absl::StatusOr<RunSummary> RunRequest(InferenceEngine& engine, EngineRequest request,
                                      const GenerateIo& io);

// The whole command: the prompt from --prompt or --prompt-file, or a chat
// conversation read from io.in with --chat.
absl::Status RunGenerate(const GenerateArgs& args, InferenceEngine& engine, int64_t kv_block_bytes,
                         const GenerateIo& io);

}  // namespace memshare::engine::cli

#endif  // MEMSHARE_ENGINE_CLI_GENERATE_COMMAND_H_
