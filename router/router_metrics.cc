#include "router/router_metrics.h"

namespace memshare::router {

const std::vector<std::string>& RouterMetrics::MetricNames() {
  static const auto* names = new std::vector<std::string>{
      "memshare_router_routed_requests_total", "memshare_router_retries_total",
      "memshare_router_worker_healthy",        "memshare_router_rejected_requests_total",
      "memshare_router_queue_depth",           "memshare_router_in_flight_requests",
  };
  return *names;
}

RouterMetrics::RouterMetrics(prometheus::Registry& r)
    : routed_(prometheus::BuildCounter()
                  .Name("memshare_router_routed_requests_total")
                  .Help("Request attempts the router sent to each worker")
                  .Register(r)),
      retries_(prometheus::BuildCounter()
                   .Name("memshare_router_retries_total")
                   .Help("Requests re-routed to another worker before their first token")
                   .Register(r)),
      healthy_(prometheus::BuildGauge()
                   .Name("memshare_router_worker_healthy")
                   .Help("1 when the worker answers health and load polls and serves")
                   .Register(r)),
      rejected_(prometheus::BuildCounter()
                    .Name("memshare_router_rejected_requests_total")
                    .Help("Requests refused at the router, by reason")
                    .Register(r)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("memshare_router_queue_depth")
                       .Help("Requests waiting in the router for a worker")
                       .Register(r)
                       .Add({})),
      in_flight_(prometheus::BuildGauge()
                     .Name("memshare_router_in_flight_requests")
                     .Help("Requests the router has on workers")
                     .Register(r)
                     .Add({})) {
  for (const char* reason : {"unavailable", "resource_exhausted", "draining"}) {
    retries_.Add({{"reason", reason}});
  }
  for (const char* reason : {"queue_full", "unauthenticated", "draining", "no_worker"}) {
    rejected_.Add({{"reason", reason}});
  }
}

void RouterMetrics::RecordRouted(const std::string& worker) {
  routed_.Add({{"worker", worker}}).Increment();
}

void RouterMetrics::RecordRetry(const std::string& reason) {
  retries_.Add({{"reason", reason}}).Increment();
}

void RouterMetrics::SetWorkerHealthy(const std::string& worker, bool healthy) {
  healthy_.Add({{"worker", worker}}).Set(healthy ? 1 : 0);
  // The worker's routed counter exists at zero from the first poll on, so
  // rate() counts its first requests (a series born at its first increment
  // loses that increment).
  routed_.Add({{"worker", worker}});
}

void RouterMetrics::RemoveWorker(const std::string& worker) {
  healthy_.Remove(&healthy_.Add({{"worker", worker}}));
  routed_.Remove(&routed_.Add({{"worker", worker}}));
}

void RouterMetrics::RecordRejected(const std::string& reason) {
  rejected_.Add({{"reason", reason}}).Increment();
}

void RouterMetrics::SetQueueDepth(int depth) { queue_depth_.Set(depth); }

void RouterMetrics::SetInFlight(int in_flight) { in_flight_.Set(in_flight); }

}  // namespace memshare::router
