// systemd's file descriptor store and the restart-or-stop question (fd_store.h).
#include "fs/fd_store.h"

#include <fcntl.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/log.h"

namespace bkp::fs {
namespace {

struct BusDeleter {
  void operator()(sd_bus* bus) const { sd_bus_flush_close_unref(bus); }
};
struct MessageDeleter {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};

constexpr char kSystemd[] = "org.freedesktop.systemd1";

}  // namespace

bool fd_store_available() { return std::getenv("NOTIFY_SOCKET") != nullptr; }

std::map<std::string, int> take_stored_fds() {
  std::map<std::string, int> fds;
  char** names = nullptr;
  int n = sd_listen_fds_with_names(1, &names);
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (names != nullptr && names[i] != nullptr) fds[names[i]] = fd;
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  return fds;
}

Result<void> store_fd(const std::string& name, int fd) {
  std::string state = "FDSTORE=1\nFDNAME=" + name;
  int r = sd_pid_notify_with_fds(0, 0, state.c_str(), &fd, 1);
  if (r < 0) return fail(-r, "cannot store " + name + " in systemd's descriptor store");
  if (r == 0) return fail(ENOTCONN, "no systemd notify socket");
  return {};
}

void remove_stored_fd(const std::string& name) {
  std::string state = "FDSTOREREMOVE=1\nFDNAME=" + name;
  sd_notify(0, state.c_str());
}

bool unit_restarting() {
  sd_bus* raw = nullptr;
  if (int r = sd_bus_open_system(&raw); r < 0) {
    log::warn("cannot reach systemd over D-Bus ({}): treating SIGTERM as a stop",
              std::strerror(-r));
    return false;
  }
  std::unique_ptr<sd_bus, BusDeleter> bus(raw);
  sd_bus_error error = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  bool restarting = false;
  const char* unit_path = nullptr;
  if (sd_bus_call_method(bus.get(), kSystemd, "/org/freedesktop/systemd1",
                         "org.freedesktop.systemd1.Manager", "GetUnitByPID", &error, &reply, "u",
                         static_cast<uint32_t>(::getpid())) >= 0) {
    std::unique_ptr<sd_bus_message, MessageDeleter> unit_reply(reply);
    if (sd_bus_message_read(reply, "o", &unit_path) >= 0) {
      sd_bus_message* job = nullptr;
      if (sd_bus_get_property(bus.get(), kSystemd, unit_path, "org.freedesktop.systemd1.Unit",
                              "Job", &error, &job, "(uo)") >= 0) {
        std::unique_ptr<sd_bus_message, MessageDeleter> job_reply(job);
        uint32_t job_id = 0;
        const char* job_path = nullptr;
        char* type = nullptr;
        if (sd_bus_message_read(job, "(uo)", &job_id, &job_path) >= 0 && job_id != 0 &&
            sd_bus_get_property_string(bus.get(), kSystemd, job_path,
                                       "org.freedesktop.systemd1.Job", "JobType", &error,
                                       &type) >= 0) {
          // A restart job stops the unit first, and its type stays "restart" meanwhile.
          restarting = std::strstr(type, "restart") != nullptr;
          log::info("systemd job of this unit: {}", type);
          std::free(type);
        }
      }
    }
  }
  if (sd_bus_error_is_set(&error)) log::warn("asking systemd for this unit's job: {}", error.message);
  sd_bus_error_free(&error);
  return restarting;
}

}  // namespace bkp::fs
