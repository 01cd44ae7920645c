#include "common/grpc_status.h"

#include <string>

#include "gtest/gtest.h"

namespace memshare {
namespace {

TEST(GrpcStatusTest, CodesMapBothWays) {
  const absl::Status cases[] = {
      absl::InvalidArgumentError("temperature: must be >= 0"),
      absl::ResourceExhaustedError("queue full"),
      absl::UnavailableError("worker down"),
      absl::DeadlineExceededError("late"),
      absl::CancelledError("gone"),
      absl::NotFoundError("no such request"),
      absl::FailedPreconditionError("draining"),
      absl::InternalError("bug"),
      absl::UnauthenticatedError("no key"),
  };
  for (const absl::Status& s : cases) {
    const grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), static_cast<int>(s.code()));
    EXPECT_EQ(g.error_message(), std::string(s.message()));
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(GrpcStatusTest, LongMessagesAreBoundedOnACharacterBoundary) {
  std::string long_message;
  while (long_message.size() < 5000) long_message += "é";  // two bytes each
  const grpc::Status g = ToGrpcStatus(absl::InvalidArgumentError(long_message));
  EXPECT_LE(g.error_message().size(), kMaxStatusMessageBytes);
  EXPECT_EQ(g.error_message().substr(g.error_message().size() - 3), "...");
  // No lone continuation byte before the ellipsis.
  const std::string body = g.error_message().substr(0, g.error_message().size() - 3);
  EXPECT_EQ(body.size() % 2, 0u);
}

}  // namespace
}  // namespace memshare
