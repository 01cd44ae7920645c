#include "tests/e2e/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace memshare::e2e {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(const Options& options) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  std::vector<std::string> argv_storage = {options.binary};
  argv_storage.insert(argv_storage.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    // The parent may block SIGTERM (process mains do): the child starts
    // with a clean mask.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(options.binary.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess(pid, fds[0]));
  const absl::Time deadline = absl::Now() + options.ready_timeout;
  std::string buffer;
  while (true) {
    size_t eol;
    while ((eol = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, eol);
      buffer.erase(0, eol + 1);
      if (line.rfind(options.ready_prefix, 0) == 0) {
        child->ready_line_ = line;
        return child;
      }
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::UnavailableError(absl::StrCat(options.binary, " not ready after ",
                                                 absl::FormatDuration(options.ready_timeout)));
    }
    pollfd p{child->stdout_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(child->stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) {
      absl::StatusOr<int> code = child->Wait(absl::Seconds(5));
      return absl::UnavailableError(absl::StrCat(
          options.binary, " exited before it was ready (",
          code.ok() ? absl::StrCat("exit code ", *code) : std::string("still running"), ")"));
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    (void)Wait(absl::Seconds(10));
  }
  close(stdout_fd_);
}

void ChildProcess::Signal(int signal) {
  if (!reaped_) kill(pid_, signal);
}

bool ChildProcess::running() {
  if (reaped_) return false;
  return !Wait(absl::ZeroDuration()).ok();
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  if (reaped_) return exit_code_;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " still running"));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

std::map<std::string, int> ParsePorts(const std::string& line) {
  std::map<std::string, int> ports;
  std::vector<std::string> words = absl::StrSplit(line, absl::ByAnyChar(" ,:"), absl::SkipEmpty());
  for (size_t i = 0; i + 3 < words.size(); ++i) {
    int port = 0;
    if (words[i + 1] == "on" && words[i + 2] == "port" && absl::SimpleAtoi(words[i + 3], &port)) {
      ports[words[i]] = port;
    }
  }
  return ports;
}

}  // namespace memshare::e2e
