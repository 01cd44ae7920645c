#include "router/worker_registry.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"

namespace memshare::router {
namespace {

// Splits "host:port" or "[v6]:port".
absl::Status SplitHostPort(const std::string& target, std::string* host, std::string* port) {
  size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == target.size()) {
    return absl::InvalidArgumentError(absl::StrCat("'", target, "' is not host:port"));
  }
  *host = target.substr(0, colon);
  *port = target.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  int port_number = 0;
  if (!absl::SimpleAtoi(*port, &port_number) || port_number < 1 || port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", target, "': bad port"));
  }
  return absl::OkStatus();
}

}  // namespace

Worker::Worker(std::string address, std::shared_ptr<grpc::Channel> channel)
    : address_(std::move(address)),
      channel_(std::move(channel)),
      stub_(v1::WorkerService::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

bool Worker::up() const {
  absl::MutexLock lock(&mu_);
  return up_;
}

bool Worker::eligible() const {
  absl::MutexLock lock(&mu_);
  return up_ && serving_ && !removed_;
}

v1::LoadReport Worker::load() const {
  absl::MutexLock lock(&mu_);
  return load_;
}

WorkerView Worker::View() const {
  WorkerView view;
  view.address = address_;
  view.in_flight = in_flight();
  absl::MutexLock lock(&mu_);
  view.kv_usage = load_.kv_usage();
  view.waiting_tokens = load_.waiting_tokens();
  return view;
}

absl::StatusOr<std::vector<std::string>> WorkerRegistry::ResolveDns(const std::string& target) {
  std::string host, port;
  if (absl::Status s = SplitHostPort(target, &host, &port); !s.ok()) return s;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("resolving ", target, ": ", gai_strerror(rc)));
  }
  std::set<std::string> addresses;
  for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
    char ip[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), nullptr, 0, NI_NUMERICHOST) != 0) {
      continue;
    }
    addresses.insert(a->ai_family == AF_INET6 ? absl::StrCat("[", ip, "]:", port)
                                              : absl::StrCat(ip, ":", port));
  }
  freeaddrinfo(result);
  return std::vector<std::string>(addresses.begin(), addresses.end());
}

absl::StatusOr<std::unique_ptr<WorkerRegistry>> WorkerRegistry::Create(
    const Options& options, ServingMetrics* serving_metrics, RouterMetrics* router_metrics) {
  if (options.static_workers.empty() && options.dns_target.empty()) {
    return absl::InvalidArgumentError("no workers: give a static list or a DNS name");
  }
  for (const std::string& w : options.static_workers) {
    std::string host, port;
    if (absl::Status s = SplitHostPort(w, &host, &port); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("workers: ", s.message()));
    }
  }
  if (!options.dns_target.empty()) {
    std::string host, port;
    if (absl::Status s = SplitHostPort(options.dns_target, &host, &port); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("dns target: ", s.message()));
    }
  }
  if (options.poll_interval <= absl::ZeroDuration() ||
      options.poll_timeout <= absl::ZeroDuration() || options.dns_refresh <= absl::ZeroDuration() ||
      options.unhealthy_after < 1) {
    return absl::InvalidArgumentError("registry: intervals must be > 0 and unhealthy_after >= 1");
  }
  auto registry =
      std::unique_ptr<WorkerRegistry>(new WorkerRegistry(options, serving_metrics, router_metrics));
  {
    absl::MutexLock lock(&registry->mu_);
    std::set<std::string> seen;
    for (const std::string& w : options.static_workers) {
      if (seen.insert(w).second) registry->static_.push_back(registry->MakeWorker(w));
    }
  }
  registry->PollNow();
  registry->thread_ = std::thread([r = registry.get()] { r->Run(); });
  return registry;
}

WorkerRegistry::WorkerRegistry(const Options& options, ServingMetrics* serving_metrics,
                               RouterMetrics* router_metrics)
    : options_(options), serving_metrics_(serving_metrics), router_metrics_(router_metrics) {}

WorkerRegistry::~WorkerRegistry() { StopPolling(); }

void WorkerRegistry::StopPolling() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

WorkerPtr WorkerRegistry::MakeWorker(const std::string& address) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  // A worker that comes back is seen within about a second, not after
  // gRPC's default backoff of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A worker host that vanishes without closing its connections (power,
  // network) fails its streams within keepalive time + timeout.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  // Each worker gets its own connection, even to the same address.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto credentials =
      options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials();
  return std::make_shared<Worker>(address, grpc::CreateCustomChannel(address, credentials, args));
}

std::vector<WorkerPtr> WorkerRegistry::workers() const {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerPtr> all = static_;
  all.insert(all.end(), dns_.begin(), dns_.end());
  return all;
}

std::optional<v1::ModelInfo> WorkerRegistry::model_info() const {
  absl::MutexLock lock(&mu_);
  return model_info_;
}

void WorkerRegistry::NotifyChange() {
  if (options_.on_change) options_.on_change();
}

void WorkerRegistry::ReportFailure(const WorkerPtr& worker) {
  bool changed = false;
  {
    absl::MutexLock lock(&worker->mu_);
    changed = worker->up_;
    worker->up_ = false;
    worker->failures_ = std::max(worker->failures_, options_.unhealthy_after);
  }
  if (changed) {
    std::fprintf(stderr, "memshare_router: worker %s down (call failed)\n",
                 worker->address().c_str());
    if (router_metrics_) router_metrics_->SetWorkerHealthy(worker->address(), false);
    if (serving_metrics_) serving_metrics_->RemoveLoadSource(worker->address());
    NotifyChange();
  }
}

void WorkerRegistry::SetState(const WorkerPtr& worker, bool answered, bool serving,
                              const v1::LoadReport* report) {
  bool was_eligible, now_eligible, was_up, now_up;
  {
    absl::MutexLock lock(&worker->mu_);
    was_eligible = worker->up_ && worker->serving_ && !worker->removed_;
    was_up = worker->up_;
    if (answered) {
      worker->failures_ = 0;
      worker->up_ = true;
      worker->serving_ = serving;
      if (report != nullptr) worker->load_ = *report;
    } else if (++worker->failures_ >= options_.unhealthy_after) {
      worker->up_ = false;
    }
    now_up = worker->up_;
    now_eligible = worker->up_ && worker->serving_ && !worker->removed_;
  }
  if (router_metrics_) router_metrics_->SetWorkerHealthy(worker->address(), now_eligible);
  if (serving_metrics_) {
    if (now_up && report != nullptr) {
      serving_metrics_->UpdateLoad(worker->address(), *report);
    } else if (!now_up) {
      serving_metrics_->RemoveLoadSource(worker->address());
    }
  }
  if (was_up != now_up) {
    std::fprintf(stderr, "memshare_router: worker %s %s\n", worker->address().c_str(),
                 now_up ? "up" : "down");
  }
  if (was_eligible != now_eligible) NotifyChange();
}

void WorkerRegistry::SyncDnsWorkers(const std::vector<std::string>& addresses) {
  std::vector<WorkerPtr> removed;
  bool added = false;
  {
    absl::MutexLock lock(&mu_);
    const std::set<std::string> wanted(addresses.begin(), addresses.end());
    std::set<std::string> present;
    for (auto it = dns_.begin(); it != dns_.end();) {
      if (wanted.contains((*it)->address())) {
        present.insert((*it)->address());
        ++it;
      } else {
        removed.push_back(*it);
        it = dns_.erase(it);
      }
    }
    std::set<std::string> static_addresses;
    for (const WorkerPtr& w : static_) static_addresses.insert(w->address());
    for (const std::string& a : wanted) {
      if (!present.contains(a) && !static_addresses.contains(a)) {
        dns_.push_back(MakeWorker(a));
        added = true;
        std::fprintf(stderr, "memshare_router: worker %s joined (DNS)\n", a.c_str());
      }
    }
  }
  for (const WorkerPtr& w : removed) {
    {
      absl::MutexLock lock(&w->mu_);
      w->removed_ = true;
    }
    {
      absl::MutexLock lock(&mu_);
      retired_.push_back(w);
    }
    std::fprintf(stderr, "memshare_router: worker %s left (DNS)\n", w->address().c_str());
    if (router_metrics_) router_metrics_->RemoveWorker(w->address());
    if (serving_metrics_) serving_metrics_->RemoveLoadSource(w->address());
  }
  if (added || !removed.empty()) NotifyChange();
}

void WorkerRegistry::PollNow() {
  bool resolve = false;
  std::vector<WorkerPtr> unused;  // destroyed here, on this thread
  {
    absl::MutexLock lock(&mu_);
    for (auto it = retired_.begin(); it != retired_.end();) {
      if (it->use_count() == 1) {
        unused.push_back(std::move(*it));
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
    if (!options_.dns_target.empty() && absl::Now() >= next_dns_) {
      resolve = true;
      next_dns_ = absl::Now() + options_.dns_refresh;
    }
  }
  if (resolve) {
    const Resolver& resolver = options_.resolver ? options_.resolver : ResolveDns;
    absl::StatusOr<std::vector<std::string>> addresses = resolver(options_.dns_target);
    if (addresses.ok()) {
      SyncDnsWorkers(*addresses);
    } else {
      // Keep the last known set: a DNS hiccup must not drop healthy workers.
      std::fprintf(stderr, "memshare_router: %s\n", addresses.status().ToString().c_str());
    }
  }

  // Every worker's load and health, concurrently.
  struct Probe {
    WorkerPtr worker;
    grpc::ClientContext load_context, health_context;
    v1::GetLoadRequest load_request;
    v1::LoadReport load;
    grpc::health::v1::HealthCheckRequest health_request;
    grpc::health::v1::HealthCheckResponse health;
    grpc::Status load_status, health_status;
  };
  const std::vector<WorkerPtr> all = workers();
  std::vector<std::unique_ptr<Probe>> probes;
  absl::BlockingCounter pending(static_cast<int>(all.size()) * 2);
  const auto deadline = absl::ToChronoTime(absl::Now() + options_.poll_timeout);
  for (const WorkerPtr& w : all) {
    auto p = std::make_unique<Probe>();
    p->worker = w;
    p->load_context.set_deadline(deadline);
    p->health_context.set_deadline(deadline);
    Probe* raw = p.get();
    w->stub()->async()->GetLoad(&raw->load_context, &raw->load_request, &raw->load,
                                [raw, &pending](grpc::Status s) {
                                  raw->load_status = std::move(s);
                                  pending.DecrementCount();
                                });
    w->health_stub()->async()->Check(&raw->health_context, &raw->health_request, &raw->health,
                                     [raw, &pending](grpc::Status s) {
                                       raw->health_status = std::move(s);
                                       pending.DecrementCount();
                                     });
    probes.push_back(std::move(p));
  }
  pending.Wait();
  for (const auto& p : probes) {
    const bool answered = p->load_status.ok();
    const bool serving = answered && p->health_status.ok() && !p->load.draining() &&
                         p->health.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    SetState(p->worker, answered, serving, answered ? &p->load : nullptr);
    bool need_model = false;
    {
      absl::MutexLock lock(&mu_);
      need_model = answered && !model_info_.has_value();
    }
    if (need_model) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + options_.poll_timeout));
      v1::ModelInfo info;
      if (p->worker->stub()->GetModelInfo(&context, {}, &info).ok()) {
        absl::MutexLock lock(&mu_);
        model_info_ = info;
      }
    }
  }
}

void WorkerRegistry::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), options_.poll_interval)) return;
    }
    PollNow();
  }
}

}  // namespace memshare::router
