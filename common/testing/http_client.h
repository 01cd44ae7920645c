// A minimal blocking HTTP/1.1 client for tests: one request per connection
// ("Connection: close"), body read to EOF. Handles Content-Length and chunked
// responses. Not for production paths.
#ifndef MEMSHARE_COMMON_TESTING_HTTP_CLIENT_H_
#define MEMSHARE_COMMON_TESTING_HTTP_CLIENT_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace memshare::testing {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// method: "GET", "POST", ...; host is a numeric IPv4 address or "localhost".
absl::StatusOr<HttpResponse> HttpRequest(const std::string& host, int port,
                                         const std::string& method, const std::string& path,
                                         const std::string& body = "",
                                         const std::map<std::string, std::string>& headers = {});

}  // namespace memshare::testing

#endif  // MEMSHARE_COMMON_TESTING_HTTP_CLIENT_H_
