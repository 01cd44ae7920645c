// The router's own metrics (DESIGN.md section 6: "the router adds
// per-worker routed requests, retries, health"), next to the serving metrics
// (common/serving_metrics.h) it exports like a worker does:
//
//   memshare_router_routed_requests_total{worker}    counter  attempts sent to a worker
//   memshare_router_retries_total{reason}            counter  re-routed before the first token
//                                                             ("unavailable", "resource_exhausted",
//                                                             "draining")
//   memshare_router_worker_healthy{worker}           gauge    1 healthy and serving, 0 not
//   memshare_router_rejected_requests_total{reason}  counter  refused at the router ("queue_full",
//                                                             "unauthenticated", "draining",
//                                                             "no_worker")
//   memshare_router_queue_depth                      gauge    requests waiting for a worker
//   memshare_router_in_flight_requests               gauge    requests on workers now
//
// Thread-safe. The registry is injected and must outlive this object.
#ifndef MEMSHARE_ROUTER_ROUTER_METRICS_H_
#define MEMSHARE_ROUTER_ROUTER_METRICS_H_

#include <string>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace memshare::router {

class RouterMetrics {
 public:
  static const std::vector<std::string>& MetricNames();

  explicit RouterMetrics(prometheus::Registry& registry);
  RouterMetrics(const RouterMetrics&) = delete;
  RouterMetrics& operator=(const RouterMetrics&) = delete;

  void RecordRouted(const std::string& worker);
  void RecordRetry(const std::string& reason);
  // Also creates the worker's routed counter at zero (dashboards rate() it).
  void SetWorkerHealthy(const std::string& worker, bool healthy);
  // The worker left the registry: its per-worker series go.
  void RemoveWorker(const std::string& worker);
  void RecordRejected(const std::string& reason);
  void SetQueueDepth(int depth);
  void SetInFlight(int in_flight);

 private:
  prometheus::Family<prometheus::Counter>& routed_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Gauge>& healthy_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& in_flight_;
};

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_ROUTER_METRICS_H_
