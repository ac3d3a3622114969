// backupd's stats.json content (daemon_stats.h).
#include "server/daemon_stats.h"

#include "common/files.h"
#include "server/control_json.h"

namespace bkp::server {
namespace {

std::string key_of(const Registration& reg) { return reg.host + ":" + reg.path; }

}  // namespace

DaemonStats::DaemonStats(Registry& registry, int64_t started_ms)
    : registry_(registry), started_ms_(started_ms) {
  for (const StatusView& v : registry_.status()) {
    base_[key_of(v.volume.reg)] = volume_counters(v.volume.reg);
  }
}

std::map<std::string, uint64_t> DaemonStats::volume_counters(const Registration& reg) {
  auto values = read_key_values(registry_.hub().volume_dir(reg.host, reg.path) + "/stats");
  return values ? *values : std::map<std::string, uint64_t>{};
}

std::pair<nlohmann::json, nlohmann::json> DaemonStats::collect() {
  const int64_t now = wall_ms();
  json totals{{"ingest_bytes", 0}, {"ingest_wire_bytes", 0}, {"operations", 0}, {"batches", 0},
              {"runs", {{"written", 0}, {"unchanged", 0}, {"failed", 0}}},
              {"restores", registry_.restores()}, {"restored_bytes", registry_.restored_bytes()}};
  json volumes = json::object(), live = json::object();
  for (const StatusView& v : registry_.status()) {
    const Registration& reg = v.volume.reg;
    auto current = volume_counters(reg);
    const auto& base = base_[key_of(reg)];
    auto grown = [&](const char* key) -> uint64_t {
      uint64_t c = current.contains(key) ? current.at(key) : 0;
      uint64_t b = base.contains(key) ? base.at(key) : 0;
      return c >= b ? c - b : c;  // counters that restarted (a re-registered volume)
    };
    json vol{{"ingest_bytes", grown("data_bytes")}, {"ingest_wire_bytes", grown("wire_bytes")},
             {"operations", grown("ops")}, {"batches", grown("batches")}, {"runs", json::object()}};
    if (auto counts = registry_.catalog().run_counts(reg.host, reg.path, started_ms_)) {
      for (RunStatus s : {RunStatus::kWritten, RunStatus::kUnchanged, RunStatus::kFailed}) {
        vol["runs"][run_status_name(s)] = counts->contains(s) ? counts->at(s) : 0;
      }
    }
    for (const char* k : {"ingest_bytes", "ingest_wire_bytes", "operations", "batches"}) {
      totals[k] = totals[k].get<uint64_t>() + vol[k].get<uint64_t>();
    }
    for (const auto& [status, n] : vol["runs"].items()) {
      totals["runs"][status] = totals["runs"][status].get<uint64_t>() + n.get<uint64_t>();
    }
    json replicas = json::object();
    for (const auto& r : v.volume.replicas) replicas[r.lag.replica] = replica_json(r, now);
    live[key_of(reg)] = json{{"connected", v.volume.link.connected},
                             {"last_error", v.volume.link.last_error
                                                ? json(*v.volume.link.last_error)
                                                : json(nullptr)},
                             {"replicas", std::move(replicas)}};
    volumes[key_of(reg)] = std::move(vol);
  }
  totals["volumes"] = std::move(volumes);
  return {std::move(totals), json{{"volumes", std::move(live)}}};
}

}  // namespace bkp::server
