// Wall-clock helpers (clock.h).
#include "common/clock.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

namespace bkp {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string iso_time(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec);
}

double lag_seconds(int64_t oldest_ns, int64_t now_ms) {
  if (oldest_ns <= 0) return 0;
  double lag = static_cast<double>(now_ms) / 1e3 - static_cast<double>(oldest_ns) / 1e9;
  return std::max(0.0, std::round(lag * 1000) / 1000);
}

}  // namespace bkp
