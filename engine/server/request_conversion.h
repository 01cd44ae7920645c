// The one place where the gRPC messages of proto/memshare/v1 become engine
// types and back. Validation of everything a client controls happens here:
// a bad field gives INVALID_ARGUMENT with a message that names it
// ("sampling.top_p: must be in (0, 1], got 1.5"). Checks that need the
// tokenizer (length of a text prompt) or the server's MemShare bounds are the
// engine's.
//
// Stateless functions; thread-safe.
#ifndef MEMSHARE_ENGINE_SERVER_REQUEST_CONVERSION_H_
#define MEMSHARE_ENGINE_SERVER_REQUEST_CONVERSION_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/inference_engine.h"
#include "engine/request.h"
#include "proto/memshare/v1/inference.pb.h"

namespace memshare::engine {

struct RequestLimits {
  // From the engine's ModelInfo: prompt + max_tokens must fit; token ids
  // must be < vocab_size.
  int32_t max_model_len = 4096;
  int32_t vocab_size = 32000;
  // max_tokens when the request sets none (clamped to what fits).
  int32_t default_max_tokens = 256;
  // Bytes of a text prompt, or of all chat contents together.
  int64_t max_prompt_bytes = 1 << 20;
  int32_t max_chat_messages = 1024;
  int32_t max_stop_strings = 16;
  int32_t max_stop_string_bytes = 256;
  int32_t max_stop_token_ids = 64;
  int32_t max_logprobs = 20;
  int32_t max_request_id_bytes = 128;
  int32_t max_session_id_bytes = 256;
  int32_t max_cache_salt_bytes = 256;
};

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Validates `request` and converts it. `deadline` is the call's deadline
// (absl::InfiniteFuture() for none). An empty request_id stays empty (the
// caller assigns one).
absl::StatusOr<EngineRequest> ToEngineRequest(const v1::GenerateRequest& request,
                                              const RequestLimits& limits, absl::Time deadline);

// Appends the tokens, text and logprobs of `event` to `chunk` (several events
// can be coalesced into one chunk while the client is slow to read).
void AppendToChunk(const StreamEvent& event, v1::TokenChunk* chunk);
// The final message of a finished event.
v1::GenerateResult ToResult(const StreamEvent& event);

v1::ModelInfo ToProto(const ModelInfo& info);
// Gauges and counters; step-time histograms, draining and active_streams are
// the worker's to fill.
v1::LoadReport ToProto(const LoadReport& load);

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_SERVER_REQUEST_CONVERSION_H_
