#include "engine/parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace memshare::engine {
namespace {

// Broadcasts carry this many bytes in their first round (a size header and
// the start of the payload): a decode step's plan fits, so most commands
// take one collective; a longer one takes a second for the rest.
constexpr size_t kInlineBytes = size_t{64} << 10;

ncclComm_t Comm(void* c) { return static_cast<ncclComm_t>(c); }

std::string NcclText(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') absl::StrAppend(&s, " (", last, ")");
  return s;
}

// ncclCommAbort, bounded: it first raises the abort flag that releases the
// communicator's kernels, then tears down, which was seen to hang for good
// once a peer process had died (NCCL 2.28, H100 pair, 2026-11-27). The
// teardown is left to a detached thread after `wait`: the kernels are
// released, the process goes on (and usually exits).
void AbortBounded(ncclComm_t comm, int rank, absl::Duration wait) {
  auto done = std::make_shared<absl::Notification>();
  std::thread([comm, done] {
    ncclCommAbort(comm);
    done->Notify();
  }).detach();
  if (!done->WaitForNotificationWithTimeout(wait)) {
    std::fprintf(stderr,
                 "memshare: rank %d: ncclCommAbort has not returned after %s; going on without "
                 "it\n",
                 rank, absl::FormatDuration(wait).c_str());
  }
}

// Polls with little delay at first (a decode step's collectives finish in
// microseconds), then backs off to 100 us sleeps.
class Poller {
 public:
  void Pause() {
    if (++spins_ < 2000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

 private:
  int spins_ = 0;
};

}  // namespace

void NcclCommunicator::PrepareEnvironment(bool allow_nvls) {
  if (!allow_nvls) {
    const char* v = std::getenv("NCCL_NVLS_ENABLE");
    if (v == nullptr || std::string(v) != "0") ::setenv("NCCL_NVLS_ENABLE", "0", 1);
  }
  // Connections made at initialization rather than at a collective's first
  // use, which may be inside a CUDA graph capture (the decode graphs), where
  // NCCL's allocations would break the capture. Kept if the user set it.
  ::setenv("NCCL_RUNTIME_CONNECT", "0", /*overwrite=*/0);
}

absl::StatusOr<std::string> NcclCommunicator::NewUniqueId() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) {
    return absl::InternalError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
  }
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(const Options& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL communicator: rank ", o.rank, " of ", o.world_size));
  }
  if (o.unique_id.size() != NCCL_UNIQUE_ID_BYTES) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id of ", o.unique_id.size(),
                                                   " bytes; expected ", NCCL_UNIQUE_ID_BYTES));
  }
  if (o.timeout <= absl::ZeroDuration() || o.init_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("NCCL communicator: timeouts must be > 0");
  }
  PrepareEnvironment(o.allow_nvls);
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(o));
  ncclGetVersion(&c->nccl_version_);
  if (c->nccl_version_ < NCCL_VERSION(2, 14, 0)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "NCCL ", c->nccl_version_, " lacks non-blocking communicators (2.14 or later needed)"));
  }
  if (cudaSetDevice(o.cuda_device) != cudaSuccess ||
      cudaStreamCreateWithFlags(&c->host_stream_, cudaStreamNonBlocking) != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("NCCL communicator: CUDA device ", o.cuda_device, " is not usable"));
  }
  ncclUniqueId id;
  std::memcpy(id.internal, o.unique_id.data(), NCCL_UNIQUE_ID_BYTES);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const absl::Time deadline = absl::Now() + o.init_timeout;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, o.world_size, id, o.rank, &config);
  c->comm_ = comm;
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) AbortBounded(comm, o.rank, absl::Seconds(2));
    c->comm_ = nullptr;
    return absl::UnavailableError(absl::StrCat("ncclCommInitRankConfig (rank ", o.rank, " of ",
                                               o.world_size, "): ", NcclText(r, nullptr)));
  }
  if (absl::Status s = c->Await(r, "ncclCommInitRankConfig", deadline); !s.ok()) return s;
  if (absl::Status s = c->EnsureStaging(kInlineBytes); !s.ok()) return s;
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(options_.cuda_device);
  if (comm_ != nullptr) AbortBounded(Comm(comm_), options_.rank, absl::Seconds(2));
  if (host_stream_ != nullptr) cudaStreamDestroy(host_stream_);
  if (host_buf_ != nullptr) cudaFreeHost(host_buf_);
  if (dev_buf_ != nullptr) cudaFree(dev_buf_);
}

absl::Status NcclCommunicator::health() const {
  absl::MutexLock lock(&mu_);
  return health_;
}

void NcclCommunicator::Abort(const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    if (health_.ok()) health_ = why.ok() ? absl::AbortedError("group aborted") : why;
  }
  abort_requested_.store(true);
}

absl::Status NcclCommunicator::Fail(const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    if (health_.ok()) health_ = why;
  }
  abort_requested_.store(true);
  if (comm_ != nullptr && !aborted_) {
    aborted_ = true;
    std::fprintf(stderr, "memshare: rank %d: tensor-parallel group failed (%s); aborting NCCL\n",
                 options_.rank, std::string(why.message()).c_str());
    AbortBounded(Comm(comm_), options_.rank, absl::Seconds(2));
    comm_ = nullptr;  // freed by the abort
  }
  return health();
}

absl::Status NcclCommunicator::Usable(bool set_device) {
  if (abort_requested_.load()) return Fail(absl::AbortedError("group aborted"));
  // Host collectives may come from any thread (the leader's idle probe
  // runs on its own): use this rank's device. (Not for the device
  // collectives, which may be enqueued inside a graph capture.)
  if (set_device && cudaSetDevice(options_.cuda_device) != cudaSuccess) {
    cudaGetLastError();
    return Fail(absl::InternalError(
        absl::StrCat("rank ", options_.rank, ": cudaSetDevice(", options_.cuda_device, ")")));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Await(int result, absl::string_view what, absl::Time deadline) {
  ncclResult_t r = static_cast<ncclResult_t>(result);
  Poller poll;
  while (true) {
    if (r == ncclSuccess) return absl::OkStatus();
    if (r != ncclInProgress) {
      return Fail(absl::UnavailableError(
          absl::StrCat("rank ", options_.rank, ": ", what, ": ", NcclText(r, Comm(comm_)))));
    }
    if (abort_requested_.load()) return Fail(absl::AbortedError("group aborted"));
    if (absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError(
          absl::StrCat("rank ", options_.rank, ": ", what,
                       " did not complete in time (a peer died, hangs or never started)")));
    }
    poll.Pause();
    if (comm_ == nullptr || ncclCommGetAsyncError(Comm(comm_), &r) != ncclSuccess) {
      return Fail(absl::InternalError(
          absl::StrCat("rank ", options_.rank, ": ", what, ": ncclCommGetAsyncError failed")));
    }
  }
}

absl::Status NcclCommunicator::WaitStream(cudaStream_t stream, absl::string_view what,
                                          absl::Time deadline) {
  Poller poll;
  int polls = 0;
  while (true) {
    const cudaError_t q = cudaStreamQuery(stream);
    if (q == cudaSuccess) return absl::OkStatus();
    if (q != cudaErrorNotReady) {
      cudaGetLastError();
      return Fail(absl::InternalError(
          absl::StrCat("rank ", options_.rank, ": ", what, ": ", cudaGetErrorString(q))));
    }
    if (abort_requested_.load()) return Fail(absl::AbortedError("group aborted"));
    // NCCL's own view every 64 polls (a remote error it detected).
    if (++polls % 64 == 0 && comm_ != nullptr) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(Comm(comm_), &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        return Fail(absl::UnavailableError(
            absl::StrCat("rank ", options_.rank, ": ", what, ": ", NcclText(async, Comm(comm_)))));
      }
    }
    if (absl::Now() > deadline) {
      return Fail(absl::DeadlineExceededError(
          absl::StrCat("rank ", options_.rank, ": ", what, " did not finish within ",
                       absl::FormatDuration(options_.timeout),
                       " (a peer of the tensor-parallel group died or hangs)")));
    }
    poll.Pause();
  }
}

absl::Status NcclCommunicator::EnsureStaging(size_t bytes) {
  if (bytes <= staging_bytes_) return absl::OkStatus();
  const size_t cap = std::max(bytes, kInlineBytes);
  if (host_buf_ != nullptr) cudaFreeHost(host_buf_);
  if (dev_buf_ != nullptr) cudaFree(dev_buf_);
  host_buf_ = dev_buf_ = nullptr;
  staging_bytes_ = 0;
  if (cudaMallocHost(&host_buf_, cap) != cudaSuccess || cudaMalloc(&dev_buf_, cap) != cudaSuccess) {
    cudaGetLastError();
    return Fail(absl::ResourceExhaustedError(
        absl::StrCat("rank ", options_.rank, ": staging buffers of ", cap, " bytes")));
  }
  staging_bytes_ = cap;
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Broadcast(std::string* bytes) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/true); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + options_.timeout;
  char* host = static_cast<char*>(host_buf_);
  uint64_t size = options_.rank == 0 ? bytes->size() : 0;
  const size_t head = kInlineBytes - sizeof(uint64_t);
  if (options_.rank == 0) {
    std::memcpy(host, &size, sizeof(size));
    std::memcpy(host + sizeof(size), bytes->data(), std::min<size_t>(size, head));
    cudaMemcpyAsync(dev_buf_, host_buf_, sizeof(size) + std::min<size_t>(size, head),
                    cudaMemcpyHostToDevice, host_stream_);
  }
  if (absl::Status s = Await(
          ncclBroadcast(dev_buf_, dev_buf_, kInlineBytes, ncclUint8, 0, Comm(comm_), host_stream_),
          "broadcast", deadline);
      !s.ok()) {
    return s;
  }
  if (options_.rank != 0) {
    cudaMemcpyAsync(host_buf_, dev_buf_, kInlineBytes, cudaMemcpyDeviceToHost, host_stream_);
  }
  if (absl::Status s = WaitStream(host_stream_, "broadcast", deadline); !s.ok()) return s;
  if (options_.rank != 0) {
    std::memcpy(&size, host, sizeof(size));
    if (size > (uint64_t{1} << 34)) {
      return Fail(absl::DataLossError(absl::StrCat("broadcast of ", size, " bytes")));
    }
    bytes->assign(host + sizeof(size), std::min<size_t>(size, head));
  }
  if (size <= head) return absl::OkStatus();
  // The rest, in a second round.
  const size_t rest = size - head;
  if (absl::Status s = EnsureStaging(rest); !s.ok()) return s;
  host = static_cast<char*>(host_buf_);
  if (options_.rank == 0) {
    std::memcpy(host, bytes->data() + head, rest);
    cudaMemcpyAsync(dev_buf_, host_buf_, rest, cudaMemcpyHostToDevice, host_stream_);
  }
  if (absl::Status s =
          Await(ncclBroadcast(dev_buf_, dev_buf_, rest, ncclUint8, 0, Comm(comm_), host_stream_),
                "broadcast", deadline);
      !s.ok()) {
    return s;
  }
  if (options_.rank != 0) {
    cudaMemcpyAsync(host_buf_, dev_buf_, rest, cudaMemcpyDeviceToHost, host_stream_);
  }
  if (absl::Status s = WaitStream(host_stream_, "broadcast", deadline); !s.ok()) return s;
  if (options_.rank != 0) bytes->append(host, rest);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceSum(absl::Span<double> values) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/true); !s.ok()) return s;
  if (values.empty()) return absl::OkStatus();
  const size_t bytes = values.size() * sizeof(double);
  if (absl::Status s = EnsureStaging(bytes); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + options_.timeout;
  std::memcpy(host_buf_, values.data(), bytes);
  cudaMemcpyAsync(dev_buf_, host_buf_, bytes, cudaMemcpyHostToDevice, host_stream_);
  if (absl::Status s = Await(ncclAllReduce(dev_buf_, dev_buf_, values.size(), ncclFloat64, ncclSum,
                                           Comm(comm_), host_stream_),
                             "all-reduce", deadline);
      !s.ok()) {
    return s;
  }
  cudaMemcpyAsync(host_buf_, dev_buf_, bytes, cudaMemcpyDeviceToHost, host_stream_);
  if (absl::Status s = WaitStream(host_stream_, "all-reduce", deadline); !s.ok()) return s;
  std::memcpy(values.data(), host_buf_, bytes);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllGather(uint64_t value, std::vector<uint64_t>* out) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/true); !s.ok()) return s;
  const size_t n = options_.world_size;
  if (absl::Status s = EnsureStaging(256 + n * 8); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + options_.timeout;
  char* dev = static_cast<char*>(dev_buf_);
  std::memcpy(host_buf_, &value, 8);
  cudaMemcpyAsync(dev, host_buf_, 8, cudaMemcpyHostToDevice, host_stream_);
  if (absl::Status s =
          Await(ncclAllGather(dev, dev + 256, 1, ncclUint64, Comm(comm_), host_stream_),
                "all-gather", deadline);
      !s.ok()) {
    return s;
  }
  cudaMemcpyAsync(host_buf_, dev + 256, n * 8, cudaMemcpyDeviceToHost, host_stream_);
  if (absl::Status s = WaitStream(host_stream_, "all-gather", deadline); !s.ok()) return s;
  out->resize(n);
  std::memcpy(out->data(), host_buf_, n * 8);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceMin(int64_t* value) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/true); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + options_.timeout;
  std::memcpy(host_buf_, value, 8);
  cudaMemcpyAsync(dev_buf_, host_buf_, 8, cudaMemcpyHostToDevice, host_stream_);
  if (absl::Status s =
          Await(ncclAllReduce(dev_buf_, dev_buf_, 1, ncclInt64, ncclMin, Comm(comm_), host_stream_),
                "all-reduce (min)", deadline);
      !s.ok()) {
    return s;
  }
  cudaMemcpyAsync(host_buf_, dev_buf_, 8, cudaMemcpyDeviceToHost, host_stream_);
  if (absl::Status s = WaitStream(host_stream_, "all-reduce (min)", deadline); !s.ok()) return s;
  std::memcpy(value, host_buf_, 8);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceSumBf16(void* data, int64_t count, cudaStream_t stream) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/false); !s.ok()) return s;
  return Await(ncclAllReduce(data, data, static_cast<size_t>(count), ncclBfloat16, ncclSum,
                             Comm(comm_), stream),
               "all-reduce of activations", absl::Now() + options_.timeout);
}

absl::Status NcclCommunicator::AllGatherFp32(const float* send, float* recv, int64_t count,
                                             cudaStream_t stream) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/false); !s.ok()) return s;
  return Await(
      ncclAllGather(send, recv, static_cast<size_t>(count), ncclFloat32, Comm(comm_), stream),
      "all-gather of logits", absl::Now() + options_.timeout);
}

absl::Status NcclCommunicator::Synchronize(cudaStream_t stream, absl::string_view what) {
  // When the group is broken this returns at once (the NCCL communicator
  // was aborted, which releases the kernels that waited for a peer).
  return WaitStream(stream, what, absl::Now() + options_.timeout);
}

}  // namespace memshare::engine
