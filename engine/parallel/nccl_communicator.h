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
// Fast paths (issue 7), chosen at Create, the same on every rank (each
// rank's wish is all-reduced to the least of them):
//  - Broadcast goes through a shared-memory HostChannel when every rank
//    opens the segment rank 0 made (ranks on one host): a few microseconds,
//    and rank 0 does not wait for the followers. Otherwise NCCL (staged
//    through pinned memory). MEMSHARE_TP_PLAN=nccl forces NCCL.
//  - With 2 .. 8 ranks on one host whose GPUs map each other's memory
//    (CUDA IPC, handles exchanged over NCCL at Create), bf16 all-reduces of
//    up to 2 MiB run as one kernel (one_shot_all_reduce.h,
//    all_reduce_path.h), an all-reduce followed by the residual add +
//    RMSNorm as one kernel (FusesAllReduceAddRmsNorm), and the maximum of
//    the greedy candidates (AllReduceMaxU64) too. NCCL for everything else.
//    MEMSHARE_TP_ALLREDUCE=nccl|oneshot|fused (default fused) narrows it;
//    With two ranks the bf16 sums' pieces are pushed into a staging polled
//    for a "not empty" value (Lamport; Options::one_shot_lamport);
//    MEMSHARE_TP_ONESHOT=push pushes them with flags instead, and
//    MEMSHARE_TP_ONESHOT=pull reads the peers' pieces over NVLink.
//  - Greedy rows are sampled on the vocabulary shards
//    (samples_on_shards(); cuda_backend.h) unless MEMSHARE_TP_SAMPLE=gather
//    on any rank or Options::shard_sampling is off on any rank.
//    The one-shot kernels wait for the peers on device flags; they give up
//    when the group breaks (Fail and Abort raise a host-mapped word they
//    poll), so a dead peer still ends in a bounded wait.
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

#include <array>
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
#include "engine/parallel/all_reduce_path.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/host_channel.h"
#include "engine/parallel/one_shot_all_reduce.h"

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
    // Broadcast through shared memory where every rank can (one host);
    // false, or MEMSHARE_TP_PLAN=nccl on any rank: always NCCL.
    bool host_channel = true;
    // The fastest all-reduce allowed where it applies (all_reduce_path.h);
    // MEMSHARE_TP_ALLREDUCE overrides it. The group takes the least of its
    // ranks' choices.
    AllReduceMode all_reduce = AllReduceMode::kFused;
    // One-shot pieces pushed into the peers' memory (else pulled from them);
    // MEMSHARE_TP_ONESHOT=pull on any rank: pulled.
    bool one_shot_push = true;
    // Pushed bf16 sums through the Lamport staging, without flags
    // (all_reduce_path.h), for groups of two ranks: TP=2 decode step 4.59 ms
    // against 4.68 with flags on one H100 pair (bench/RESULTS.md, run B).
    // Larger groups keep the flags (at four ranks Lamport gained nothing:
    // 3.462 vs 3.447 ms, run D);
    // MEMSHARE_TP_ONESHOT=lamport on every rank takes it at any size, =push
    // (flags) or =pull on any rank never.
    bool one_shot_lamport = true;
    // Greedy sampling on the vocabulary shards (DeviceCollectives::
    // samples_on_shards); false, or MEMSHARE_TP_SAMPLE=gather on any rank:
    // on all-gathered logits.
    bool shard_sampling = true;
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
  absl::Status AllReduceMaxU64(uint64_t* data, int64_t count, cudaStream_t stream) override;
  bool samples_on_shards() const override { return samples_on_shards_; }

  bool FusesAllReduceAddRmsNorm(const void* x, const void* residual, const void* weight,
                                const void* out, int rows, int hidden) const override;
  absl::Status AllReduceAddRmsNormBf16(const void* x, void* residual, const void* weight, void* out,
                                       int rows, int hidden, float eps,
                                       cudaStream_t stream) override;

  // The linked NCCL's version (NCCL_VERSION_CODE form, e.g. 22809).
  int nccl_version() const { return nccl_version_; }
  // What Create chose (the same on every rank).
  bool host_channel_active() const { return channel_ != nullptr; }
  bool one_shot_ready() const { return one_shot_ready_; }
  bool one_shot_push() const { return one_shot_push_; }
  bool one_shot_lamport() const { return one_shot_lamport_; }
  AllReduceMode all_reduce_mode() const { return all_reduce_mode_; }
  // Benchmarks: narrows the all-reduce (kFused allows everything Create
  // set up). Every rank must call it alike, between collectives and
  // outside graph captures.
  void set_all_reduce_mode(AllReduceMode mode) { all_reduce_mode_ = mode; }

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
  // Every rank's `mine` (the same length on every rank), in rank order.
  absl::Status AllGatherBytes(const std::string& mine, std::vector<std::string>* all);
  // Create's fast paths; errors only for failed collectives (a path that
  // cannot be set up is left off).
  absl::Status SetUpHostChannel();
  absl::Status SetUpOneShot();
  absl::Status SetUpShardSampling();
  void FreeOneShot();
  OneShotBuffers one_shot_buffers() const;
  // Releases the one-shot kernels' waits (the group broke).
  void RaiseDeviceAbort();

  const Options options_;
  void* comm_ = nullptr;  // ncclComm_t
  int nccl_version_ = 0;
  cudaStream_t host_stream_ = nullptr;  // host collectives
  void* host_buf_ = nullptr;            // pinned
  void* dev_buf_ = nullptr;
  size_t staging_bytes_ = 0;

  std::unique_ptr<HostChannel> channel_;  // Broadcast's, when every rank has it
  AllReduceMode all_reduce_mode_ = AllReduceMode::kNccl;
  bool one_shot_ready_ = false;
  bool one_shot_push_ = true;
  bool one_shot_lamport_ = false;
  bool samples_on_shards_ = false;
  void* one_shot_local_ = nullptr;  // exchange buffer (one_shot::BufferBytes(world_size))
  // Every rank's exchange buffer as this process maps it ([rank]: the
  // local one; the others through CUDA IPC).
  std::array<void*, one_shot::kMaxRanks> one_shot_buffers_{};
  uint32_t* one_shot_counts_ = nullptr;  // [2][one_shot::kSlots]: flags', Lamport's
  int* abort_host_ = nullptr;            // pinned, mapped
  int* abort_dev_ = nullptr;             // its device address

  mutable absl::Mutex mu_;
  absl::Status health_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> abort_requested_{false};
  bool aborted_ = false;  // ncclCommAbort ran (driving thread only)
};

}  // namespace memshare::engine

#endif  // MEMSHARE_ENGINE_PARALLEL_NCCL_COMMUNICATOR_H_
