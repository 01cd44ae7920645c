#include "router/router_service.h"

#include <chrono>
#include <string>
#include <utility>

#include "common/grpc_status.h"

namespace memshare::router {

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 10)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

v1::ServerInfo BuildServerInfo(const Router& router, const WorkerRegistry& registry) {
  v1::ServerInfo info;
  if (std::optional<v1::ModelInfo> model = registry.model_info(); model.has_value()) {
    *info.mutable_model() = *model;
  }
  v1::LoadReport* sum = info.mutable_load();
  for (const WorkerPtr& w : registry.workers()) {
    v1::WorkerInfo* wi = info.add_workers();
    wi->set_address(w->address());
    wi->set_healthy(w->eligible());
    wi->set_router_in_flight(w->in_flight());
    const v1::LoadReport load = w->load();
    *wi->mutable_load() = load;
    if (!w->up()) continue;
    sum->set_running_requests(sum->running_requests() + load.running_requests());
    sum->set_waiting_requests(sum->waiting_requests() + load.waiting_requests());
    sum->set_waiting_tokens(sum->waiting_tokens() + load.waiting_tokens());
    sum->set_kv_blocks_total(sum->kv_blocks_total() + load.kv_blocks_total());
    sum->set_kv_blocks_used(sum->kv_blocks_used() + load.kv_blocks_used());
    sum->set_kv_blocks_logical(sum->kv_blocks_logical() + load.kv_blocks_logical());
    sum->set_kv_blocks_shared(sum->kv_blocks_shared() + load.kv_blocks_shared());
    sum->set_bytes_saved(sum->bytes_saved() + load.bytes_saved());
    sum->set_active_streams(sum->active_streams() + load.active_streams());
    sum->set_dedup_candidates(sum->dedup_candidates() + load.dedup_candidates());
    sum->set_dedup_verified(sum->dedup_verified() + load.dedup_verified());
    sum->set_dedup_rejected(sum->dedup_rejected() + load.dedup_rejected());
    sum->set_dedup_remapped(sum->dedup_remapped() + load.dedup_remapped());
    sum->set_prefix_cache_queries(sum->prefix_cache_queries() + load.prefix_cache_queries());
    sum->set_prefix_cache_hits(sum->prefix_cache_hits() + load.prefix_cache_hits());
    sum->set_preemptions(sum->preemptions() + load.preemptions());
  }
  sum->set_kv_usage(sum->kv_blocks_total() > 0 ? static_cast<double>(sum->kv_blocks_used()) /
                                                     static_cast<double>(sum->kv_blocks_total())
                                               : 0.0);
  info.set_router_queued(router.queued());
  info.set_router_in_flight(router.in_flight());
  info.set_draining(router.draining());
  return info;
}

// One Generate call: the client's end of a Router::Call.
class RouterService::GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                                             public ResponseSink {
 public:
  explicit GenerateReactor(RouterService* service) : service_(service) {}

  void Start(grpc::CallbackServerContext* context, const v1::GenerateRequest& request) {
    if (absl::Status auth = service_->Authenticate(*context); !auth.ok()) {
      if (service_->metrics_) service_->metrics_->RecordRejected("unauthenticated");
      if (service_->serving_metrics_) service_->serving_metrics_->RecordRequestEnd(auth.code());
      Finish(ToGrpcStatus(auth));
      return;
    }
    call_ = service_->router_->Start(request, DeadlineOf(*context), this);
  }

  void SinkWrite(const v1::GenerateResponse& message) override { StartWrite(&message); }
  void SinkFinish(const grpc::Status& status) override { Finish(status); }
  void OnWriteDone(bool ok) override { call_->OnSinkWriteDone(ok); }
  void OnCancel() override {
    if (call_) call_->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  RouterService* const service_;
  Router::CallPtr call_;  // set before the reactor is bound (no reaction before)
};

RouterService::RouterService(Router* router, WorkerRegistry* registry, const ApiKeys* keys,
                             RouterMetrics* metrics, ServingMetrics* serving_metrics)
    : router_(router),
      registry_(registry),
      keys_(keys),
      metrics_(metrics),
      serving_metrics_(serving_metrics) {}

absl::Status RouterService::Authenticate(const grpc::CallbackServerContext& context) const {
  if (keys_ == nullptr || !keys_->enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return keys_->Check("");
  return keys_->Check(std::string_view(it->second.data(), it->second.size()));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* RouterService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  auto* reactor = new GenerateReactor(this);
  reactor->Start(context, *request);
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::Abort(grpc::CallbackServerContext* context,
                                               const v1::AbortRequest* request,
                                               v1::AbortResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status auth = Authenticate(*context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  if (request->request_id().empty()) {
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError("request_id: must not be empty")));
    return reactor;
  }
  router_->Abort(request->request_id(),
                 [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const v1::GetModelInfoRequest* /*request*/,
                                                      v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status auth = Authenticate(*context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  std::optional<v1::ModelInfo> info = registry_->model_info();
  if (!info.has_value()) {
    reactor->Finish(ToGrpcStatus(absl::UnavailableError("no worker has answered yet")));
    return reactor;
  }
  *response = *info;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::GetServerInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetServerInfoRequest* /*request*/,
                                                       v1::ServerInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status auth = Authenticate(*context); !auth.ok()) {
    reactor->Finish(ToGrpcStatus(auth));
    return reactor;
  }
  *response = BuildServerInfo(*router_, *registry_);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace memshare::router
