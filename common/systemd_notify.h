// Talks to systemd when a daemon runs as a service: backupd (Type=notify) sends READY=1 once the
// catalog is open and the socket listens, WATCHDOG=1 pings from its main loop and STOPPING=1 on
// shutdown; every daemon sends STATUS= lines (progress::Display does, during transfers). Outside systemd (no $NOTIFY_SOCKET) every call is a
// cheap no-op, so callers never check.
#pragma once

#include <chrono>
#include <string>

namespace bkp {

class SystemdNotifier {
 public:
  void ready(const std::string& status);
  static void status(const std::string& status);
  // Pings the watchdog at most once a second; call it from the main loop's every turn.
  void watchdog();
  void stopping();

 private:
  std::chrono::steady_clock::time_point last_ping_{};
};

}  // namespace bkp
