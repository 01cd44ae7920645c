// A fixed set of worker threads that split a loop with the calling thread
// (the CPU backend parallelizes matrix products over output rows and
// attention over (token, head) pairs with it).
//
// ParallelFor may be called from one thread at a time (the backend's caller);
// it is not reentrant: `fn` must not call ParallelFor.
#ifndef MEMSHARE_ENGINE_CPU_THREAD_POOL_H_
#define MEMSHARE_ENGINE_CPU_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace memshare::engine::cpu {

class ThreadPool {
 public:
  // `num_threads` counts the caller: num_threads - 1 workers are started.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges that cover [0, n), each at most
  // `grain` long (grain >= 1), on the workers and the caller; returns when
  // every call has returned. Runs inline when one range covers n.
  void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn);

 private:
  void WorkerLoop();
  void RunChunks();

  absl::Mutex mu_;
  absl::CondVar work_cv_;
  absl::CondVar done_cv_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped for every ParallelFor
  int busy_workers_ ABSL_GUARDED_BY(mu_) = 0;     // workers still in the current job
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The current job; written under mu_ before generation_ is bumped, read
  // by workers after they see the bump, stable until busy_workers_ is 0.
  const absl::FunctionRef<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  std::atomic<int64_t> next_{0};  // first index not yet handed out
  std::vector<std::thread> workers_;
};

}  // namespace memshare::engine::cpu

#endif  // MEMSHARE_ENGINE_CPU_THREAD_POOL_H_
