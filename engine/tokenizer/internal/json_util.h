// Typed, non-throwing accessors for the JSON of tokenizer files. Every failure
// is an INVALID_ARGUMENT status naming the field, so a malformed file is a
// clear error instead of an exception or a crash.
#ifndef MEMSHARE_ENGINE_TOKENIZER_INTERNAL_JSON_UTIL_H_
#define MEMSHARE_ENGINE_TOKENIZER_INTERNAL_JSON_UTIL_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memshare::tokenizer::internal {

using Json = nlohmann::json;

// Parses `text`; `what` names the document in the error message.
absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view what);

// Reads a whole file. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// `obj[key]` must be an object member of the given type. `where` names the
// object in error messages ("pre_tokenizer", "model", ...).
absl::Status GetString(const Json& obj, const char* key, absl::string_view where, std::string* out);
absl::Status GetBool(const Json& obj, const char* key, absl::string_view where, bool* out);
absl::Status GetInt(const Json& obj, const char* key, absl::string_view where, int64_t* out);

// Like the above, but a missing or null member leaves `*out` unchanged.
absl::Status GetOptionalString(const Json& obj, const char* key, absl::string_view where,
                               std::string* out);
absl::Status GetOptionalBool(const Json& obj, const char* key, absl::string_view where, bool* out);
absl::Status GetOptionalInt(const Json& obj, const char* key, absl::string_view where,
                            int64_t* out);

// The member `key` if present and not null, else nullptr.
const Json* FindMember(const Json& obj, const char* key);

}  // namespace memshare::tokenizer::internal

#endif  // MEMSHARE_ENGINE_TOKENIZER_INTERNAL_JSON_UTIL_H_
