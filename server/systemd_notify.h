// Talks to systemd when backupd runs as a Type=notify service (systemd/backupd.service):
// READY=1 once the catalog is open and the socket listens, STATUS= lines, WATCHDOG=1 pings from
// the main loop, STOPPING=1 on shutdown. Outside systemd (no $NOTIFY_SOCKET) every call is a
// cheap no-op, so callers never check.
#pragma once

#include <chrono>
#include <string>

namespace bkp::server {

class SystemdNotifier {
 public:
  void ready(const std::string& status);
  void status(const std::string& status);
  // Pings the watchdog at most once a second; call it from the main loop's every turn.
  void watchdog();
  void stopping();

 private:
  std::chrono::steady_clock::time_point last_ping_{};
};

}  // namespace bkp::server
