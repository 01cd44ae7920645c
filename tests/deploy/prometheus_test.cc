// The shipped observability files against the binaries as they are: a real
// memshare_router and two workers on loopback, scraped every second by a real
// Prometheus server (Debian's `prometheus`, started here with a generated
// configuration that loads deploy/prometheus/alerts.yml). After some load,
// every PromQL expression of every Grafana dashboard panel and every rule is
// evaluated through Prometheus' HTTP API:
//   - every expression parses and evaluates without error;
//   - every dashboard expression returns data, and those built from traffic
//     metrics (requests, tokens, latencies, routed requests) return a
//     positive value;
//   - every rule is healthy in Prometheus' own rule evaluation, and every
//     recording rule returns data;
//   - a killed worker turns the worker-down and group-unhealthy alert
//     expressions on, and MemShareWorkerDown goes pending.
//
// Environment (set by the BUILD target):
//   MEMSHARE_DEPLOY_WORKER       worker binary, relative to the runfiles root
//   MEMSHARE_DEPLOY_WORKER_ARGS  its extra arguments, space-separated
//   MEMSHARE_PROMETHEUS          the prometheus binary (default: from PATH)
#include <arpa/inet.h>
#include <dirent.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/testing/http_client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/memshare/v1/inference.grpc.pb.h"
#include "tests/e2e/child_process.h"

namespace memshare::e2e {
namespace {

using json = nlohmann::json;

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace, "/", path);
}

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

std::string TempDir() { return Env("TEST_TMPDIR", "/tmp"); }

// `name` from $PATH, or "" if it is nowhere.
std::string FindInPath(const std::string& name) {
  for (absl::string_view dir :
       absl::StrSplit(Env("PATH", "/usr/local/bin:/usr/bin:/bin"), ':', absl::SkipEmpty())) {
    const std::string path = absl::StrCat(dir, "/", name);
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// A port that was free a moment ago (Prometheus cannot report the port it
// got for :0, so the test picks one; a lost race is retried by the caller).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string UrlEncode(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

template <typename F>
bool Eventually(F predicate, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(200));
  }
  return predicate();
}

// Metrics whose value grows with served traffic: a dashboard expression built
// from one of them must show a positive value after the load.
const std::regex& TrafficMetric() {
  static const auto* re = new std::regex(
      "memshare_(generation_tokens_total|prompt_tokens_total|requests_total|"
      "time_to_first_token_seconds|inter_token_latency_seconds|e2e_request_latency_seconds|"
      "router_routed_requests_total)");
  return *re;
}

// The memshare_* metric names an expression reads (not the names of
// recording rules, which start with "namespace:").
std::set<std::string> MetricNames(const std::string& expr) {
  static const auto* re = new std::regex("(^|[^:a-zA-Z0-9_])(memshare_[a-zA-Z0-9_]+)");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), *re); it != std::sregex_iterator();
       ++it) {
    names.insert((*it)[2]);
  }
  return names;
}

struct Query {
  std::string error;  // empty when Prometheus evaluated it
  json result = json::array();

  bool HasPositiveValue() const {
    for (const json& sample : result) {
      const double v = std::strtod(sample["value"][1].get<std::string>().c_str(), nullptr);
      if (std::isfinite(v) && v > 0) return true;
    }
    return false;
  }
};

class Prometheus {
 public:
  // Starts Prometheus on a free loopback port with `config`; nullptr (and a
  // test failure) if it does not become ready.
  static std::unique_ptr<Prometheus> Start(const std::string& config) {
    const std::string binary = Env("MEMSHARE_PROMETHEUS", FindInPath("prometheus"));
    if (binary.empty()) {
      ADD_FAILURE() << "no prometheus binary on PATH: install Debian's `prometheus` package "
                       "(scripts/install-deps.sh) or set MEMSHARE_PROMETHEUS";
      return nullptr;
    }
    const std::string config_path = absl::StrCat(TempDir(), "/prometheus.yml");
    std::ofstream(config_path) << config;
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto p = std::make_unique<Prometheus>();
      p->port_ = FreePort();
      ChildProcess::Options o;
      // Prometheus logs to stderr only; the shell prints the line that
      // ChildProcess waits for, then becomes Prometheus (same pid).
      o.binary = "/bin/sh";
      o.args = {"-c",
                "echo prometheus: starting; exec \"$0\" \"$@\"",
                binary,
                absl::StrCat("--config.file=", config_path),
                absl::StrCat("--storage.tsdb.path=", TempDir(), "/prometheus-data-", attempt),
                absl::StrCat("--web.listen-address=127.0.0.1:", p->port_),
                "--log.level=warn"};
      o.ready_prefix = "prometheus: starting";
      auto process = ChildProcess::Start(o);
      if (!process.ok()) {
        ADD_FAILURE() << process.status();
        return nullptr;
      }
      p->process_ = *std::move(process);
      const bool ready = Eventually(
          [&] {
            if (!p->process_->running()) return true;
            auto r = testing::HttpRequest("127.0.0.1", p->port_, "GET", "/-/ready");
            return r.ok() && r->status == 200;
          },
          absl::Seconds(60));
      if (ready && p->process_->running()) return p;
    }
    ADD_FAILURE() << "prometheus did not become ready (see its log above)";
    return nullptr;
  }

  absl::StatusOr<json> Get(const std::string& path) {
    auto r = testing::HttpRequest("127.0.0.1", port_, "GET", path);
    if (!r.ok()) return r.status();
    json body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) {
      return absl::DataLossError(absl::StrCat("not JSON (HTTP ", r->status, "): ", r->body));
    }
    return body;
  }

  // An instant query now.
  Query Instant(const std::string& expr) {
    Query q;
    absl::StatusOr<json> body = Get(absl::StrCat("/api/v1/query?query=", UrlEncode(expr)));
    if (!body.ok()) {
      q.error = body.status().ToString();
    } else if ((*body)["status"] != "success") {
      q.error = absl::StrCat((*body).value("errorType", ""), ": ", (*body).value("error", ""));
    } else if ((*body)["data"]["resultType"] != "vector") {
      q.error = absl::StrCat("result type ", (*body)["data"]["resultType"].dump());
    } else {
      q.result = (*body)["data"]["result"];
    }
    return q;
  }

  // Every rule Prometheus loaded, as /api/v1/rules lists them.
  // Every memshare_* metric `expr` reads has series in Prometheus (an
  // expression over a misspelt name evaluates fine, to nothing).
  void ExpectMetricsExist(const std::string& expr, const std::string& where) {
    for (const std::string& name : MetricNames(expr)) {
      const Query q = Instant(absl::StrCat("count({__name__=\"", name, "\"})"));
      EXPECT_FALSE(q.result.empty()) << "no series named " << name << " in " << where;
    }
  }

  std::vector<json> Rules() {
    std::vector<json> rules;
    absl::StatusOr<json> body = Get("/api/v1/rules");
    if (!body.ok() || (*body)["status"] != "success") return rules;
    for (const json& group : (*body)["data"]["groups"]) {
      for (const json& rule : group["rules"]) rules.push_back(rule);
    }
    return rules;
  }

 private:
  std::unique_ptr<ChildProcess> process_;
  int port_ = 0;
};

struct Process {
  std::unique_ptr<ChildProcess> child;
  std::map<std::string, int> ports;
};

Process StartProcess(const std::string& binary, std::vector<std::string> args,
                     const std::string& ready_prefix) {
  ChildProcess::Options o;
  o.binary = Runfile(binary);
  o.args = std::move(args);
  o.ready_prefix = ready_prefix;
  o.ready_timeout = absl::Seconds(300);  // a real model loads first
  auto child = ChildProcess::Start(o);
  EXPECT_TRUE(child.ok()) << child.status();
  if (!child.ok()) return {};
  Process p;
  p.child = *std::move(child);
  p.ports = ParsePorts(p.child->ready_line());
  return p;
}

v1::GenerateRequest Greedy(const std::string& text, int max_tokens) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_stop()->set_ignore_eos(true);
  return r;
}

grpc::Status Generate(v1::InferenceService::Stub& stub, const v1::GenerateRequest& request) {
  grpc::ClientContext c;
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub.Generate(&c, request);
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
  }
  return reader->Finish();
}

constexpr int kRequests = 24;
constexpr int kClients = 6;
constexpr int kMaxTokens = 24;

class PrometheusDeployTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::vector<std::string> worker_args;
    for (absl::string_view a :
         absl::StrSplit(Env("MEMSHARE_DEPLOY_WORKER_ARGS", ""), ' ', absl::SkipEmpty())) {
      worker_args.emplace_back(a);
    }
    for (int i = 0; i < 2; ++i) {
      std::vector<std::string> args = {"--address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                                       "--metrics_refresh=100ms"};
      args.insert(args.end(), worker_args.begin(), worker_args.end());
      workers_->push_back(
          StartProcess(Env("MEMSHARE_DEPLOY_WORKER", "engine/server/memshare_worker"), args,
                       "memshare_worker: serving"));
      if (workers_->back().child == nullptr) return;
    }
    *router_ =
        StartProcess("router/memshare_router",
                     {"--address=127.0.0.1:0", "--http_address=", "--metrics_address=127.0.0.1:0",
                      absl::StrCat("--workers=127.0.0.1:", (*workers_)[0].ports["serving"],
                                   ",127.0.0.1:", (*workers_)[1].ports["serving"]),
                      "--poll_interval=100ms", "--unhealthy_after=1"},
                     "memshare_router: serving");
    if (router_->child == nullptr) return;

    const std::string config = absl::StrCat(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 900ms\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        "  - ",
        Runfile("deploy/prometheus/alerts.yml"),
        "\n"
        "scrape_configs:\n"
        "  - job_name: memshare-router\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:",
        router_->ports["metrics"],
        "']\n"
        "  - job_name: memshare-worker\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:",
        (*workers_)[0].ports["metrics"], "', '127.0.0.1:", (*workers_)[1].ports["metrics"], "']\n");
    *prometheus_ = Prometheus::Start(config);
    if (*prometheus_ == nullptr) return;
    // Every target scraped once before the load, so counters have a sample
    // at zero and rate() sees the whole increase.
    ASSERT_TRUE(Eventually([] {
      const Query up = (*prometheus_)->Instant("sum(up{job=~\"memshare-.*\"})");
      return up.error.empty() && up.result.size() == 1 &&
             up.result[0]["value"][1].get<std::string>() == "3";
    })) << "Prometheus never scraped the router and both workers";

    auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", router_->ports["serving"]), grpc::InsecureChannelCredentials()));
    std::atomic<int> ok{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        for (int i = c; i < kRequests; i += kClients) {
          const grpc::Status s =
              Generate(*stub, Greedy(absl::StrCat("What is ", i, " + ", 3 * i, "?"), kMaxTokens));
          EXPECT_TRUE(s.ok()) << s.error_message();
          if (s.ok()) ++ok;
        }
      });
    }
    for (auto& t : clients) t.join();
    *ok_requests_ = ok.load();
    // One request the router refuses (an error on the dashboards).
    EXPECT_EQ(Generate(*stub, Greedy("", kMaxTokens)).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  static void TearDownTestSuite() {
    prometheus_->reset();
    *router_ = Process();
    workers_->clear();
  }

  void SetUp() override {
    ASSERT_NE(*prometheus_, nullptr);
    ASSERT_EQ(*ok_requests_, kRequests);
  }

  Prometheus& prometheus() { return **prometheus_; }

  static inline auto* workers_ = new std::vector<Process>();
  static inline auto* router_ = new Process();
  static inline auto* prometheus_ = new std::unique_ptr<Prometheus>();
  static inline auto* ok_requests_ = new int(0);
};

// What the router counted reaches Prometheus: the scrape config, the job
// names and the metric names fit the binaries.
TEST_F(PrometheusDeployTest, PrometheusSeesTheLoad) {
  EXPECT_TRUE(Eventually([&] {
    const Query q = prometheus().Instant(
        "sum(memshare_requests_total{job=\"memshare-router\", status=\"ok\"})");
    return q.error.empty() && q.result.size() == 1 &&
           q.result[0]["value"][1].get<std::string>() == std::to_string(kRequests);
  })) << "router's ok requests never reached "
      << kRequests;
  EXPECT_TRUE(Eventually([&] {
    const Query q = prometheus().Instant(
        "sum(memshare_requests_total{job=\"memshare-worker\", status=\"ok\"})");
    return q.error.empty() && q.result.size() == 1 &&
           q.result[0]["value"][1].get<std::string>() == std::to_string(kRequests);
  })) << "workers' ok requests never reached "
      << kRequests;
  const Query tokens =
      prometheus().Instant("sum(memshare_generation_tokens_total{job=\"memshare-router\"})");
  ASSERT_TRUE(tokens.error.empty()) << tokens.error;
  ASSERT_EQ(tokens.result.size(), 1u);
  EXPECT_EQ(tokens.result[0]["value"][1].get<std::string>(),
            std::to_string(kRequests * kMaxTokens));
}

TEST_F(PrometheusDeployTest, EveryDashboardExpressionEvaluatesAndTrafficPanelsHaveData) {
  // Let the last scrapes land (the previous test waits for them when run
  // alone; here a few scrape intervals suffice).
  absl::SleepFor(absl::Seconds(3));
  const std::string dir = Runfile("deploy/grafana/dashboards");
  std::vector<std::string> files;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (absl::EndsWith(e->d_name, ".json")) files.push_back(absl::StrCat(dir, "/", e->d_name));
    }
    closedir(d);
  }
  ASSERT_EQ(files.size(), 3u) << dir;
  int expressions = 0;
  for (const std::string& file : files) {
    std::stringstream text;
    text << std::ifstream(file).rdbuf();
    const json dashboard = json::parse(text.str(), nullptr, false);
    ASSERT_FALSE(dashboard.is_discarded()) << file;
    ASSERT_FALSE(dashboard["panels"].empty()) << file;
    for (const json& panel : dashboard["panels"]) {
      ASSERT_FALSE(panel["targets"].empty()) << file << ": " << panel["title"];
      for (const json& target : panel["targets"]) {
        const std::string raw = target["expr"];
        // Grafana's variables: a rate window that spans the whole test, and
        // "All" namespaces.
        const std::string expr =
            absl::StrReplaceAll(raw, {{"$__rate_interval", "1m"}, {"$namespace", ".*"}});
        const std::string where =
            absl::StrCat(file, ": ", panel["title"].get<std::string>(), ": ", expr);
        EXPECT_FALSE(absl::StrContains(expr, "$")) << "unknown variable in " << where;
        const Query q = prometheus().Instant(expr);
        ++expressions;
        prometheus().ExpectMetricsExist(expr, where);
        EXPECT_EQ(q.error, "") << where;
        EXPECT_FALSE(q.result.empty()) << "no data: " << where;
        if (std::regex_search(expr, TrafficMetric())) {
          EXPECT_TRUE(q.HasPositiveValue())
              << "no positive value after the load: " << where << "\n  result: " << q.result.dump();
        }
      }
    }
  }
  EXPECT_GE(expressions, 30);
}

TEST_F(PrometheusDeployTest, EveryRuleIsHealthyAndRecordingRulesHaveData) {
  // Every rule evaluated at least once after the load.
  const absl::Time after_load = absl::Now();
  std::vector<json> rules;
  ASSERT_TRUE(Eventually([&] {
    rules = prometheus().Rules();
    if (rules.empty()) return false;
    for (const json& r : rules) {
      absl::Time t;
      std::string err;
      if (!absl::ParseTime(absl::RFC3339_full, r.value("lastEvaluation", ""), &t, &err) ||
          t < after_load) {
        return false;
      }
    }
    return true;
  })) << "rules not all evaluated";
  int alerting = 0, recording = 0;
  for (const json& r : rules) {
    const std::string name = r["name"];
    const std::string expr = r["query"];
    EXPECT_EQ(r["health"], "ok") << name << ": " << r.value("lastError", "");
    const Query q = prometheus().Instant(expr);
    EXPECT_EQ(q.error, "") << name << ": " << expr;
    prometheus().ExpectMetricsExist(expr, name);
    if (r["type"] == "recording") {
      ++recording;
      EXPECT_FALSE(q.result.empty()) << "no data: " << name << ": " << expr;
      const Query recorded = prometheus().Instant(name);
      EXPECT_FALSE(recorded.result.empty()) << "nothing recorded: " << name;
    } else {
      ++alerting;
      // Nothing is wrong with this deployment: only alerts whose condition
      // the test creates (below) may hold.
      EXPECT_TRUE(q.result.empty()) << name << " holds: " << q.result.dump();
    }
  }
  EXPECT_EQ(alerting, 8);
  EXPECT_EQ(recording, 6);
}

// Runs last (it kills a worker).
TEST_F(PrometheusDeployTest, KilledWorkerTurnsTheDownAlertsOn) {
  std::map<std::string, std::string> alert_expr;
  for (const json& r : prometheus().Rules()) {
    if (r["type"] == "alerting") alert_expr[r["name"]] = r["query"];
  }
  ASSERT_TRUE(alert_expr.count("MemShareWorkerDown"));
  ASSERT_TRUE(alert_expr.count("MemShareWorkerGroupUnhealthy"));
  Process& victim = (*workers_)[1];
  victim.child->Signal(SIGKILL);
  ASSERT_TRUE(victim.child->Wait(absl::Seconds(10)).ok());
  const std::string metrics = absl::StrCat("127.0.0.1:", victim.ports["metrics"]);
  const std::string serving = absl::StrCat("127.0.0.1:", victim.ports["serving"]);

  Query down, unhealthy, pending;
  EXPECT_TRUE(Eventually([&] {
    down = prometheus().Instant(alert_expr["MemShareWorkerDown"]);
    return down.result.size() == 1 && down.result[0]["metric"]["instance"] == metrics;
  })) << down.error
      << " " << down.result.dump();
  EXPECT_TRUE(Eventually([&] {
    unhealthy = prometheus().Instant(alert_expr["MemShareWorkerGroupUnhealthy"]);
    return unhealthy.result.size() == 1 && unhealthy.result[0]["metric"]["worker"] == serving;
  })) << unhealthy.error
      << " " << unhealthy.result.dump();
  // The rule engine itself: the alert waits out its `for` as pending.
  EXPECT_TRUE(Eventually([&] {
    pending =
        prometheus().Instant("ALERTS{alertname=\"MemShareWorkerDown\", alertstate=\"pending\"}");
    return pending.result.size() == 1 && pending.result[0]["metric"]["instance"] == metrics;
  })) << pending.error
      << " " << pending.result.dump();
}

}  // namespace
}  // namespace memshare::e2e
