#include "router/routing_policy.h"

#include <xxhash.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace memshare::router {
namespace {

uint64_t Hash(const void* data, size_t size, uint64_t seed = 0) {
  return XXH3_64bits_withSeed(data, size, seed);
}
uint64_t Hash(const std::string& s, uint64_t seed = 0) { return Hash(s.data(), s.size(), seed); }

class SessionPolicy final : public RoutingPolicy {
 public:
  explicit SessionPolicy(const PolicyOptions& options)
      : fallback_(options), ring_(options.virtual_nodes) {}
  size_t Pick(const RouteKey& key, const std::vector<WorkerView>& workers) override {
    if (key.session_id.empty()) return fallback_.Pick(key, workers);
    return ring_.Owner(Hash(key.session_id), workers);
  }
  const char* name() const override { return "session"; }

 private:
  LeastLoadPolicy fallback_;
  HashRing ring_;
};

class PrefixPolicy final : public RoutingPolicy {
 public:
  explicit PrefixPolicy(const PolicyOptions& options)
      : options_(options), fallback_(options), ring_(options.virtual_nodes) {}
  size_t Pick(const RouteKey& key, const std::vector<WorkerView>& workers) override {
    if (!key.prefix_hash.has_value()) return fallback_.Pick(key, workers);
    const size_t owner = ring_.Owner(*key.prefix_hash, workers);
    if (workers[owner].kv_usage > options_.overload_kv_usage) {
      return fallback_.Pick(key, workers);
    }
    return owner;
  }
  const char* name() const override { return "prefix"; }

 private:
  const PolicyOptions options_;
  LeastLoadPolicy fallback_;
  HashRing ring_;
};

}  // namespace

RouteKey MakeRouteKey(const v1::GenerateRequest& request, int block_size, int prefix_blocks) {
  RouteKey key;
  key.session_id = request.session_id();
  if (block_size <= 0 || prefix_blocks <= 0) return key;
  const uint64_t salt = Hash(request.cache_salt());
  const size_t tokens = static_cast<size_t>(block_size) * static_cast<size_t>(prefix_blocks);
  switch (request.input_case()) {
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      const size_t full = (static_cast<size_t>(ids.size()) / block_size) * block_size;
      if (full == 0) return key;
      key.prefix_hash = Hash(ids.data(), std::min(full, tokens) * sizeof(int32_t), salt);
      return key;
    }
    case v1::GenerateRequest::kText: {
      const std::string& text = request.text();
      const size_t block_bytes = static_cast<size_t>(block_size) * 4;
      if (text.size() < block_bytes) return key;
      key.prefix_hash = Hash(text.data(), std::min(text.size(), tokens * 4), salt);
      return key;
    }
    case v1::GenerateRequest::kChat: {
      std::string rendered;
      for (const v1::ChatMessage& m : request.chat().messages()) {
        absl::StrAppend(&rendered, m.role(), "\x1f", m.content(), "\x1e");
        if (rendered.size() >= tokens * 4) break;
      }
      if (rendered.size() < static_cast<size_t>(block_size) * 4) return key;
      key.prefix_hash = Hash(rendered.data(), std::min(rendered.size(), tokens * 4), salt);
      return key;
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      return key;
  }
  return key;
}

double LeastLoadPolicy::Score(const WorkerView& w) const {
  return w.kv_usage + static_cast<double>(w.waiting_tokens) / options_.queued_tokens_scale +
         static_cast<double>(w.in_flight) / options_.in_flight_scale;
}

size_t LeastLoadPolicy::Pick(const RouteKey& /*key*/, const std::vector<WorkerView>& workers) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> tied;
  for (size_t i = 0; i < workers.size(); ++i) {
    const double score = Score(workers[i]);
    if (score < best - 1e-12) {
      best = score;
      tied.assign(1, i);
    } else if (score <= best + 1e-12) {
      tied.push_back(i);
    }
  }
  if (tied.empty()) return 0;
  return tied[tie_breaker_.fetch_add(1, std::memory_order_relaxed) % tied.size()];
}

size_t HashRing::Owner(uint64_t key, const std::vector<WorkerView>& workers) {
  std::vector<std::string> addresses;
  addresses.reserve(workers.size());
  for (const WorkerView& w : workers) addresses.push_back(w.address);
  std::sort(addresses.begin(), addresses.end());
  std::string owner;
  {
    absl::MutexLock lock(&mu_);
    if (addresses != addresses_) {
      addresses_ = addresses;
      ring_.clear();
      for (size_t a = 0; a < addresses_.size(); ++a) {
        for (int v = 0; v < virtual_nodes_; ++v) {
          ring_.emplace_back(Hash(absl::StrCat(addresses_[a], "#", v)), a);
        }
      }
      std::sort(ring_.begin(), ring_.end());
    }
    auto it = std::lower_bound(ring_.begin(), ring_.end(), std::make_pair(key, size_t{0}));
    if (it == ring_.end()) it = ring_.begin();
    owner = addresses_[it->second];
  }
  for (size_t i = 0; i < workers.size(); ++i) {
    if (workers[i].address == owner) return i;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<RoutingPolicy>> CreateRoutingPolicy(const PolicyOptions& options) {
  if (!(options.queued_tokens_scale > 0) || !(options.in_flight_scale > 0) ||
      options.virtual_nodes < 1) {
    return absl::InvalidArgumentError("routing policy: scales must be > 0, virtual_nodes >= 1");
  }
  if (options.name == "least-load") return std::make_unique<LeastLoadPolicy>(options);
  if (options.name == "session") return std::make_unique<SessionPolicy>(options);
  if (options.name == "prefix") return std::make_unique<PrefixPolicy>(options);
  return absl::InvalidArgumentError(
      absl::StrCat("routing policy: unknown '", options.name, "' (least-load, session or prefix)"));
}

}  // namespace memshare::router
