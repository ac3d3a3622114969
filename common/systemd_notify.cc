// sd_notify(3) wrapper for the daemons (see systemd_notify.h). The main loop wakes at least once a
// second, so pinging from it proves the loop that accepts connections and handles signals is
// alive; WatchdogSec= in the unit is 30 s, far above that.
#include "common/systemd_notify.h"

#include <systemd/sd-daemon.h>

namespace bkp {

void SystemdNotifier::ready(const std::string& status) {
  sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
}

void SystemdNotifier::status(const std::string& status) {
  sd_notifyf(0, "STATUS=%s", status.c_str());
}

void SystemdNotifier::watchdog() {
  auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < std::chrono::seconds(1)) return;
  last_ping_ = now;
  sd_notify(0, "WATCHDOG=1");
}

void SystemdNotifier::stopping() { sd_notify(0, "STOPPING=1\nSTATUS=shutting down"); }

}  // namespace bkp
