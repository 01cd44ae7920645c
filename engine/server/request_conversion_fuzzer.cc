// libFuzzer: any bytes that parse as a v1::GenerateRequest convert to an
// EngineRequest or to INVALID_ARGUMENT; what converts respects the limits.
#include <cstddef>
#include <cstdint>

#include "engine/server/request_conversion.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  memshare::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  memshare::engine::RequestLimits limits;
  limits.max_model_len = 64;
  limits.vocab_size = 100;
  limits.max_prompt_bytes = 256;
  auto out = memshare::engine::ToEngineRequest(request, limits, absl::InfiniteFuture());
  if (!out.ok()) {
    if (out.status().code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    return 0;
  }
  if (out->sampling.max_tokens < 1 || out->sampling.max_tokens > limits.max_model_len) {
    __builtin_trap();
  }
  for (int32_t id : out->prompt_token_ids) {
    if (id < 0 || id >= limits.vocab_size) __builtin_trap();
  }
  if (static_cast<int64_t>(out->prompt_text.size()) > limits.max_prompt_bytes ||
      !memshare::engine::IsValidUtf8(out->prompt_text)) {
    __builtin_trap();
  }
  return 0;
}
