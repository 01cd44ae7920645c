// libFuzzer: any body on either OpenAI endpoint parses to a request or to an
// INVALID_ARGUMENT / NOT_FOUND status; what parses renders back to JSON.
#include <cstddef>
#include <cstdint>
#include <string>

#include "router/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using memshare::router::openai::Endpoint;
  const Endpoint endpoint = data[0] & 1 ? Endpoint::kChatCompletions : Endpoint::kCompletions;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto parsed = memshare::router::openai::ParseRequest(endpoint, body, "m");
  if (!parsed.ok()) {
    const auto code = parsed.status().code();
    if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kNotFound) {
      __builtin_trap();
    }
    (void)memshare::router::openai::ErrorJson(parsed.status());
    return 0;
  }
  memshare::router::openai::ResponseBuilder builder(*parsed, "id", 1);
  memshare::v1::GenerateResponse chunk;
  chunk.mutable_chunk()->set_text(body.substr(0, 16));
  chunk.mutable_chunk()->add_token_ids(1);
  (void)builder.StreamEvents(chunk);
  builder.Collect(chunk);
  (void)builder.Body();
  return 0;
}
