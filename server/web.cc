// backupd's status page, /api/status and /metrics (web.h).
#include "server/web.h"

#include <fmt/format.h>

#include "common/files.h"
#include "common/log.h"
#include "common/metrics.h"
#include "server/backup_run.h"
#include "server/control_json.h"

namespace bkp::server {
namespace {

// The page, from server/web_page.html (CMake writes it into this header).
#include "server/web_page.inc"

constexpr size_t kRecentRuns = 30;

}  // namespace

nlohmann::json status_document(Registry& registry, int64_t now_ms, int64_t started_ms) {
  json volumes = json::array();
  for (const StatusView& v : registry.status()) {
    const auto& reg = v.volume.reg;
    auto snaps = registry.present_snapshots(reg.host, reg.path);
    std::optional<SnapshotRecord> last;
    if (snaps && !snaps->empty()) last = snaps->front();
    json j = status_json(v, last, now_ms);
    json runs = json::array();
    if (auto recent = registry.catalog().runs(reg.host, reg.path, kRecentRuns)) {
      for (const auto& r : *recent) runs.push_back(run_json(r));
    }
    j["recent_runs"] = std::move(runs);
    json sizes = json::array();
    if (snaps) {
      for (const auto& s : *snaps) sizes.push_back(snapshot_json(s));
    }
    j["snapshots"] = std::move(sizes);
    volumes.push_back(std::move(j));
  }
  return json{{"generated_at", iso_time(now_ms)},
              {"server",
               {{"started_at", iso_time(started_ms)},
                {"uptime_seconds", (now_ms - started_ms) / 1000}}},
              {"volumes", std::move(volumes)},
              {"replicators", replicators_json(registry.hub())}};
}

std::string metrics_text(Registry& registry, int64_t now_ms, const std::string& state_dir) {
  metrics::Exposition m;
  const double now_s = static_cast<double>(now_ms) / 1e3;
  const auto views = registry.status();
  m.gauge("backupd_volumes", "Registered volumes.", {}, static_cast<double>(views.size()));
  for (const StatusView& v : views) {
    const auto& reg = v.volume.reg;
    const metrics::Labels vol{{"host", reg.host}, {"path", reg.path}};
    m.gauge("backupd_volume_up", "1 while backupd's link to the volume's node is up.", vol,
            v.volume.link.connected);
    const auto& sample = v.volume.node_status;
    m.gauge("backupd_volume_lag_seconds",
            "Recovery point: age of the oldest change the node has not delivered yet.", vol,
            sample ? lag_seconds(sample->status.oldest_ns, now_ms) : 0);
    m.gauge("backupd_volume_lag_bytes", "Bytes the node has recorded and not delivered yet.", vol,
            sample ? static_cast<double>(sample->status.pending_bytes) : 0);
    m.gauge("backupd_volume_lag_operations",
            "Operations the node has recorded and not delivered yet.", vol,
            sample ? static_cast<double>(sample->status.pending_ops) : 0);
    m.gauge("backupd_volume_copies_wanted", "Copies the volume should have (mirror + replicas).",
            vol, static_cast<double>(v.volume.copies_wanted));
    m.gauge("backupd_volume_copies_current",
            "Copies holding everything the node delivered (connected, nothing pending).", vol,
            static_cast<double>(current_copies(v.volume)));
    m.gauge("backupd_volume_schedule_seconds", "The volume's snapshot period.", vol,
            static_cast<double>(reg.every_seconds));
    if (v.volume.next_run) {
      m.gauge("backupd_volume_next_run_timestamp_seconds", "When the next run is due.", vol,
              static_cast<double>(*v.volume.next_run) / 1e3);
    }
    if (const auto& run = v.volume.last_run) {
      m.gauge("backupd_volume_last_run_timestamp_seconds", "When the last run ended.", vol,
              static_cast<double>(run->ended_at) / 1e3);
      m.gauge("backupd_volume_last_run_success",
              "1 if the last run wrote a snapshot or found nothing changed, 0 if it failed.", vol,
              run->status != RunStatus::kFailed);
      m.gauge("backupd_volume_last_run_duration_seconds", "How long the last run took.", vol,
              static_cast<double>(run->duration_ms) / 1e3);
    }
    if (auto counts = registry.catalog().run_counts(reg.host, reg.path)) {
      for (RunStatus s : {RunStatus::kWritten, RunStatus::kUnchanged, RunStatus::kFailed}) {
        metrics::Labels l = vol;
        l.emplace_back("status", run_status_name(s));
        m.counter("backupd_volume_runs_total", "Finished runs by status.", l,
                  static_cast<double>(counts->contains(s) ? counts->at(s) : 0));
      }
    }
    auto snaps = registry.present_snapshots(reg.host, reg.path);
    if (snaps && !snaps->empty()) {
      const SnapshotRecord& s = snaps->front();
      m.gauge("backupd_volume_last_snapshot_bytes", "Size of the newest snapshot on disk.", vol,
              static_cast<double>(s.bytes));
      m.gauge("backupd_volume_last_snapshot_timestamp_seconds", "When the newest snapshot was written.",
              vol, static_cast<double>(s.created_at) / 1e3);
      m.gauge("backupd_volume_last_snapshot_age_seconds", "Age of the newest snapshot.", vol,
              std::max(0.0, now_s - static_cast<double>(s.created_at) / 1e3));
      m.gauge("backupd_volume_snapshots", "Snapshots kept on disk.", vol,
              static_cast<double>(snaps->size()));
    }
    if (auto verifies = registry.catalog().verify_runs(reg.host, reg.path, 1);
        verifies && !verifies->empty()) {
      const VerifyRecord& last = verifies->front();
      m.gauge("backupd_volume_last_verify_timestamp_seconds", "When the last verify ended.", vol,
              static_cast<double>(last.ended_at) / 1e3);
      for (VerifyResult r : {VerifyResult::kClean, VerifyResult::kDiffers, VerifyResult::kFailed}) {
        metrics::Labels l = vol;
        l.emplace_back("result", verify_result_name(r));
        m.gauge("backupd_volume_last_verify_result",
                "1 for the last verify's result: clean, differs (a copy holds something else) or "
                "failed (not everything could be checked).",
                l, last.result == r);
      }
      m.gauge("backupd_volume_last_verify_differences", "Differences the last verify found.",
              vol, static_cast<double>(last.differences));
    }
    if (auto totals = read_key_values(registry.hub().volume_dir(reg.host, reg.path) + "/stats")) {
      auto total = [&](const char* key) {
        return static_cast<double>(totals->contains(key) ? totals->at(key) : 0);
      };
      m.counter("backupd_volume_ingest_bytes_total", "File data received from the node.", vol,
                total("data_bytes"));
      m.counter("backupd_volume_ingest_wire_bytes_total",
                "Bytes of frames received from the node, headers included.", vol,
                total("wire_bytes"));
      m.counter("backupd_volume_ingest_operations_total", "Operations received from the node.",
                vol, total("ops"));
      m.counter("backupd_volume_ingest_batches_total", "Batches committed to the mirror.", vol,
                total("batches"));
    }
    for (const auto& r : v.volume.replicas) {
      metrics::Labels l = vol;
      l.emplace_back("replica", r.lag.replica);
      m.gauge("backupd_replica_up", "1 while the replica is connected.", l, r.lag.connected);
      m.gauge("backupd_replica_lag_seconds",
              "Age of the oldest change of the volume the replica does not hold yet.", l,
              lag_seconds(r.lag.oldest_ns, now_ms));
      m.gauge("backupd_replica_lag_bytes", "Bytes the replica still lacks.", l,
              static_cast<double>(r.lag.pending_bytes));
      m.gauge("backupd_replica_lag_operations", "Operations the replica still lacks.", l,
              static_cast<double>(r.lag.pending_ops));
    }
  }
  for (const auto& r : registry.hub().replicas()) {
    const metrics::Labels l{{"replica", r.name}};
    m.gauge("backupd_replicator_up", "1 while the replicator is connected.", l, r.connected);
    if (!r.usage.measured) continue;
    m.gauge("backupd_replicator_stored_bytes", "Bytes the replicator holds under its root.", l,
            static_cast<double>(r.usage.stored_bytes));
    m.gauge("backupd_replicator_free_bytes", "Bytes the replicator may still write.", l,
            static_cast<double>(r.usage.free_bytes));
    m.gauge("backupd_replicator_round_trip_seconds",
            "Smoothed round trip to the replicator, as placement weighs it.", l,
            r.usage.rtt_ms / 1e3);
  }
  metrics::add_filesystem_metrics(m, "backupd", state_dir,
                                  "the state directory (mirrors, snapshots, catalog)");
  metrics::add_process_metrics(m);
  return m.text();
}

Result<std::unique_ptr<net::HttpServer>> start_web(const net::HostPort& where, Registry& registry,
                                                   int64_t started_ms, const std::string& state_dir,
                                                   net::HostPort* bound) {
  std::map<std::string, net::HttpServer::Handler> routes;
  routes["/"] = [] { return net::HttpResponse{200, "text/html; charset=utf-8", kWebPage}; };
  routes["/api/status"] = [&registry, started_ms] {
    return net::HttpResponse{200, "application/json",
                             dump_json(status_document(registry, wall_ms(), started_ms))};
  };
  routes["/metrics"] = [&registry, state_dir] {
    return net::HttpResponse{200, metrics::kContentType,
                             metrics_text(registry, wall_ms(), state_dir)};
  };
  return net::HttpServer::start(where, std::move(routes), bound);
}

}  // namespace bkp::server
