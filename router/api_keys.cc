#include "router/api_keys.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace memshare::router {
namespace {

// Compares without an early exit, so timing does not tell how much matched.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<ApiKeys> ApiKeys::Create(const std::vector<std::string>& keys,
                                        const std::string& file) {
  ApiKeys result;
  std::vector<std::string> all = keys;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) return absl::NotFoundError(absl::StrCat("api key file: cannot read ", file));
    std::string line;
    while (std::getline(in, line)) {
      std::string key(absl::StripAsciiWhitespace(line));
      if (key.empty() || key[0] == '#') continue;
      all.push_back(key);
    }
  }
  for (const std::string& key : all) {
    if (key.empty()) continue;
    for (char c : key) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c < 0x21 || c > 0x7e) {
        return absl::InvalidArgumentError("api keys: a key holds whitespace or non-ASCII");
      }
    }
    result.keys_.push_back(key);
  }
  return result;
}

absl::Status ApiKeys::Check(std::string_view authorization) const {
  if (keys_.empty()) return absl::OkStatus();
  absl::string_view value(authorization.data(), authorization.size());
  if (!absl::ConsumePrefix(&value, "Bearer ") && !absl::ConsumePrefix(&value, "bearer ")) {
    return absl::UnauthenticatedError("missing API key: send 'authorization: Bearer <key>'");
  }
  value = absl::StripAsciiWhitespace(value);
  bool ok = false;
  for (const std::string& key : keys_) {
    ok |= ConstantTimeEquals(std::string_view(value.data(), value.size()), key);
  }
  if (!ok) return absl::UnauthenticatedError("invalid API key");
  return absl::OkStatus();
}

}  // namespace memshare::router
