// InferenceService (proto/memshare/v1/inference.proto), the router's public
// gRPC API, over Router: thin handlers that check the API key, hand the
// request to the router and stream its messages with the callback API.
//
// Thread-safe. `router`, `registry` and `keys` must outlive the service and
// every call it serves (shut the grpc::Server down first).
#ifndef MEMSHARE_ROUTER_ROUTER_SERVICE_H_
#define MEMSHARE_ROUTER_ROUTER_SERVICE_H_

#include "common/serving_metrics.h"
#include "proto/memshare/v1/inference.grpc.pb.h"
#include "router/api_keys.h"
#include "router/router.h"
#include "router/router_metrics.h"
#include "router/worker_registry.h"

namespace memshare::router {

class RouterService final : public v1::InferenceService::CallbackService {
 public:
  // The metrics may be null.
  RouterService(Router* router, WorkerRegistry* registry, const ApiKeys* keys,
                RouterMetrics* metrics, ServingMetrics* serving_metrics);
  RouterService(const RouterService&) = delete;
  RouterService& operator=(const RouterService&) = delete;

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* response) override;

 private:
  class GenerateReactor;
  absl::Status Authenticate(const grpc::CallbackServerContext& context) const;

  Router* const router_;
  WorkerRegistry* const registry_;
  const ApiKeys* const keys_;
  RouterMetrics* const metrics_;
  ServingMetrics* const serving_metrics_;
};

// The server's view: each worker, and the sum over the ones that are up.
v1::ServerInfo BuildServerInfo(const Router& router, const WorkerRegistry& registry);

// A gRPC call's deadline as absl::Time (InfiniteFuture when none).
absl::Time DeadlineOf(const grpc::CallbackServerContext& context);

}  // namespace memshare::router

#endif  // MEMSHARE_ROUTER_ROUTER_SERVICE_H_
