#include "common/listener_wakeup.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace memshare {

void StopAndWake(const std::string& bind_address, int port, const std::function<void()>& stop) {
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    stop();
    stopped.store(true);
  });
  const size_t colon = bind_address.rfind(':');
  std::string host = colon == std::string::npos ? "" : bind_address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "localhost") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool can_wake = port > 0 && inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1;
  while (!stopped.load()) {
    if (can_wake) {
      const int fd = socket(AF_INET, SOCK_STREAM, 0);
      if (fd >= 0) {
        (void)connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
        close(fd);
      }
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  stopper.join();
}

}  // namespace memshare
