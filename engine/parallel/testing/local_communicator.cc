#include "engine/parallel/testing/local_communicator.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memshare::engine {

class LocalCommunicator : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<LocalGroup> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world_size(); }

  absl::Status Broadcast(std::string* bytes) override {
    absl::StatusOr<std::vector<std::string>> all = group_->Collective(
        rank_, next_++, LocalGroup::Kind::kBroadcast, rank_ == 0 ? *bytes : std::string());
    if (!all.ok()) return all.status();
    *bytes = (*all)[0];
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(absl::Span<double> values) override {
    std::string in(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(double));
    absl::StatusOr<std::vector<std::string>> all =
        group_->Collective(rank_, next_++, LocalGroup::Kind::kAllReduceSum, std::move(in));
    if (!all.ok()) return all.status();
    for (const std::string& s : *all) {
      if (s.size() != values.size() * sizeof(double)) {
        const absl::Status st = absl::InternalError(absl::StrCat(
            "all-reduce of ", values.size(), " values met one of ", s.size() / sizeof(double)));
        group_->Fail(rank_, st);
        return st;
      }
    }
    for (size_t i = 0; i < values.size(); ++i) {
      double sum = 0;
      for (const std::string& s : *all) {
        double v;
        std::memcpy(&v, s.data() + i * sizeof(double), sizeof(double));
        sum += v;
      }
      values[i] = sum;
    }
    return absl::OkStatus();
  }

  absl::Status AllGather(uint64_t value, std::vector<uint64_t>* out) override {
    std::string in(reinterpret_cast<const char*>(&value), sizeof(value));
    absl::StatusOr<std::vector<std::string>> all =
        group_->Collective(rank_, next_++, LocalGroup::Kind::kAllGather, std::move(in));
    if (!all.ok()) return all.status();
    out->clear();
    for (const std::string& s : *all) {
      uint64_t v = 0;
      std::memcpy(&v, s.data(), std::min(s.size(), sizeof(v)));
      out->push_back(v);
    }
    return absl::OkStatus();
  }

  absl::Status health() const override { return group_->Health(rank_); }
  void Abort(const absl::Status& why) override { group_->Fail(rank_, why); }

 private:
  std::shared_ptr<LocalGroup> group_;
  const int rank_;
  uint64_t next_ = 0;
};

absl::StatusOr<std::shared_ptr<LocalGroup>> LocalGroup::Create(const Options& options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size = ", options.world_size, ": must be >= 1"));
  }
  return std::shared_ptr<LocalGroup>(new LocalGroup(options));
}

LocalGroup::LocalGroup(const Options& options)
    : options_(options),
      killed_(options.world_size, false),
      health_(options.world_size, absl::OkStatus()) {}

std::unique_ptr<Communicator> LocalGroup::Join(int rank) {
  return std::make_unique<LocalCommunicator>(shared_from_this(), rank);
}

void LocalGroup::Kill(int rank) {
  absl::MutexLock lock(&mu_);
  killed_[rank] = true;
  if (health_[rank].ok()) health_[rank] = absl::UnavailableError("rank killed");
}

absl::Status LocalGroup::Health(int rank) const {
  absl::MutexLock lock(&mu_);
  return health_[rank];
}

void LocalGroup::Fail(int rank, const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  if (health_[rank].ok()) health_[rank] = why.ok() ? absl::AbortedError("aborted") : why;
}

absl::StatusOr<std::vector<std::string>> LocalGroup::Collective(int rank, uint64_t index, Kind kind,
                                                                std::string input) {
  const absl::Time deadline = absl::Now() + options_.timeout;
  absl::MutexLock lock(&mu_);
  if (!health_[rank].ok()) return health_[rank];
  const int n = options_.world_size;
  Op& op = ops_[index];
  if (op.inputs.empty()) {
    op.kind = kind;
    op.inputs.resize(n);
  } else if (op.kind != kind) {
    health_[rank] = absl::InternalError(absl::StrCat(
        "rank ", rank, " called another collective than its peers (call ", index, ")"));
    return health_[rank];
  }
  op.inputs[rank] = std::move(input);
  ++op.arrived;
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return op.arrived == n || !health_[rank].ok();
  };
  mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
  if (!health_[rank].ok()) return health_[rank];
  if (op.arrived != n) {
    health_[rank] = absl::DeadlineExceededError(absl::StrCat(
        "rank ", rank, ": collective ", index, " timed out after ",
        absl::FormatDuration(options_.timeout), " (", op.arrived, " of ", n, " ranks arrived)"));
    return health_[rank];
  }
  std::vector<std::string> result = op.inputs;
  if (++op.left == n) ops_.erase(index);
  return result;
}

}  // namespace memshare::engine
