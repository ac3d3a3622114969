// Implementation of common/log.h: a level filter and one write(2) per line so that lines from
// concurrent threads never interleave.
#include "common/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <string>

namespace bkp::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::string g_component = "bkp";
const char* kNames[] = {"debug", "info", "warn", "error"};
const char* kPriorities[] = {"<7>", "<6>", "<4>", "<3>"};
}  // namespace

void set_level(Level level) { g_level = static_cast<int>(level); }
void set_component(std::string_view name) { g_component = name; }
bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }

void write(Level level, std::string_view message) {
  int i = static_cast<int>(level);
  std::string line;
  if (isatty(STDERR_FILENO)) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    localtime_r(&ts.tv_sec, &t);
    line = fmt::format("{:02}:{:02}:{:02}.{:03} {} {}: {}\n", t.tm_hour, t.tm_min, t.tm_sec,
                       ts.tv_nsec / 1000000, g_component, kNames[i], message);
  } else {
    line = fmt::format("{}{} {}: {}\n", kPriorities[i], g_component, kNames[i], message);
  }
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace bkp::log
