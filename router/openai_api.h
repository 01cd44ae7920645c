// The OpenAI-compatible HTTP API's JSON, separate from the HTTP server:
// request bodies of /v1/completions and /v1/chat/completions become a
// v1::GenerateRequest, router messages become OpenAI responses or SSE
// chunks, statuses become OpenAI's error shape
//   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}.
//
// Parsing is strict: unknown fields, wrong types and unsupported values are
// refused with INVALID_ARGUMENT whose message starts with the parameter
// ("max_tokens: expected an integer, got string"). JSON null counts as
// absent. Beyond OpenAI's parameters, both endpoints take the MemShare
// extensions top_k, min_p, repetition_penalty, ignore_eos, stop_token_ids,
// session_id, cache_salt, priority, request_id and
// memshare {"mode": "default"|"on"|"off", "tau_lex", "tau_kv"}.
//
// Logprobs name tokens "token_id:<id>" (the router does not detokenize).
//
// Stateless functions and a per-request builder; thread-compatible.
#ifndef MEMSHARE_ROUTER_OPENAI_API_H_
#define MEMSHARE_ROUTER_OPENAI_API_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/memshare/v1/inference.pb.h"

namespace memshare::router::openai {

enum class Endpoint { kCompletions, kChatCompletions };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  v1::GenerateRequest request;
  // The model the client named (empty if none).
  std::string model;
  bool stream = false;
  // stream_options.include_usage: a last chunk carries the usage.
  bool include_usage = false;
  // Render logprobs in the response.
  bool logprobs = false;
};

// `served_model` is the model id the workers serve (may be empty when no
// worker has answered yet): a request naming another model gets NOT_FOUND.
absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body,
                                           const std::string& served_model);

// HTTP status of a gRPC/absl status code (400, 401, 404, 409, 429, 499, 503,
// 504, 500...).
int HttpStatusFor(absl::StatusCode code);
// {"error": {...}}. `param` is taken from a "<param>: ..." message.
std::string ErrorJson(const absl::Status& status);

// Builds one request's response from the router's messages.
class ResponseBuilder {
 public:
  ResponseBuilder(const ParsedRequest& request, std::string id, int64_t created);

  // Streaming: the SSE events ("data: {...}\n\n") for one router message;
  // may be empty.
  std::string StreamEvents(const v1::GenerateResponse& message);
  // Streaming, after an OK end: the usage chunk when asked, then
  // "data: [DONE]".
  std::string StreamEnd() const;
  // Streaming, after an error: an error event, then "data: [DONE]".
  static std::string StreamError(const absl::Status& status);

  // Non-streaming: collects the messages; Body is the response JSON.
  void Collect(const v1::GenerateResponse& message);
  std::string Body() const;

 private:
  std::string ChunkPrefix() const;
  std::string UsageJson() const;

  const Endpoint endpoint_;
  const std::string id_;
  const int64_t created_;
  const std::string model_;
  const bool include_usage_;
  const bool logprobs_;
  bool sent_role_ = false;
  std::string text_;
  std::vector<v1::TokenLogprob> token_logprobs_;
  v1::GenerateResult result_;
  bool has_result_ = false;
};

// GET /v1/models.
std::string ModelsJson(const v1::ModelInfo& model, int64_t created);

}  // namespace memshare::router::openai

#endif  // MEMSHARE_ROUTER_OPENAI_API_H_
