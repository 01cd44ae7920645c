#include "common/testing/grpc_reflection.h"

#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/str_cat.h"

namespace memshare::testing {
namespace {

// Reads a varint at `pos`; false at the end or on a malformed one.
bool Varint(const std::string& s, size_t& pos, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && pos < s.size(); shift += 7) {
    const auto b = static_cast<unsigned char>(s[pos++]);
    *v |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// The length-delimited fields `number` of a message, in order.
std::vector<std::string> Fields(const std::string& message, uint64_t number) {
  std::vector<std::string> out;
  size_t pos = 0;
  uint64_t key, len;
  while (pos < message.size() && Varint(message, pos, &key)) {
    switch (key & 7) {
      case 0:
        if (!Varint(message, pos, &len)) return out;
        break;
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2:
        if (!Varint(message, pos, &len) || pos + len > message.size()) return out;
        if ((key >> 3) == number) out.push_back(message.substr(pos, len));
        pos += len;
        break;
      default:
        return out;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  auto step = [&](intptr_t expected) {
    return cq.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) == expected && ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return absl::UnavailableError("reflection: call did not start");
  // ServerReflectionRequest { list_services = 7: "" }.
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  if (!step(2)) return absl::UnavailableError("reflection: write failed");
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  if (!step(3)) return absl::UnavailableError("reflection: no response (not served?)");
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  std::vector<grpc::Slice> slices;
  if (!in.Dump(&slices).ok()) return absl::InternalError("reflection: bad response");
  std::string response;
  for (const grpc::Slice& s : slices)
    response.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // ServerReflectionResponse.list_services_response = 6 { service = 1 { name = 1 } }.
  std::vector<std::string> names;
  for (const std::string& list : Fields(response, 6)) {
    for (const std::string& service : Fields(list, 1)) {
      for (const std::string& name : Fields(service, 1)) names.push_back(name);
    }
  }
  if (names.empty()) return absl::NotFoundError("reflection: no service listed");
  return names;
}

}  // namespace memshare::testing
