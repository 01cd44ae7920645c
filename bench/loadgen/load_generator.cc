#include "bench/loadgen/load_generator.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <random>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "proto/memshare/v1/inference.grpc.pb.h"
#include "proto/memshare/v1/worker.grpc.pb.h"

namespace memshare::bench {
namespace {

using Reactor = grpc::ClientReadReactor<v1::GenerateResponse>;
using CallStarter = std::function<void(grpc::ClientContext*, const v1::GenerateRequest*, Reactor*)>;

class Run;

// One request; deletes itself when done.
class Request final : public Reactor {
 public:
  Request(Run* run, v1::GenerateRequest request, const LoadOptions& options);
  void Begin(const CallStarter& start);
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  Run* const run_;
  grpc::ClientContext context_;
  const v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  absl::Time start_;
  absl::Time last_token_;
  bool first_ = true;
  double ttft_ms_ = -1;
  std::vector<double> gaps_ms_;
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
  friend class Run;
};

class Run {
 public:
  Run(const LoadOptions& options, CallStarter start) : options_(options), start_(std::move(start)) {
    std::random_device rd;
    run_id_ = absl::StrCat("lg", rd() % 100000);
  }

  // Sends request `index`.
  void Issue(int index) {
    v1::GenerateRequest r;
    r.set_request_id(absl::StrCat(run_id_, "-", index));
    if (!options_.prompts.empty()) {
      r.set_text(options_.prompts[index % options_.prompts.size()]);
    } else {
      std::string text = absl::StrCat("Request ", index, ": ");
      static constexpr char kFiller[] =
          "Let me think step by step about the problem and verify each step. ";
      while (static_cast<int>(text.size()) < options_.prompt_bytes) text += kFiller;
      text.resize(std::max<size_t>(options_.prompt_bytes, 1));
      r.set_text(text);
    }
    r.mutable_sampling()->set_max_tokens(options_.max_tokens);
    r.mutable_sampling()->set_temperature(options_.temperature);
    r.mutable_stop()->set_ignore_eos(options_.ignore_eos);
    auto* request = new Request(this, std::move(r), options_);
    request->Begin(start_);
  }

  void Done(const Request& request, const grpc::Status& status) {
    bool issue_next = false;
    int next = 0;
    {
      absl::MutexLock lock(&mu_);
      ++done_;
      if (status.ok()) {
        ++result_.ok;
        result_.prompt_tokens += request.prompt_tokens_;
        result_.completion_tokens += request.completion_tokens_;
        if (request.ttft_ms_ >= 0) ttft_.push_back(request.ttft_ms_);
        inter_token_.insert(inter_token_.end(), request.gaps_ms_.begin(), request.gaps_ms_.end());
        e2e_.push_back(absl::ToDoubleMilliseconds(absl::Now() - request.start_));
      } else {
        ++result_.failed;
        const std::string kind = absl::StrCat(status.error_code(), " ", status.error_message());
        if (result_.failures.size() < 10 || result_.failures.contains(kind)) {
          ++result_.failures[kind];
        }
      }
      if (options_.mode == "closed" && issued_ < options_.requests) {
        issue_next = true;
        next = issued_++;
      }
    }
    if (issue_next) Issue(next);
  }

  // A request object is gone (after Done). Its ClientContext held a
  // reference to the channel: RunLoad releases the channel only after every
  // request is gone, so the channel is never destroyed on a gRPC thread.
  void Released() { released_.fetch_add(1, std::memory_order_acq_rel); }
  void WaitReleased() {
    while (released_.load(std::memory_order_acquire) < options_.requests) {
      absl::SleepFor(absl::Milliseconds(1));
    }
  }

  LoadResult Go() {
    const absl::Time begin = absl::Now();
    if (options_.mode == "closed") {
      std::vector<int> first;
      {
        absl::MutexLock lock(&mu_);
        while (issued_ < std::min(options_.concurrency, options_.requests)) {
          first.push_back(issued_++);
        }
      }
      for (int i : first) Issue(i);
    } else {
      std::mt19937_64 rng(options_.seed);
      std::exponential_distribution<double> gap(options_.rate);
      absl::Time next = absl::Now();
      for (int i = 0; i < options_.requests; ++i) {
        next += absl::Seconds(gap(rng));
        const absl::Duration wait = next - absl::Now();
        if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        {
          absl::MutexLock lock(&mu_);
          ++issued_;
        }
        Issue(i);
      }
    }
    absl::MutexLock lock(&mu_);
    auto all_done = [this]()
                        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_ == options_.requests; };
    mu_.Await(absl::Condition(&all_done));
    result_.seconds = absl::ToDoubleSeconds(absl::Now() - begin);
    result_.requests_per_second = result_.ok / std::max(result_.seconds, 1e-9);
    result_.output_tokens_per_second =
        static_cast<double>(result_.completion_tokens) / std::max(result_.seconds, 1e-9);
    result_.ttft = Summarize(ttft_);
    result_.inter_token = Summarize(inter_token_);
    result_.e2e = Summarize(e2e_);
    return result_;
  }

 private:
  const LoadOptions options_;
  const CallStarter start_;
  std::string run_id_;
  std::atomic<int> released_{0};
  absl::Mutex mu_;
  int issued_ ABSL_GUARDED_BY(mu_) = 0;
  int done_ ABSL_GUARDED_BY(mu_) = 0;
  LoadResult result_ ABSL_GUARDED_BY(mu_);
  std::vector<double> ttft_ ABSL_GUARDED_BY(mu_);
  std::vector<double> inter_token_ ABSL_GUARDED_BY(mu_);
  std::vector<double> e2e_ ABSL_GUARDED_BY(mu_);
};

Request::Request(Run* run, v1::GenerateRequest request, const LoadOptions& options)
    : run_(run), request_(std::move(request)) {
  context_.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  if (!options.api_key.empty()) {
    context_.AddMetadata("authorization", absl::StrCat("Bearer ", options.api_key));
  }
}

void Request::Begin(const CallStarter& start) {
  start_ = absl::Now();
  start(&context_, &request_, this);
  StartRead(&response_);
  StartCall();
}

void Request::OnReadDone(bool ok) {
  if (!ok) return;
  const absl::Time now = absl::Now();
  if (response_.has_chunk() && response_.chunk().token_ids_size() > 0) {
    const int n = response_.chunk().token_ids_size();
    if (first_) {
      first_ = false;
      ttft_ms_ = absl::ToDoubleMilliseconds(now - start_);
      // Tokens that came with the first one arrived with no gap.
      for (int i = 1; i < n; ++i) gaps_ms_.push_back(0);
    } else {
      const double gap = absl::ToDoubleMilliseconds(now - last_token_) / n;
      for (int i = 0; i < n; ++i) gaps_ms_.push_back(gap);
    }
    last_token_ = now;
  } else if (response_.has_result()) {
    prompt_tokens_ = response_.result().usage().prompt_tokens();
    completion_tokens_ = response_.result().usage().completion_tokens();
  }
  StartRead(&response_);
}

void Request::OnDone(const grpc::Status& status) {
  Run* run = run_;
  run->Done(*this, status);
  delete this;  // its ClientContext drops a reference to the channel
  run->Released();
}

}  // namespace

Percentiles Summarize(std::vector<double> samples) {
  Percentiles p;
  p.count = static_cast<int64_t>(samples.size());
  if (samples.empty()) return p;
  std::sort(samples.begin(), samples.end());
  double sum = 0;
  for (double s : samples) sum += s;
  p.mean = sum / samples.size();
  auto rank = [&](double q) {
    const size_t i = static_cast<size_t>(std::ceil(q * samples.size()));
    return samples[std::min(samples.size() - 1, i == 0 ? 0 : i - 1)];
  };
  p.p50 = rank(0.50);
  p.p90 = rank(0.90);
  p.p99 = rank(0.99);
  p.max = samples.back();
  return p;
}

absl::StatusOr<LoadResult> RunLoad(const LoadOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("target: required");
  if (options.requests < 1) return absl::InvalidArgumentError("requests: must be >= 1");
  if (options.mode != "closed" && options.mode != "poisson") {
    return absl::InvalidArgumentError("mode: closed or poisson");
  }
  if (options.mode == "closed" && options.concurrency < 1) {
    return absl::InvalidArgumentError("concurrency: must be >= 1");
  }
  if (options.mode == "poisson" && !(options.rate > 0)) {
    return absl::InvalidArgumentError("rate: must be > 0");
  }
  if (options.max_tokens < 1) return absl::InvalidArgumentError("max_tokens: must be >= 1");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel =
      grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10)))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", options.target));
  }
  CallStarter start;
  std::shared_ptr<void> keep;
  if (options.api == "router") {
    auto stub = std::shared_ptr<v1::InferenceService::Stub>(v1::InferenceService::NewStub(channel));
    keep = stub;
    start = [stub](grpc::ClientContext* c, const v1::GenerateRequest* r, Reactor* reactor) {
      stub->async()->Generate(c, r, reactor);
    };
  } else if (options.api == "worker") {
    auto stub = std::shared_ptr<v1::WorkerService::Stub>(v1::WorkerService::NewStub(channel));
    keep = stub;
    start = [stub](grpc::ClientContext* c, const v1::GenerateRequest* r, Reactor* reactor) {
      stub->async()->Generate(c, r, reactor);
    };
  } else {
    return absl::InvalidArgumentError("api: router or worker");
  }
  Run run(options, start);
  LoadResult result = run.Go();
  run.WaitReleased();
  return result;
}

std::string FormatReport(const LoadOptions& o, const LoadResult& r) {
  std::string out =
      absl::StrFormat("target %s (%s api), %s loop, %d requests%s, max_tokens %d\n", o.target,
                      o.api, o.mode, o.requests,
                      o.mode == "closed" ? absl::StrFormat(", concurrency %d", o.concurrency)
                                         : absl::StrFormat(", %.1f req/s", o.rate),
                      o.max_tokens);
  absl::StrAppendFormat(&out, "ok %d, failed %d, %.2f s, %.1f req/s, %.0f output tokens/s\n", r.ok,
                        r.failed, r.seconds, r.requests_per_second, r.output_tokens_per_second);
  for (const auto& [kind, n] : r.failures)
    absl::StrAppendFormat(&out, "  failure x%d: %s\n", n, kind);
  auto line = [&](const char* name, const Percentiles& p) {
    absl::StrAppendFormat(&out, "%-18s mean %9.3f  p50 %9.3f  p90 %9.3f  p99 %9.3f  max %9.3f ms\n",
                          name, p.mean, p.p50, p.p90, p.p99, p.max);
  };
  line("TTFT", r.ttft);
  line("inter-token", r.inter_token);
  line("end-to-end", r.e2e);
  return out;
}

std::string ToJson(const LoadOptions& o, const LoadResult& r) {
  auto p = [](const Percentiles& x) {
    return absl::StrFormat(
        "{\"mean\":%.4f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"max\":%.4f,\"count\":%d}", x.mean,
        x.p50, x.p90, x.p99, x.max, x.count);
  };
  return absl::StrFormat(
      "{\"target\":\"%s\",\"api\":\"%s\",\"mode\":\"%s\",\"requests\":%d,\"concurrency\":%d,"
      "\"rate\":%.3f,\"max_tokens\":%d,\"ok\":%d,\"failed\":%d,\"seconds\":%.4f,"
      "\"requests_per_second\":%.3f,\"output_tokens_per_second\":%.3f,\"ttft_ms\":%s,"
      "\"inter_token_ms\":%s,\"e2e_ms\":%s}",
      o.target, o.api, o.mode, o.requests, o.concurrency, o.rate, o.max_tokens, r.ok, r.failed,
      r.seconds, r.requests_per_second, r.output_tokens_per_second, p(r.ttft), p(r.inter_token),
      p(r.e2e));
}

}  // namespace memshare::bench
