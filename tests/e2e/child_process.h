// A child process for multi-process tests and the demo: started with
// fork/exec, its stdout read until it prints the line that says it is ready
// ("memshare_worker: serving on port ..."), then signalled, waited for, and
// killed (SIGKILL) by the destructor if it still runs.
//
// Thread-compatible.
#ifndef MEMSHARE_TESTS_E2E_CHILD_PROCESS_H_
#define MEMSHARE_TESTS_E2E_CHILD_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace memshare::e2e {

class ChildProcess {
 public:
  struct Options {
    std::string binary;
    std::vector<std::string> args;
    // Start returns once a stdout line begins with this.
    std::string ready_prefix;
    absl::Duration ready_timeout = absl::Seconds(60);
  };

  // UNAVAILABLE when the child exits or stays silent before it is ready.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const Options& options);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& ready_line() const { return ready_line_; }
  void Signal(int signal);
  // The exit code (128 + signal when killed by one); DEADLINE_EXCEEDED when
  // it still runs after `timeout`.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  bool running();

 private:
  ChildProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  pid_t pid_;
  int stdout_fd_;
  std::string ready_line_;
  bool reaped_ = false;
  int exit_code_ = 0;
};

// "serving on port 1, http on port 2, metrics on port 3" ->
// {"serving": 1, "http": 2, "metrics": 3}: each "<word> on port <n>".
std::map<std::string, int> ParsePorts(const std::string& line);

}  // namespace memshare::e2e

#endif  // MEMSHARE_TESTS_E2E_CHILD_PROCESS_H_
