// backupd's totals for STATE/stats.json (common/stats_file.h): per volume and in all, what came
// in from the nodes (bytes, operations, batches), runs by status and restores served; and, as
// "now", each volume's link and lag and each replica's. The per-volume counters on disk
// (VOLUME/stats) count since the volume was registered, so since_start is their growth since
// this process started.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "server/registry.h"

namespace bkp::server {

class DaemonStats {
 public:
  // Notes each registered volume's counters now (the base of since_start).
  DaemonStats(Registry& registry, int64_t started_ms);
  // {since_start, now} for StatsFile::write.
  std::pair<nlohmann::json, nlohmann::json> collect();

 private:
  std::map<std::string, uint64_t> volume_counters(const Registration& reg);

  Registry& registry_;
  const int64_t started_ms_;
  std::map<std::string, std::map<std::string, uint64_t>> base_;  // by "host:path"
};

}  // namespace bkp::server
