// API-key check of the router's public endpoints: with keys configured,
// every gRPC call carries metadata `authorization: Bearer <key>` and every
// HTTP request the same header; otherwise UNAUTHENTICATED (HTTP 401). Health
// checks, reflection and /metrics are not checked (probes and scrapers).
//
// Immutable after Create; thread-safe.
#ifndef MEMSHARE_ROUTER_API_KEYS_H_
#define MEMSHARE_ROUTER_API_KEYS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace memshare::router {

class ApiKeys {
 public:
  // Keys from `keys` and from `file` (one per line; blank lines and lines
  // starting with '#' skipped). No key at all: every request passes.
  // NOT_FOUND when the file cannot be read; INVALID_ARGUMENT for a key with
  // whitespace.
  static absl::StatusOr<ApiKeys> Create(const std::vector<std::string>& keys,
                                        const std::string& file = "");

  bool enabled() const { return !keys_.empty(); }
  // `authorization` is the header's value ("Bearer <key>"); empty if absent.
  absl::Status Check(std::string_view authorization) const;

 private:
  std::vector<std::string> keys_;
};

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_API_KEYS_H_
