#include "engine/parallel/host_channel.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace memshare::engine {
namespace {

constexpr uint64_t kMagic = 0x314e48434d534d;  // "MSMCHN1"
constexpr size_t kRingOffset = 8192;           // the header fits below it

struct alignas(64) Counter {
  std::atomic<uint64_t> value;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "the channel's counters must be lock-free to work across processes");

}  // namespace

struct HostChannel::Header {
  std::atomic<uint64_t> magic;  // set last by the writer
  uint64_t capacity;
  int32_t readers;
  Counter write_pos;              // bytes written, ever
  Counter read_pos[kMaxReaders];  // bytes read by each reader, ever
};

absl::StatusOr<std::unique_ptr<HostChannel>> HostChannel::Create(const Options& o) {
  static_assert(sizeof(Header) <= kRingOffset);
  if (o.name.size() < 2 || o.name[0] != '/' || o.name.find('/', 1) != std::string::npos ||
      o.name.size() > 200) {
    return absl::InvalidArgumentError(absl::StrCat("host channel name '", o.name, "'"));
  }
  if (o.capacity < 4096 || (o.capacity & (o.capacity - 1)) != 0 || o.capacity > (size_t{1} << 32)) {
    return absl::InvalidArgumentError(
        absl::StrCat("host channel capacity ", o.capacity, ": a power of two >= 4096"));
  }
  if (o.readers < 1 || o.readers > kMaxReaders) {
    return absl::InvalidArgumentError(absl::StrCat("host channel readers ", o.readers));
  }
  const int fd = shm_open(o.name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("shm_open(", o.name, ", O_CREAT): ", std::strerror(errno)));
  }
  std::unique_ptr<HostChannel> c(new HostChannel(/*writer=*/true, o.name));
  const size_t bytes = kRingOffset + o.capacity;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("ftruncate(", o.name, ", ", bytes, "): ", std::strerror(e)));
  }
  absl::Status mapped = c->Map(fd, bytes);
  close(fd);
  if (!mapped.ok()) return mapped;
  // The new segment is zero-filled: every position starts at 0.
  c->header_->capacity = o.capacity;
  c->header_->readers = o.readers;
  c->capacity_ = o.capacity;
  c->header_->magic.store(kMagic, std::memory_order_release);
  return c;
}

absl::StatusOr<std::unique_ptr<HostChannel>> HostChannel::Open(const Options& o) {
  const int fd = shm_open(o.name.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return absl::NotFoundError(absl::StrCat("no host channel ", o.name));
    return absl::UnavailableError(absl::StrCat("shm_open(", o.name, "): ", std::strerror(e)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < kRingOffset + 4096) {
    close(fd);
    return absl::DataLossError(absl::StrCat(o.name, " is not a host channel (size)"));
  }
  std::unique_ptr<HostChannel> c(new HostChannel(/*writer=*/false, o.name));
  absl::Status mapped = c->Map(fd, static_cast<size_t>(st.st_size));
  close(fd);
  if (!mapped.ok()) return mapped;
  const Header& h = *c->header_;
  if (h.magic.load(std::memory_order_acquire) != kMagic ||
      h.capacity + kRingOffset != static_cast<uint64_t>(st.st_size) || h.readers < 1 ||
      h.readers > kMaxReaders) {
    return absl::DataLossError(absl::StrCat(o.name, " is not a host channel"));
  }
  if (o.reader < 0 || o.reader >= h.readers) {
    return absl::InvalidArgumentError(
        absl::StrCat("reader ", o.reader, " of a host channel with ", h.readers));
  }
  c->reader_ = o.reader;
  c->capacity_ = h.capacity;
  return c;
}

absl::Status HostChannel::Map(int fd, size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    return absl::UnavailableError(absl::StrCat("mmap(", name_, "): ", std::strerror(errno)));
  }
  map_ = p;
  map_bytes_ = bytes;
  header_ = static_cast<Header*>(p);
  ring_ = static_cast<char*>(p) + kRingOffset;
  return absl::OkStatus();
}

HostChannel::~HostChannel() {
  if (writer_) Unlink();
  if (map_ != nullptr) munmap(map_, map_bytes_);
}

void HostChannel::Unlink() {
  if (!writer_ || unlinked_) return;
  shm_unlink(name_.c_str());
  unlinked_ = true;
}

absl::Status HostChannel::Wait(const std::function<bool()>& ready, absl::Time deadline,
                               const std::function<bool()>& aborted, absl::string_view what) {
  const absl::Time start = absl::Now();
  for (int spins = 0;; ++spins) {
    if (ready()) return absl::OkStatus();
    if (spins < 256) continue;  // the answer is usually microseconds away
    if (aborted && aborted()) {
      return absl::AbortedError(absl::StrCat("host channel ", what, ": aborted"));
    }
    const absl::Time now = absl::Now();
    if (now > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("host channel ", what, " timed out"));
    }
    if (now - start < absl::Milliseconds(50)) {  // a busy group's next command
      std::this_thread::yield();
    } else {  // an idle group
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

absl::Status HostChannel::Write(const char* p, size_t n, absl::Time deadline,
                                const std::function<bool()>& aborted) {
  Header& h = *header_;
  const int readers = h.readers;
  auto slowest = [&h, readers] {
    uint64_t m = h.read_pos[0].value.load(std::memory_order_acquire);
    for (int r = 1; r < readers; ++r) {
      m = std::min(m, h.read_pos[r].value.load(std::memory_order_acquire));
    }
    return m;
  };
  uint64_t pos = h.write_pos.value.load(std::memory_order_relaxed);
  while (n > 0) {
    uint64_t oldest = slowest();
    if (pos - oldest >= capacity_) {
      if (absl::Status s = Wait([&] { return pos - (oldest = slowest()) < capacity_; }, deadline,
                                aborted, "send (a reader is a whole ring behind)");
          !s.ok()) {
        return s;
      }
    }
    const size_t at = pos & (capacity_ - 1);
    const size_t chunk = std::min(
        {n, static_cast<size_t>(capacity_ - (pos - oldest)), static_cast<size_t>(capacity_ - at)});
    std::memcpy(ring_ + at, p, chunk);
    pos += chunk;
    p += chunk;
    n -= chunk;
    h.write_pos.value.store(pos, std::memory_order_release);
  }
  return absl::OkStatus();
}

absl::Status HostChannel::Read(char* p, size_t n, absl::Time deadline,
                               const std::function<bool()>& aborted) {
  Header& h = *header_;
  std::atomic<uint64_t>& mine = h.read_pos[reader_].value;
  uint64_t pos = mine.load(std::memory_order_relaxed);
  while (n > 0) {
    uint64_t written = h.write_pos.value.load(std::memory_order_acquire);
    if (written == pos) {
      if (absl::Status s = Wait(
              [&] { return (written = h.write_pos.value.load(std::memory_order_acquire)) != pos; },
              deadline, aborted, "receive");
          !s.ok()) {
        return s;
      }
    }
    if (written - pos > capacity_) {
      return absl::DataLossError("host channel: the writer overran this reader");
    }
    const size_t at = pos & (capacity_ - 1);
    const size_t chunk =
        std::min({n, static_cast<size_t>(written - pos), static_cast<size_t>(capacity_ - at)});
    std::memcpy(p, ring_ + at, chunk);
    pos += chunk;
    p += chunk;
    n -= chunk;
    mine.store(pos, std::memory_order_release);
  }
  return absl::OkStatus();
}

absl::Status HostChannel::Send(absl::string_view bytes, absl::Time deadline,
                               const std::function<bool()>& aborted) {
  if (!writer_) return absl::FailedPreconditionError("host channel: Send on a reader's end");
  const uint64_t size = bytes.size();
  if (absl::Status s = Write(reinterpret_cast<const char*>(&size), sizeof(size), deadline, aborted);
      !s.ok()) {
    return s;
  }
  return Write(bytes.data(), bytes.size(), deadline, aborted);
}

absl::Status HostChannel::Receive(std::string* bytes, absl::Time deadline,
                                  const std::function<bool()>& aborted) {
  if (writer_) return absl::FailedPreconditionError("host channel: Receive on the writer's end");
  uint64_t size = 0;
  if (absl::Status s = Read(reinterpret_cast<char*>(&size), sizeof(size), deadline, aborted);
      !s.ok()) {
    return s;
  }
  if (size > (uint64_t{1} << 34)) {
    return absl::DataLossError(absl::StrCat("host channel: a message of ", size, " bytes"));
  }
  bytes->resize(size);
  return Read(bytes->data(), size, deadline, aborted);
}

}  // namespace memshare::engine
