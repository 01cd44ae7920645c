#include "engine/parallel/host_channel.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

std::string UniqueName() {
  static std::atomic<int> n{0};
  return absl::StrCat("/memshare-test-", getpid(), "-", n.fetch_add(1));
}

// Bytes that differ with the message index and position (so a piece read
// from the wrong place of the ring shows).
std::string Message(int i, size_t size) {
  std::string s(size, '\0');
  for (size_t k = 0; k < size; ++k) s[k] = static_cast<char>((i * 131 + k * 7 + k / 251) & 0xff);
  return s;
}

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

TEST(HostChannelTest, MessagesArriveWholeAndInOrderThroughASmallRing) {
  HostChannel::Options o;
  o.name = UniqueName();
  o.capacity = 4096;
  absl::StatusOr<std::unique_ptr<HostChannel>> w = HostChannel::Create(o);
  ASSERT_TRUE(w.ok()) << w.status();
  absl::StatusOr<std::unique_ptr<HostChannel>> r = HostChannel::Open(o);
  ASSERT_TRUE(r.ok()) << r.status();
  // Sizes around and far beyond the ring (streamed through in pieces),
  // and empty messages.
  const std::vector<size_t> sizes = {0, 1, 7, 4088, 4096, 4097, 10000, 0, 100000, 3, 65536};
  std::thread writer([&] {
    for (size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_TRUE((*w)->Send(Message(i, sizes[i]), Soon(), nullptr).ok());
    }
  });
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string got = "junk";
    ASSERT_TRUE((*r)->Receive(&got, Soon(), nullptr).ok());
    EXPECT_EQ(got, Message(i, sizes[i])) << "message " << i;
  }
  writer.join();
}

TEST(HostChannelTest, EveryReaderGetsEveryMessage) {
  HostChannel::Options o;
  o.name = UniqueName();
  o.capacity = 8192;
  o.readers = 3;
  absl::StatusOr<std::unique_ptr<HostChannel>> w = HostChannel::Create(o);
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<std::unique_ptr<HostChannel>> readers;
  for (int k = 0; k < 3; ++k) {
    o.reader = k;
    absl::StatusOr<std::unique_ptr<HostChannel>> r = HostChannel::Open(o);
    ASSERT_TRUE(r.ok()) << r.status();
    readers.push_back(*std::move(r));
  }
  (*w)->Unlink();  // the mappings stay
  o.reader = 0;
  EXPECT_EQ(HostChannel::Open(o).status().code(), absl::StatusCode::kNotFound);
  constexpr int kMessages = 200;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int k = 0; k < 3; ++k) {
    threads.emplace_back([&, k] {
      for (int i = 0; i < kMessages; ++i) {
        std::string got;
        if (!readers[k]->Receive(&got, Soon(), nullptr).ok()) return;
        if (got == Message(i, 100 + (i * 977) % 20000)) good.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE((*w)->Send(Message(i, 100 + (i * 977) % 20000), Soon(), nullptr).ok());
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), 3 * kMessages);
}

TEST(HostChannelTest, WaitsEndAtTheDeadlineOrOnAbort) {
  HostChannel::Options o;
  o.name = UniqueName();
  o.capacity = 4096;
  absl::StatusOr<std::unique_ptr<HostChannel>> w = HostChannel::Create(o);
  ASSERT_TRUE(w.ok());
  absl::StatusOr<std::unique_ptr<HostChannel>> r = HostChannel::Open(o);
  ASSERT_TRUE(r.ok());
  std::string got;
  const absl::Time t0 = absl::Now();
  EXPECT_EQ((*r)->Receive(&got, t0 + absl::Milliseconds(50), nullptr).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(50));
  EXPECT_EQ((*r)->Receive(&got, Soon(), [] { return true; }).code(), absl::StatusCode::kAborted);
  // A reader that reads nothing: the writer fills the ring, then waits.
  EXPECT_TRUE((*w)->Send(std::string(4000, 'x'), Soon(), nullptr).ok());
  EXPECT_EQ((*w)->Send(std::string(200, 'y'), absl::Now() + absl::Milliseconds(50), nullptr).code(),
            absl::StatusCode::kDeadlineExceeded);
  // Each end does only its own part.
  EXPECT_EQ((*w)->Receive(&got, Soon(), nullptr).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*r)->Send("z", Soon(), nullptr).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(HostChannelTest, RefusesBadOptionsAndSegmentsThatAreNotChannels) {
  HostChannel::Options o;
  o.name = "no-slash";
  EXPECT_EQ(HostChannel::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.name = UniqueName();
  o.capacity = 5000;
  EXPECT_EQ(HostChannel::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.capacity = 4096;
  o.readers = 0;
  EXPECT_EQ(HostChannel::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.readers = 2;
  EXPECT_EQ(HostChannel::Open(o).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::unique_ptr<HostChannel>> w = HostChannel::Create(o);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(HostChannel::Create(o).status().code(), absl::StatusCode::kUnavailable);  // exists
  o.reader = 2;
  EXPECT_EQ(HostChannel::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.reader = 1;
  EXPECT_TRUE(HostChannel::Open(o).ok());
}

// The ends in two processes, as in a group.
TEST(HostChannelTest, WorksAcrossProcesses) {
  HostChannel::Options o;
  o.name = UniqueName();
  o.capacity = 4096;
  absl::StatusOr<std::unique_ptr<HostChannel>> w = HostChannel::Create(o);
  ASSERT_TRUE(w.ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    absl::StatusOr<std::unique_ptr<HostChannel>> r = HostChannel::Open(o);
    if (!r.ok()) _exit(10);
    for (int i = 0; i < 50; ++i) {
      std::string got;
      if (!(*r)->Receive(&got, Soon(), nullptr).ok()) _exit(11);
      if (got != Message(i, 50 + i * 211)) _exit(12);
    }
    _exit(0);
  }
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE((*w)->Send(Message(i, 50 + i * 211), Soon(), nullptr).ok());
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace memshare::engine
