#include "common/grpc_status.h"

#include <string>

namespace memshare {
namespace {

std::string Bounded(std::string_view message) {
  if (message.size() <= kMaxStatusMessageBytes) return std::string(message);
  // Cut on a UTF-8 character boundary so the message stays valid UTF-8.
  size_t cut = kMaxStatusMessageBytes - 3;
  while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xc0) == 0x80) --cut;
  return std::string(message.substr(0, cut)) + "...";
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering (google.rpc.Code).
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      Bounded(std::string_view(status.message().data(), status.message().size())));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      Bounded(status.error_message()));
}

}  // namespace memshare
