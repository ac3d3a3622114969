// STATE/stats.json: the totals a daemon gathered, written atomically once a minute and when it
// stops (issue 14), so they survive it: "since_start" counts this process's life, and
// "since_install" adds them to the since_install the previous run left. After a kill -9 the file
// is at most a minute old, and the next start continues from it (losing that minute's counts).
//
//   {"daemon": "backupd", "written_at": ISO, "started_at": ISO, "uptime_seconds": N,
//    "since_start": {...}, "since_install": {...}, "now": {...}}
// since_start and since_install have the same shape (numbers, in nested objects); "now" holds
// what is not a total (per-peer state, lags) as the daemon last saw it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace bkp {

class StatsFile {
 public:
  // How often a daemon rewrites the file: a minute; BKP_TEST_STATS_EVERY_MS=N makes it N ms (a
  // test seam, so a kill -9 test need not wait minutes).
  static std::chrono::milliseconds every();

  // path: the file; its since_install (if it parses) is the base this run adds to.
  StatsFile(std::string path, std::string daemon);

  // Writes the file: since_start as given, since_install = base + since_start (numbers added
  // key by key), now as given.
  Result<void> write(const nlohmann::json& since_start, const nlohmann::json& now);
  // Whether every() passed since the last write (or the start).
  bool due() const { return std::chrono::steady_clock::now() - last_ >= every_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string daemon_;
  nlohmann::json base_;
  int64_t started_ms_;
  const std::chrono::milliseconds every_ = every();
  std::chrono::steady_clock::time_point last_;
};

}  // namespace bkp
