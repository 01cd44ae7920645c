// The README's demo: starts one memshare_router and two memshare_worker
// processes on the CPU backend with the bundled tiny reasoning model, sends a
// reasoning problem through the public gRPC API, streams the answer, prints
// the KV statistics (blocks shared by MemShare, bytes saved) and stops
// everything it started (also on errors and Ctrl-C).
//
//   bazel run //tools/demo               # the real engine and assets/models/tiny-reasoner
//   bazel run //tools/demo:demo_fake     # the same over the fake engine (no model)
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/process_main.h"
#include "proto/memshare/v1/inference.grpc.pb.h"
#include "tests/e2e/child_process.h"

ABSL_FLAG(std::string, worker, "engine/server/memshare_worker",
          "Worker binary (relative paths are looked up in the runfiles, then the current "
          "directory).");
ABSL_FLAG(std::string, worker_args, "--model=assets/models/tiny-reasoner",
          "Arguments of each worker, space-separated (relative --model paths are resolved like "
          "--worker).");
ABSL_FLAG(std::string, router, "router/memshare_router", "Router binary.");
ABSL_FLAG(std::string, problem,
          "Emma starts with 21 cups. Emma gets 4 trays of 4 cups each. Emma gets 19 more cups. "
          "Emma gives 9 friends 2 cups each. Next, Emma wins 49 more cups. How many cups does "
          "Emma end up with?",
          "The problem sent as the user's chat message.");
ABSL_FLAG(int32_t, max_tokens, 1200, "Most tokens to generate.");

namespace {

using memshare::e2e::ChildProcess;

// A path in the runfiles of this binary if it exists there, else as given.
std::string Resolve(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  for (const char* env : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    if (const char* dir = std::getenv(env); dir != nullptr) {
      const std::string candidate = absl::StrCat(dir, "/memshare/", path);
      if (access(candidate.c_str(), F_OK) == 0) return candidate;
    }
  }
  return path;  // bazel run starts in the runfiles tree: relative works
}

std::unique_ptr<ChildProcess> Start(const std::string& binary, std::vector<std::string> args,
                                    const std::string& ready) {
  ChildProcess::Options o;
  o.binary = Resolve(binary);
  o.args = std::move(args);
  o.ready_prefix = ready;
  o.ready_timeout = absl::Seconds(120);
  auto process = ChildProcess::Start(o);
  if (!process.ok()) {
    std::fprintf(stderr, "demo: %s\n", process.status().ToString().c_str());
    return nullptr;
  }
  return *std::move(process);
}

int Run() {
  std::vector<std::string> worker_args = {"--address=127.0.0.1:0", "--metrics_address=127.0.0.1:0"};
  for (absl::string_view a :
       absl::StrSplit(absl::GetFlag(FLAGS_worker_args), ' ', absl::SkipEmpty())) {
    std::string arg(a);
    if (absl::StartsWith(arg, "--model=")) arg = "--model=" + Resolve(arg.substr(8));
    worker_args.push_back(arg);
  }
  std::printf("== starting two workers (%s)\n", absl::GetFlag(FLAGS_worker).c_str());
  std::vector<std::unique_ptr<ChildProcess>> workers;
  std::vector<std::string> addresses;
  for (int i = 0; i < 2; ++i) {
    auto w = Start(absl::GetFlag(FLAGS_worker), worker_args, "memshare_worker: serving");
    if (w == nullptr) return 1;
    const auto ports = memshare::e2e::ParsePorts(w->ready_line());
    addresses.push_back(absl::StrCat("127.0.0.1:", ports.at("serving")));
    std::printf("   worker %d on %s\n", i, addresses.back().c_str());
    workers.push_back(std::move(w));
  }
  auto router =
      Start(absl::GetFlag(FLAGS_router),
            {"--address=127.0.0.1:0", "--http_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
             absl::StrCat("--workers=", addresses[0], ",", addresses[1]), "--poll_interval=100ms"},
            "memshare_router: serving");
  if (router == nullptr) return 1;
  const auto router_ports = memshare::e2e::ParsePorts(router->ready_line());
  const std::string target = absl::StrCat("127.0.0.1:", router_ports.at("serving"));
  std::printf("== router on %s (OpenAI HTTP on port %d, /metrics on port %d)\n", target.c_str(),
              router_ports.at("http"), router_ports.at("metrics"));

  auto stub = memshare::v1::InferenceService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  // Wait until the router sees both workers.
  memshare::v1::ModelInfo model;
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext c;
    memshare::v1::ServerInfo info;
    int healthy = 0;
    if (stub->GetServerInfo(&c, {}, &info).ok()) {
      for (const auto& w : info.workers()) healthy += w.healthy() ? 1 : 0;
      model = info.model();
    }
    if (healthy == 2) break;
    if (attempt > 100) {
      std::fprintf(stderr, "demo: the workers did not become healthy\n");
      return 1;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::printf("== model %s (%s), block size %d, %lld bytes per KV block\n",
              model.model_id().c_str(), model.architecture().c_str(), model.block_size(),
              static_cast<long long>(model.kv_block_bytes()));

  memshare::v1::GenerateRequest request;
  request.set_request_id("demo-1");
  auto* message = request.mutable_chat()->add_messages();
  message->set_role("user");
  message->set_content(absl::GetFlag(FLAGS_problem));
  request.mutable_sampling()->set_temperature(0);
  request.mutable_sampling()->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  request.mutable_memshare()->set_mode(memshare::v1::MemShareOptions::MODE_ON);
  std::printf("== user: %s\n== assistant (streamed):\n", absl::GetFlag(FLAGS_problem).c_str());
  std::fflush(stdout);

  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
  auto reader = stub->Generate(&context, request);
  memshare::v1::GenerateResponse response;
  memshare::v1::GenerateResult result;
  while (reader->Read(&response)) {
    if (response.has_chunk()) {
      std::fwrite(response.chunk().text().data(), 1, response.chunk().text().size(), stdout);
      std::fflush(stdout);
    } else if (response.has_result()) {
      result = response.result();
    }
  }
  const grpc::Status status = reader->Finish();
  std::printf("\n");
  if (!status.ok()) {
    std::fprintf(stderr, "demo: generation failed: %s\n", status.error_message().c_str());
    return 1;
  }
  const auto& u = result.usage();
  static const char* kReasons[] = {"unspecified", "stop", "length", "abort"};
  std::printf("== finish reason %s; %d prompt tokens (%d from the prefix cache), %d generated\n",
              kReasons[result.finish_reason() & 3], u.prompt_tokens(), u.cached_prompt_tokens(),
              u.completion_tokens());
  std::printf(
      "== KV: peak %d logical blocks in %d physical; %d blocks shared by MemShare, "
      "%lld bytes saved\n",
      u.kv_blocks_peak_logical(), u.kv_blocks_peak_physical(), u.shared_blocks(),
      static_cast<long long>(u.shared_blocks()) * static_cast<long long>(model.kv_block_bytes()));
  grpc::ClientContext ic;
  memshare::v1::ServerInfo info;
  if (stub->GetServerInfo(&ic, {}, &info).ok()) {
    const auto& l = info.load();
    std::printf(
        "== server totals: dedup candidates %lld, verified %lld, rejected %lld, remapped %lld; "
        "prefix cache %lld/%lld hits\n",
        static_cast<long long>(l.dedup_candidates()), static_cast<long long>(l.dedup_verified()),
        static_cast<long long>(l.dedup_rejected()), static_cast<long long>(l.dedup_remapped()),
        static_cast<long long>(l.prefix_cache_hits()),
        static_cast<long long>(l.prefix_cache_queries()));
  }

  std::printf("== stopping the router, then the workers\n");
  std::fflush(stdout);
  int failures = 0;
  router->Signal(SIGTERM);
  if (auto code = router->Wait(absl::Seconds(30)); !code.ok() || *code != 0) ++failures;
  for (auto& w : workers) w->Signal(SIGTERM);
  for (auto& w : workers) {
    if (auto code = w->Wait(absl::Seconds(30)); !code.ok() || *code != 0) ++failures;
  }
  std::printf("== done%s\n", failures == 0 ? "" : " (a process did not exit cleanly)");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  memshare::ParseFlags(argc, argv,
                       "starts a router and two workers, streams one answer through the public "
                       "gRPC API, prints the KV statistics and stops everything.");
  // Ctrl-C reaches the children too (same process group): they drain and
  // exit; errors end them through the destructors.
  return Run();
}
