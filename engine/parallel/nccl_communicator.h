// A tensor-parallel group's communicator over NCCL (DESIGN.md §2): the
// host-side collectives of Communicator (staged through pinned memory on a
// stream of its own) and the device collectives the CUDA backend enqueues on
// its stream (cuda::DeviceCollectives), over one NCCL communicator.
//
// No process hangs forever: the communicator is non-blocking (NCCL's
// `blocking = 0`), and every wait, for the initialization, an enqueue or a
// stream, polls the stream and ncclCommGetAsyncError against a deadline
// (Options::timeout). A peer that died or hangs, NCCL's own asynchronous
// error or an Abort() from another thread makes the waiting call abort the
// NCCL communicator (ncclCommAbort, which releases the kernels waiting for
// the peer) and return DEADLINE_EXCEEDED or UNAVAILABLE; from then on the
// communicator is broken (health()). ncclCommAbort's own teardown was seen
// to hang after a peer process died, so it gets 2 s and is then left to a
// detached thread (the kernels are released by then): a process whose group
// broke should exit soon after (memshare_worker does, with _exit).
//
// NVLink multicast (NVLS) stays off unless Options::allow_nvls: Create sets
// NCCL_NVLS_ENABLE=0 in the process environment before NCCL initializes.
// On a shared host, multicast objects can take every GPU of the host out of
// service. Create also sets NCCL_RUNTIME_CONNECT=0 unless it is set: every
// connection is made at initialization, none inside a CUDA graph capture.
//
// Thread-compatible for the collectives (the group's driving thread; a
// driving thread must not run collectives while another captures a CUDA
// graph with this communicator); health() and Abort() are thread-safe.
#ifndef MEMSHARE_ENGINE_PARALLEL_NCCL_COMMUNICATOR_H_
#define MEMSHARE_ENGINE_PARALLEL_NCCL_COMMUNICATOR_H_

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/cuda/device_collectives.h"
#include "engine/parallel/communicator.h"

namespace memshare::engine {

class NcclCommunicator final : public Communicator, public cuda::DeviceCollectives {
 public:
  struct Options {
    // This process's rank, 0 .. world_size-1, and the group's size, >= 1.
    int rank = 0;
    int world_size = 1;
    // The group's NCCL unique id (NewUniqueId() on rank 0, handed to every
    // rank by the rendezvous): NCCL_UNIQUE_ID_BYTES bytes.
    std::string unique_id;
    // CUDA device of this rank.
    int cuda_device = 0;
    // Longest wait of any one collective or stream synchronization before
    // the group is declared broken.
    absl::Duration timeout = absl::Seconds(30);
    // Longest wait for every rank to initialize (ncclCommInitRankConfig).
    absl::Duration init_timeout = absl::Minutes(2);
    // Leave NVLink multicast to NCCL's default. Off: NCCL_NVLS_ENABLE=0.
    bool allow_nvls = false;
  };

  // Sets NCCL's environment as Create does (NCCL_NVLS_ENABLE=0 unless
  // `allow_nvls`, NCCL_RUNTIME_CONNECT=0 unless set). Call it early, before
  // the process starts threads (setenv is not thread-safe) and before any
  // NCCL call; Create calls it again (idempotent).
  static void PrepareEnvironment(bool allow_nvls);

  // A fresh NCCL unique id (rank 0). INTERNAL when NCCL fails.
  static absl::StatusOr<std::string> NewUniqueId();

  // Joins the group: returns once every rank has called Create with the
  // same id (ncclCommInitRankConfig), or DEADLINE_EXCEEDED after the
  // timeout. INVALID_ARGUMENT for bad options; UNAVAILABLE or INTERNAL for
  // NCCL and CUDA failures.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const Options& options);

  // Aborts the NCCL communicator (local; never waits for the peers).
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }

  // Communicator (host memory; each call waits for its result).
  absl::Status Broadcast(std::string* bytes) override;
  absl::Status AllReduceSum(absl::Span<double> values) override;
  absl::Status AllGather(uint64_t value, std::vector<uint64_t>* out) override;
  absl::Status health() const override ABSL_LOCKS_EXCLUDED(mu_);
  void Abort(const absl::Status& why) override ABSL_LOCKS_EXCLUDED(mu_);

  // cuda::DeviceCollectives (enqueued on the caller's stream).
  absl::Status AllReduceSumBf16(void* data, int64_t count, cudaStream_t stream) override;
  absl::Status AllGatherFp32(const float* send, float* recv, int64_t count,
                             cudaStream_t stream) override;
  absl::Status Synchronize(cudaStream_t stream, absl::string_view what) override;
  absl::Status AllReduceMin(int64_t* value) override;

  // The linked NCCL's version (NCCL_VERSION_CODE form, e.g. 22809).
  int nccl_version() const { return nccl_version_; }

 private:
  explicit NcclCommunicator(const Options& options) : options_(options) {}
  // Waits while NCCL reports ncclInProgress for the last call; OK once it
  // reports success.
  absl::Status Await(int result, absl::string_view what, absl::Time deadline);
  // Waits for `stream`, polling NCCL's asynchronous error.
  absl::Status WaitStream(cudaStream_t stream, absl::string_view what, absl::Time deadline);
  // Breaks the group with `why` (kept unless it already failed), aborting
  // the NCCL communicator; returns health().
  absl::Status Fail(const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Usable(bool set_device) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status EnsureStaging(size_t bytes);

  const Options options_;
  void* comm_ = nullptr;  // ncclComm_t
  int nccl_version_ = 0;
  cudaStream_t host_stream_ = nullptr;  // host collectives
  void* host_buf_ = nullptr;            // pinned
  void* dev_buf_ = nullptr;
  size_t staging_bytes_ = 0;

  mutable absl::Mutex mu_;
  absl::Status health_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> abort_requested_{false};
  bool aborted_ = false;  // ncclCommAbort ran (driving thread only)
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_NCCL_COMMUNICATOR_H_
