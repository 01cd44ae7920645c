// CivetWeb (the HTTP server of /metrics and of the router's OpenAI API)
// checks its stop flag only when its listener's poll() returns, every two
// seconds. StopAndWake runs `stop` (which blocks until CivetWeb has
// stopped) on a helper thread and meanwhile connects to the listener every
// few milliseconds, so the stop takes milliseconds, not seconds.
#ifndef MEMSHARE_COMMON_LISTENER_WAKEUP_H_
#define MEMSHARE_COMMON_LISTENER_WAKEUP_H_

#include <functional>
#include <string>

namespace memshare {

// `bind_address` is the listener's "host:port" as configured (0.0.0.0 or
// an empty host are reached on 127.0.0.1); `port` the port bound.
void StopAndWake(const std::string& bind_address, int port, const std::function<void()>& stop);

}  // namespace memshare

#endif  // MEMSHARE_COMMON_LISTENER_WAKEUP_H_
