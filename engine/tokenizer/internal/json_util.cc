#include "engine/tokenizer/internal/json_util.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace memshare::tokenizer::internal {
namespace {

absl::Status Missing(const char* key, absl::string_view where) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": missing field \"", key, "\""));
}

absl::Status WrongType(const char* key, absl::string_view where, absl::string_view want,
                       const Json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": field \"", key, "\" must be ", want, ", got ", got.type_name()));
}

}  // namespace

absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view what) {
  // nlohmann reports the position only through its exception; parsing happens
  // at load time, never on the request path.
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON: ", e.what()));
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}

const Json* FindMember(const Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status GetString(const Json& obj, const char* key, absl::string_view where,
                       std::string* out) {
  const Json* v = FindMember(obj, key);
  if (v == nullptr) return Missing(key, where);
  if (!v->is_string()) return WrongType(key, where, "a string", *v);
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status GetBool(const Json& obj, const char* key, absl::string_view where, bool* out) {
  const Json* v = FindMember(obj, key);
  if (v == nullptr) return Missing(key, where);
  if (!v->is_boolean()) return WrongType(key, where, "a boolean", *v);
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status GetInt(const Json& obj, const char* key, absl::string_view where, int64_t* out) {
  const Json* v = FindMember(obj, key);
  if (v == nullptr) return Missing(key, where);
  if (!v->is_number_integer()) return WrongType(key, where, "an integer", *v);
  *out = v->get<int64_t>();
  return absl::OkStatus();
}

absl::Status GetOptionalString(const Json& obj, const char* key, absl::string_view where,
                               std::string* out) {
  if (FindMember(obj, key) == nullptr) return absl::OkStatus();
  return GetString(obj, key, where, out);
}

absl::Status GetOptionalBool(const Json& obj, const char* key, absl::string_view where, bool* out) {
  if (FindMember(obj, key) == nullptr) return absl::OkStatus();
  return GetBool(obj, key, where, out);
}

absl::Status GetOptionalInt(const Json& obj, const char* key, absl::string_view where,
                            int64_t* out) {
  if (FindMember(obj, key) == nullptr) return absl::OkStatus();
  return GetInt(obj, key, where, out);
}

}  // namespace memshare::tokenizer::internal
