#include "engine/parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "xxhash.h"

namespace memshare::engine {
namespace {

// Broadcasts carry this many bytes in their first round (a size header and
// the start of the payload): a decode step's plan fits, so most commands
// take one collective; a longer one takes a second for the rest.
constexpr size_t kInlineBytes = size_t{64} << 10;

// Ring of the shared-memory broadcast: a few decode plans.
constexpr size_t kHostChannelBytes = size_t{4} << 20;

std::string EnvOr(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

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

// Polls without sleeping for the first 50 ms of a wait (a decode step: its
// end is seen within microseconds, as cudaStreamSynchronize would), then
// backs off to 100 us sleeps (prefill steps, idle waits). A count of yields
// instead of a time let a 5 ms decode step's end wait for a 100 us sleep
// (run 1 of the fast paths, bench/NOTES-tensor-parallel.md).
class Poller {
 public:
  void Pause() {
    if (absl::Now() - start_ < absl::Milliseconds(50)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

 private:
  const absl::Time start_ = absl::Now();
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
  if (absl::Status s = c->SetUpHostChannel(); !s.ok()) return s;
  if (absl::Status s = c->SetUpOneShot(); !s.ok()) return s;
  if (absl::Status s = c->SetUpShardSampling(); !s.ok()) return s;
  std::fprintf(stderr,
               "memshare: rank %d of %d: broadcast through %s, greedy sampling %s, all-reduce "
               "%s%s\n",
               o.rank, o.world_size, c->channel_ != nullptr ? "shared memory" : "NCCL",
               c->samples_on_shards_ ? "on vocabulary shards" : "on all-gathered logits",
               c->one_shot_ready_
                   ? (c->one_shot_lamport_ ? "one-shot over CUDA IPC (lamport), mode "
                      : c->one_shot_push_  ? "one-shot over CUDA IPC (push), mode "
                                           : "one-shot over CUDA IPC (pull), mode ")
                   : "NCCL",
               c->one_shot_ready_ ? AllReduceModeName(c->all_reduce_mode_) : "");
  return c;
}

absl::Status NcclCommunicator::SetUpHostChannel() {
  int64_t want = options_.host_channel && options_.world_size > 1 &&
                         absl::AsciiStrToLower(EnvOr("MEMSHARE_TP_PLAN")) != "nccl"
                     ? 1
                     : 0;
  if (absl::Status s = AllReduceMin(&want); !s.ok()) return s;
  if (want == 0) return absl::OkStatus();
  HostChannel::Options co;
  const uint64_t id_hash = XXH64(options_.unique_id.data(), options_.unique_id.size(), 0);
  co.name = absl::StrCat("/memshare-tp-", absl::Hex(id_hash, absl::kZeroPad16));
  co.capacity = kHostChannelBytes;
  co.readers = options_.world_size - 1;
  std::unique_ptr<HostChannel> channel;
  int64_t ok = 1;
  if (options_.rank == 0) {
    absl::StatusOr<std::unique_ptr<HostChannel>> made = HostChannel::Create(co);
    if (made.ok()) {
      channel = *std::move(made);
    } else {
      ok = 0;
      std::fprintf(stderr, "memshare: rank 0: no shared-memory broadcast (%s)\n",
                   made.status().ToString().c_str());
    }
  }
  if (absl::Status s = AllReduceMin(&ok); !s.ok()) return s;  // made before opened
  if (ok == 0) return absl::OkStatus();
  if (options_.rank != 0) {
    co.reader = options_.rank - 1;
    absl::StatusOr<std::unique_ptr<HostChannel>> opened = HostChannel::Open(co);
    if (opened.ok()) {
      channel = *std::move(opened);
    } else {
      ok = 0;  // e.g. another host
    }
  }
  if (absl::Status s = AllReduceMin(&ok); !s.ok()) return s;
  if (options_.rank == 0) channel->Unlink();  // every rank opened it, or gave up
  if (ok == 1) channel_ = std::move(channel);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::SetUpOneShot() {
  AllReduceMode mode = options_.all_reduce;
  const std::string env = EnvOr("MEMSHARE_TP_ALLREDUCE");
  if (!ParseAllReduceMode(env, mode, &mode)) {
    std::fprintf(stderr,
                 "memshare: rank %d: MEMSHARE_TP_ALLREDUCE=%s is not nccl, oneshot or "
                 "fused; using NCCL\n",
                 options_.rank, env.c_str());
    mode = AllReduceMode::kNccl;
  }
  int64_t agreed = static_cast<int64_t>(mode);
  if (absl::Status s = AllReduceMin(&agreed); !s.ok()) return s;
  all_reduce_mode_ = static_cast<AllReduceMode>(agreed);
  int64_t want = one_shot::WorldSupported(options_.world_size) && channel_ != nullptr &&
                         all_reduce_mode_ != AllReduceMode::kNccl
                     ? 1
                     : 0;
  if (absl::Status s = AllReduceMin(&want); !s.ok()) return s;
  if (want == 0) {
    all_reduce_mode_ = AllReduceMode::kNccl;
    return absl::OkStatus();
  }
  // This rank's exchange buffer, counts and abort word, zeroed.
  const size_t bytes = one_shot::BufferBytes(options_.world_size);
  // Flags and flag staging zeroed, the Lamport staging empty (0xff bytes).
  const size_t lamport_at = one_shot::kSignalBytes + one_shot::StagingBytes(options_.world_size);
  bool ok =
      cudaMalloc(&one_shot_local_, bytes) == cudaSuccess &&
      cudaMemset(one_shot_local_, 0, lamport_at) == cudaSuccess &&
      cudaMemset(static_cast<char*>(one_shot_local_) + lamport_at, 0xff, bytes - lamport_at) ==
          cudaSuccess &&
      cudaMalloc(&one_shot_counts_, 2 * one_shot::kSlots * sizeof(uint32_t)) == cudaSuccess &&
      cudaMemset(one_shot_counts_, 0, 2 * one_shot::kSlots * sizeof(uint32_t)) == cudaSuccess &&
      cudaHostAlloc(reinterpret_cast<void**>(&abort_host_), sizeof(int), cudaHostAllocMapped) ==
          cudaSuccess;
  if (ok) {
    *abort_host_ = 0;
    ok = cudaHostGetDevicePointer(reinterpret_cast<void**>(&abort_dev_), abort_host_, 0) ==
             cudaSuccess &&
         cudaDeviceSynchronize() == cudaSuccess;
  }
  cudaIpcMemHandle_t handle;
  std::memset(&handle, 0, sizeof(handle));
  ok = ok && cudaIpcGetMemHandle(&handle, one_shot_local_) == cudaSuccess;
  std::string mine(1 + sizeof(handle), '\0');
  mine[0] = ok ? 1 : 0;
  std::memcpy(mine.data() + 1, &handle, sizeof(handle));
  std::vector<std::string> all;
  if (absl::Status s = AllGatherBytes(mine, &all); !s.ok()) return s;
  one_shot_buffers_.fill(nullptr);
  one_shot_buffers_[options_.rank] = one_shot_local_;
  for (int r = 0; r < options_.world_size && ok; ++r) {
    if (r == options_.rank) continue;
    if (all[r][0] != 1) {
      ok = false;
      break;
    }
    cudaIpcMemHandle_t peer;
    std::memcpy(&peer, all[r].data() + 1, sizeof(peer));
    void* mapped = nullptr;
    ok = cudaIpcOpenMemHandle(&mapped, peer, cudaIpcMemLazyEnablePeerAccess) == cudaSuccess;
    if (ok) one_shot_buffers_[r] = mapped;
  }
  cudaGetLastError();
  int64_t all_ok = ok ? 1 : 0;
  if (absl::Status s = AllReduceMin(&all_ok); !s.ok()) return s;
  if (all_ok == 0) {
    std::fprintf(stderr,
                 "memshare: rank %d: no one-shot all-reduce (CUDA IPC or peer access "
                 "failed on a rank); NCCL\n",
                 options_.rank);
    FreeOneShot();
    all_reduce_mode_ = AllReduceMode::kNccl;
    return absl::OkStatus();
  }
  // 0 pull, 1 push, 2 Lamport (push without flags); the least of the ranks'.
  const std::string protocol = absl::AsciiStrToLower(EnvOr("MEMSHARE_TP_ONESHOT"));
  // Lamport by default only with two ranks, where it is faster (with four
  // it measured the same as the flags).
  const bool lamport_default = options_.one_shot_lamport && options_.world_size == 2;
  int64_t push = !options_.one_shot_push || protocol == "pull" ? 0
                 : protocol == "push"                          ? 1
                 : protocol == "lamport" || lamport_default    ? 2
                                                               : 1;
  if (absl::Status s = AllReduceMin(&push); !s.ok()) return s;
  one_shot_push_ = push >= 1;
  one_shot_lamport_ = push == 2;
  one_shot_ready_ = true;
  return absl::OkStatus();
}

absl::Status NcclCommunicator::SetUpShardSampling() {
  int64_t want =
      options_.shard_sampling && absl::AsciiStrToLower(EnvOr("MEMSHARE_TP_SAMPLE")) != "gather" ? 1
                                                                                                : 0;
  if (absl::Status s = AllReduceMin(&want); !s.ok()) return s;
  samples_on_shards_ = want == 1;
  return absl::OkStatus();
}

OneShotBuffers NcclCommunicator::one_shot_buffers() const {
  OneShotBuffers b;
  b.rank = options_.rank;
  b.world = options_.world_size;
  for (int r = 0; r < one_shot::kMaxRanks; ++r) b.buffers[r] = one_shot_buffers_[r];
  b.counts = one_shot_counts_;
  b.lamport_counts = one_shot_counts_ == nullptr ? nullptr : one_shot_counts_ + one_shot::kSlots;
  b.abort = abort_dev_;
  b.push = one_shot_push_;
  b.lamport = one_shot_lamport_;
  return b;
}

void NcclCommunicator::FreeOneShot() {
  one_shot_ready_ = false;
  for (int r = 0; r < one_shot::kMaxRanks; ++r) {
    if (r != options_.rank && one_shot_buffers_[r] != nullptr) {
      cudaIpcCloseMemHandle(one_shot_buffers_[r]);
    }
  }
  one_shot_buffers_.fill(nullptr);
  if (one_shot_local_ != nullptr) cudaFree(one_shot_local_);
  if (one_shot_counts_ != nullptr) cudaFree(one_shot_counts_);
  if (abort_host_ != nullptr) cudaFreeHost(abort_host_);
  one_shot_local_ = nullptr;
  one_shot_counts_ = nullptr;
  abort_host_ = abort_dev_ = nullptr;
  cudaGetLastError();
}

void NcclCommunicator::RaiseDeviceAbort() {
  if (abort_host_ != nullptr) {
    reinterpret_cast<volatile int*>(abort_host_)[0] = 1;
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

absl::Status NcclCommunicator::AllGatherBytes(const std::string& mine,
                                              std::vector<std::string>* all) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/true); !s.ok()) return s;
  const size_t n = mine.size();
  const size_t w = options_.world_size;
  if (absl::Status s = EnsureStaging(n * (w + 1)); !s.ok()) return s;
  const absl::Time deadline = absl::Now() + options_.timeout;
  char* dev = static_cast<char*>(dev_buf_);
  std::memcpy(host_buf_, mine.data(), n);
  cudaMemcpyAsync(dev, host_buf_, n, cudaMemcpyHostToDevice, host_stream_);
  if (absl::Status s = Await(ncclAllGather(dev, dev + n, n, ncclUint8, Comm(comm_), host_stream_),
                             "all-gather (bytes)", deadline);
      !s.ok()) {
    return s;
  }
  cudaMemcpyAsync(host_buf_, dev + n, n * w, cudaMemcpyDeviceToHost, host_stream_);
  if (absl::Status s = WaitStream(host_stream_, "all-gather (bytes)", deadline); !s.ok()) return s;
  all->clear();
  for (size_t r = 0; r < w; ++r) all->emplace_back(static_cast<char*>(host_buf_) + r * n, n);
  return absl::OkStatus();
}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(options_.cuda_device);
  if (!health().ok()) RaiseDeviceAbort();
  if (comm_ != nullptr) AbortBounded(Comm(comm_), options_.rank, absl::Seconds(2));
  FreeOneShot();
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
  RaiseDeviceAbort();
}

absl::Status NcclCommunicator::Fail(const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    if (health_.ok()) health_ = why;
  }
  abort_requested_.store(true);
  RaiseDeviceAbort();  // first: the one-shot kernels may be ahead of NCCL's on the stream
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
  if (channel_ != nullptr) {
    if (abort_requested_.load()) return Fail(absl::AbortedError("group aborted"));
    const absl::Time deadline = absl::Now() + options_.timeout;
    const std::function<bool()> aborted = [this] { return abort_requested_.load(); };
    const absl::Status s = options_.rank == 0 ? channel_->Send(*bytes, deadline, aborted)
                                              : channel_->Receive(bytes, deadline, aborted);
    if (s.ok()) return s;
    if (absl::IsAborted(s)) return Fail(absl::AbortedError("group aborted"));
    if (absl::IsDeadlineExceeded(s)) {
      return Fail(absl::DeadlineExceededError(
          absl::StrCat("rank ", options_.rank, ": broadcast did not finish within ",
                       absl::FormatDuration(options_.timeout),
                       " (a peer of the tensor-parallel group died or hangs)")));
    }
    return Fail(
        absl::InternalError(absl::StrCat("rank ", options_.rank, ": broadcast: ", s.message())));
  }
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
  if (UseOneShotAllReduce(one_shot_ready_, all_reduce_mode_, count,
                          reinterpret_cast<uintptr_t>(data))) {
    if (absl::Status s = LaunchOneShotAllReduceBf16(one_shot_buffers(), data, count, stream);
        !s.ok()) {
      return Fail(s);
    }
    return absl::OkStatus();
  }
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

absl::Status NcclCommunicator::AllReduceMaxU64(uint64_t* data, int64_t count, cudaStream_t stream) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/false); !s.ok()) return s;
  if (count <= 0) return absl::OkStatus();
  if (UseOneShotMaxU64(one_shot_ready_, all_reduce_mode_, count,
                       reinterpret_cast<uintptr_t>(data))) {
    if (absl::Status s = LaunchOneShotAllReduceMaxU64(one_shot_buffers(), data, count, stream);
        !s.ok()) {
      return Fail(s);
    }
    return absl::OkStatus();
  }
  return Await(ncclAllReduce(data, data, static_cast<size_t>(count), ncclUint64, ncclMax,
                             Comm(comm_), stream),
               "all-reduce (max) of greedy candidates", absl::Now() + options_.timeout);
}

bool NcclCommunicator::FusesAllReduceAddRmsNorm(const void* x, const void* residual,
                                                const void* weight, const void* out, int rows,
                                                int hidden) const {
  return UseFusedAddRmsNorm(one_shot_ready_, all_reduce_mode_, rows, hidden,
                            reinterpret_cast<uintptr_t>(x), reinterpret_cast<uintptr_t>(residual),
                            reinterpret_cast<uintptr_t>(weight), reinterpret_cast<uintptr_t>(out));
}

absl::Status NcclCommunicator::AllReduceAddRmsNormBf16(const void* x, void* residual,
                                                       const void* weight, void* out, int rows,
                                                       int hidden, float eps, cudaStream_t stream) {
  if (absl::Status s = health(); !s.ok()) return s;
  if (absl::Status s = Usable(/*set_device=*/false); !s.ok()) return s;
  if (!FusesAllReduceAddRmsNorm(x, residual, weight, out, rows, hidden)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fused all-reduce + RMSNorm of ", rows, " x ", hidden, " is not available"));
  }
  if (absl::Status s = LaunchOneShotAllReduceAddRmsNorm(one_shot_buffers(), x, residual, weight,
                                                        out, rows, hidden, eps, stream);
      !s.ok()) {
    return Fail(s);
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Synchronize(cudaStream_t stream, absl::string_view what) {
  // When the group is broken this returns at once (the NCCL communicator
  // was aborted, which releases the kernels that waited for a peer).
  return WaitStream(stream, what, absl::Now() + options_.timeout);
}

}  // namespace memshare::engine
