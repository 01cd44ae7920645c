// What a client asks of the engine and what the engine streams back. Shared
// by the scheduler (which implements InferenceEngine) and the worker server
// (which converts the gRPC messages of proto/memshare/v1 to and from these).
#ifndef MEMSHARE_ENGINE_REQUEST_H_
#define MEMSHARE_ENGINE_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace memshare::engine {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy; >= 0
  int32_t top_k = 0;                // 0 = off; >= 0
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; 1 = off
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
  std::optional<uint64_t> seed;     // reproducible sampling when set
  int32_t max_tokens = 256;         // >= 1
  std::vector<std::string> stop;    // stop strings (not included in output)
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t logprobs = 0;  // top-n logprobs per generated token, 0..20
};

// MemShare options of one request, within the server's bounds.
struct MemShareParams {
  enum class Mode { kServerDefault, kOff, kOn };
  Mode mode = Mode::kServerDefault;
  std::optional<float> tau_lex;  // lexical (MinHash Jaccard) threshold
  std::optional<float> tau_kv;   // relative L2 distance threshold of K and V
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct EngineRequest {
  std::string request_id;  // unique among live requests
  // Exactly one of the three prompt forms is used: token ids if non-empty,
  // else chat messages if non-empty (rendered with the model's chat
  // template), else text.
  std::string prompt_text;
  std::vector<int32_t> prompt_token_ids;
  std::vector<ChatMessage> messages;
  SamplingParams sampling;
  MemShareParams memshare;
  int32_t priority = 0;    // higher runs first; FCFS within a priority
  std::string cache_salt;  // prefix-cache isolation between tenants
  absl::Time deadline = absl::InfiniteFuture();
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // top-n alternatives
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // served from the prefix cache
  int32_t kv_blocks_peak_physical = 0;
  int32_t kv_blocks_peak_logical = 0;
  int32_t shared_blocks = 0;  // blocks remapped by MemShare
  // The two peaks above count layer group 0's blocks; these sum the blocks
  // of every layer group (equal to them with one group), for MemShare
  // decisions that differ between groups.
  int32_t kv_group_blocks_peak_physical = 0;
  int32_t kv_group_blocks_peak_logical = 0;
};

// One streamed event: new tokens (and their text, UTF-8 safe), or the end.
struct StreamEvent {
  std::vector<int32_t> token_ids;
  std::string text_delta;
  std::vector<TokenLogprob> logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Usage usage;          // set when finished
  absl::Status status;  // non-OK ends the stream with an error
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_REQUEST_H_
