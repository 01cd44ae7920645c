// Asks a server's reflection service (grpc.reflection.v1alpha) to list its
// services, without its generated stubs: tests check that a process serves
// reflection and which services it names.
#ifndef MEMSHARE_COMMON_TESTING_GRPC_REFLECTION_H_
#define MEMSHARE_COMMON_TESTING_GRPC_REFLECTION_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace memshare::testing {

// The service names the server lists (e.g. "memshare.v1.WorkerService").
absl::StatusOr<std::vector<std::string>> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel);

}  // namespace memshare::testing

#endif  // MEMSHARE_COMMON_TESTING_GRPC_REFLECTION_H_
