// A one-writer, many-reader message stream in POSIX shared memory, for the
// ranks of a tensor-parallel group that share a host (issue 7): rank 0's
// commands reach the followers in a few microseconds, without the NCCL
// broadcast's device round trip (pinned -> device -> NCCL -> device ->
// pinned) and its enqueue cost. NcclCommunicator uses it for Broadcast when
// every rank could open it, and NCCL otherwise (ranks on several hosts).
//
// Layout: a header (magic, capacity, readers, the writer's position and
// each reader's position, 64-bit byte counters that only grow) and a ring
// of `capacity` bytes. A message is its length (8 bytes) and its bytes,
// streamed through the ring in pieces when it is longer than the ring. The
// writer waits while the slowest reader is a whole ring behind; a reader
// waits until the writer's position is past its own.
//
// Every wait is bounded: it returns DEADLINE_EXCEEDED at the deadline, and
// ABORTED as soon as `aborted()` says so (the group's abort flag). Waits
// spin, then yield for 50 ms, then sleep 50 us between polls: a busy
// group's next command is seen within microseconds, an idle group costs
// little CPU.
//
// The segment is unlinked as soon as every reader has opened it (Unlink on
// the writer), so a crashed group leaves nothing behind in /dev/shm after
// that point.
//
// Thread-compatible: one thread writes (Create's side) and each reader
// reads on one thread (Open's side); the ends usually live in different
// processes.
#ifndef MEMSHARE_ENGINE_PARALLEL_HOST_CHANNEL_H_
#define MEMSHARE_ENGINE_PARALLEL_HOST_CHANNEL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace memshare::engine {

class HostChannel {
 public:
  struct Options {
    // Name of the shared-memory segment ("/memshare-..."; shm_open rules:
    // one leading slash, no other).
    std::string name;
    // Ring bytes (Create only), a power of two >= 4096.
    size_t capacity = size_t{1} << 20;
    // Readers (Create only), 1 .. kMaxReaders.
    int readers = 1;
    // Open only: this reader's index, 0 .. readers-1.
    int reader = 0;
  };
  static constexpr int kMaxReaders = 63;

  // The writer's end: creates the segment (failing if it exists).
  // INVALID_ARGUMENT for bad options, UNAVAILABLE when shm_open, ftruncate
  // or mmap fail.
  static absl::StatusOr<std::unique_ptr<HostChannel>> Create(const Options& options);
  // A reader's end: opens a segment made by Create. NOT_FOUND when there is
  // none of that name (e.g. the writer is on another host), DATA_LOSS when
  // it is not a channel, INVALID_ARGUMENT for a reader index it lacks.
  static absl::StatusOr<std::unique_ptr<HostChannel>> Open(const Options& options);

  // Unmaps; the writer also unlinks the segment if Unlink was not called.
  ~HostChannel();
  HostChannel(const HostChannel&) = delete;
  HostChannel& operator=(const HostChannel&) = delete;

  // Removes the name (the mapping stays): once every reader has opened it.
  void Unlink();

  // The writer: appends one message. `aborted` (may be empty) is polled
  // while waiting for room.
  absl::Status Send(absl::string_view bytes, absl::Time deadline,
                    const std::function<bool()>& aborted);
  // A reader: the next message, in *bytes.
  absl::Status Receive(std::string* bytes, absl::Time deadline,
                       const std::function<bool()>& aborted);

  bool writer() const { return writer_; }
  size_t capacity() const { return capacity_; }

 private:
  struct Header;
  HostChannel(bool writer, std::string name) : writer_(writer), name_(std::move(name)) {}
  absl::Status Map(int fd, size_t bytes);
  // Waits until `ready()`; spinning, then yielding, then sleeping.
  absl::Status Wait(const std::function<bool()>& ready, absl::Time deadline,
                    const std::function<bool()>& aborted, absl::string_view what);
  absl::Status Write(const char* p, size_t n, absl::Time deadline,
                     const std::function<bool()>& aborted);
  absl::Status Read(char* p, size_t n, absl::Time deadline, const std::function<bool()>& aborted);

  const bool writer_;
  const std::string name_;
  bool unlinked_ = false;
  int reader_ = 0;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  Header* header_ = nullptr;
  char* ring_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_HOST_CHANNEL_H_
