// The one mapping between absl::Status (inside every component) and
// grpc::Status (at every RPC edge). Codes map one to one; messages are
// bounded so that a runaway error text cannot blow up a response.
#ifndef MEMSHARE_COMMON_GRPC_STATUS_H_
#define MEMSHARE_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace memshare {

// Longest message carried to a client; longer ones are cut with "...".
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Trailing metadata key (value "1") a worker adds when it refuses a call
// because it is draining: the router retries elsewhere without counting the
// worker as failed. A marker, not the message text, decides.
inline constexpr char kDrainingMetadataKey[] = "memshare-draining";

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace memshare

#endif  // MEMSHARE_COMMON_GRPC_STATUS_H_
