// Routing policies of memshare_router: which worker group gets a request.
//
//   least-load  (default) the lowest score
//                 kv_usage + waiting_tokens / queued_tokens_scale
//                          + in_flight / in_flight_scale
//               where kv_usage and waiting_tokens come from the worker's last
//               load report and in_flight is the router's own count (it
//               covers requests sent since that report). Ties go round-robin.
//   session     consistent hash of the session id over the eligible workers
//               (a ring of virtual nodes, so adding or losing a worker moves
//               only its share of sessions). No session id: least-load.
//   prefix      consistent hash of the prompt's first blocks (prefix-cache
//               affinity); least-load when the prompt is shorter than one
//               block or the chosen worker is overloaded (kv_usage above
//               overload_kv_usage).
//
// A policy picks among the workers it is given; the router passes only
// eligible ones (healthy, not draining, with room, not tried before by this
// request). Thread-safe.
#ifndef MEMSHARE_ROUTER_ROUTING_POLICY_H_
#define MEMSHARE_ROUTER_ROUTING_POLICY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/memshare/v1/inference.pb.h"

namespace memshare::router {

// What a policy knows of one candidate worker.
struct WorkerView {
  std::string address;
  double kv_usage = 0;         // from the last load report, [0, 1]
  int64_t waiting_tokens = 0;  // from the last load report
  int32_t in_flight = 0;       // requests the router has on it now
};

// What a policy knows of the request.
struct RouteKey {
  std::string session_id;
  // Hash of the prompt's first blocks; empty when the prompt is shorter
  // than one block.
  std::optional<uint64_t> prefix_hash;
};

// The prefix hash of a request: the first `prefix_blocks` full blocks of
// token ids, or for text and chat (the router does not tokenize) the first
// prefix_blocks * block_size * 4 bytes (about 4 bytes per token), plus the
// cache salt (salted prefixes are cached apart).
RouteKey MakeRouteKey(const v1::GenerateRequest& request, int block_size, int prefix_blocks);

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  // Index into `workers` (not empty) of the chosen one.
  virtual size_t Pick(const RouteKey& key, const std::vector<WorkerView>& workers) = 0;
  virtual const char* name() const = 0;
};

struct PolicyOptions {
  // "least-load", "session" or "prefix".
  std::string name = "least-load";
  // least-load: queued tokens that weigh as much as a full KV cache.
  double queued_tokens_scale = 8192;
  // least-load: requests in flight that weigh as much as a full KV cache.
  double in_flight_scale = 64;
  // session, prefix: virtual nodes per worker on the hash ring.
  int virtual_nodes = 64;
  // prefix: above this KV usage the chosen worker is skipped (least-load).
  double overload_kv_usage = 0.9;
};

// INVALID_ARGUMENT for an unknown name or bad options.
absl::StatusOr<std::unique_ptr<RoutingPolicy>> CreateRoutingPolicy(const PolicyOptions& options);

// Least-load (exposed for the other policies' fallback and for tests).
class LeastLoadPolicy final : public RoutingPolicy {
 public:
  explicit LeastLoadPolicy(const PolicyOptions& options) : options_(options) {}
  size_t Pick(const RouteKey& key, const std::vector<WorkerView>& workers) override;
  const char* name() const override { return "least-load"; }
  double Score(const WorkerView& w) const;

 private:
  const PolicyOptions options_;
  std::atomic<uint64_t> tie_breaker_{0};
};

// A consistent-hash ring over worker addresses, cached for the last set of
// addresses seen.
class HashRing {
 public:
  explicit HashRing(int virtual_nodes) : virtual_nodes_(virtual_nodes) {}
  // Index into `workers` of the owner of `key`.
  size_t Owner(uint64_t key, const std::vector<WorkerView>& workers) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const int virtual_nodes_;
  absl::Mutex mu_;
  std::vector<std::string> addresses_ ABSL_GUARDED_BY(mu_);  // the ring's workers, sorted
  std::vector<std::pair<uint64_t, size_t>> ring_ ABSL_GUARDED_BY(mu_);  // point -> addresses_ index
};

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_ROUTING_POLICY_H_
