#include "engine/server/worker_main.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/process_main.h"
#include "engine/server/flag_spelling.h"
#include "engine/server/worker_server.h"

ABSL_FLAG(std::string, address, "0.0.0.0:50051",
          "host:port of the gRPC server (memshare.v1.WorkerService, grpc.health.v1.Health, "
          "server reflection). Port 0 lets the OS choose; the port is printed at start.");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9401",
          "host:port of the Prometheus endpoint GET /metrics. Port 0 lets the OS choose; empty "
          "disables it.");
ABSL_FLAG(int32_t, max_message_bytes, 16 << 20,
          "Largest gRPC message received or sent, in bytes; larger requests get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the gRPC server. With --tls_key: serve TLS; both empty: "
          "plain text.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key matching --tls_cert.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "On SIGTERM: how long open streams may take to finish before they are aborted.");
ABSL_FLAG(int32_t, default_max_tokens, 256,
          "max_tokens of requests that set none (clamped to what fits the model's context).");
ABSL_FLAG(int64_t, max_prompt_bytes, 1 << 20,
          "Longest text prompt (or sum of chat message contents) accepted, in bytes.");
ABSL_FLAG(absl::Duration, metrics_refresh, absl::Milliseconds(500),
          "How often the engine's load and KV statistics are copied into /metrics.");
ABSL_FLAG(absl::Duration, unhealthy_exit_delay, absl::Seconds(2),
          "When the engine fails for good (its tensor-parallel group broke): how long to keep "
          "answering NOT_SERVING before exiting with status 3.");

namespace memshare::engine {

int RunWorkerMain(int argc, char** argv, const std::string& usage, const EngineFactory& factory,
                  const AlternativeMain& alternative) {
  BlockTerminationSignals();
  std::vector<std::string> args = UnderscoreFlagNames(argc, argv);
  std::vector<char*> args_c;
  for (std::string& a : args) args_c.push_back(a.data());
  args_c.push_back(nullptr);
  ParseFlags(static_cast<int>(args.size()), args_c.data(), usage);
  if (alternative) {
    if (std::optional<int> code = alternative(); code.has_value()) return *code;
  }

  absl::StatusOr<std::unique_ptr<InferenceEngine>> engine = factory();
  if (!engine.ok()) {
    std::fprintf(stderr, "memshare_worker: cannot create the engine: %s\n",
                 engine.status().ToString().c_str());
    return 1;
  }
  WorkerServer::Options options;
  options.address = absl::GetFlag(FLAGS_address);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.metrics_refresh = absl::GetFlag(FLAGS_metrics_refresh);
  options.service.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  options.service.max_prompt_bytes = absl::GetFlag(FLAGS_max_prompt_bytes);
  absl::StatusOr<std::unique_ptr<WorkerServer>> server =
      WorkerServer::Create(options, *std::move(engine));
  if (!server.ok()) {
    std::fprintf(stderr, "memshare_worker: cannot start: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const ModelInfo info = (*server)->engine().GetModelInfo();
  std::fprintf(stderr, "memshare_worker: model %s (%s, max_model_len %d) on %s\n",
               info.model_id.c_str(), info.architecture.c_str(), info.max_model_len,
               info.device.c_str());
  std::printf("memshare_worker: serving on port %d, metrics on port %d\n", (*server)->port(),
              (*server)->metrics_port());
  std::fflush(stdout);

  // The engine failing for good (a broken tensor-parallel group): report
  // NOT_SERVING (WorkerServer's refresher does), let the router see it, then
  // stop like on SIGTERM, with exit status 3.
  std::atomic<bool> failed{false};
  absl::Notification stop_watch;
  WorkerServer* server_ptr = server->get();
  std::thread watch([&] {
    while (!stop_watch.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      const absl::Status h = server_ptr->engine().health();
      if (h.ok()) continue;
      std::fprintf(stderr, "memshare_worker: engine failed: %s; NOT_SERVING, exiting in %s\n",
                   h.ToString().c_str(),
                   absl::FormatDuration(absl::GetFlag(FLAGS_unhealthy_exit_delay)).c_str());
      server_ptr->RefreshMetrics();
      failed = true;
      if (!stop_watch.WaitForNotificationWithTimeout(absl::GetFlag(FLAGS_unhealthy_exit_delay))) {
        std::thread([] {
          absl::SleepFor(absl::Seconds(20));
          std::fprintf(stderr, "memshare_worker: shutdown hangs; exiting\n");
          _exit(3);
        }).detach();
        kill(getpid(), SIGTERM);
      }
      return;
    }
  });
  const int signal = WaitForTerminationSignal();
  stop_watch.Notify();
  watch.join();
  if (failed) {
    // Open streams end with the engine's error; then exit at once: tearing
    // down a broken tensor-parallel group can block (NCCL), and there is
    // nothing left to save.
    std::fprintf(stderr, "memshare_worker: stopping after the engine failed\n");
    (*server)->Drain(absl::Seconds(2)).IgnoreError();
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(3);
  }
  const absl::Duration timeout = absl::GetFlag(FLAGS_drain_timeout);
  std::fprintf(stderr, "memshare_worker: signal %d: draining %d open streams (up to %s)\n", signal,
               (*server)->service().active_streams(), absl::FormatDuration(timeout).c_str());
  const absl::Status drained = (*server)->Drain(timeout);
  std::fprintf(stderr, "memshare_worker: drained: %s\n", drained.ToString().c_str());
  server->reset();
  return 0;
}

}  // namespace memshare::engine
