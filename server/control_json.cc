// JSON of the control protocol (see control_json.h). Kept apart from the session loop so the
// wire shapes live in one place and read like the table in docs/PROTOCOL.md.
//
// Conventions: times are UTC ISO 8601 with second precision; a value that does not exist yet
// is null (a run's snapshot, an error, a volume's last run), never an empty string; counters
// are integers; lag_seconds is a number with millisecond precision.
#include "server/control_json.h"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

namespace bkp::server {
namespace {

json opt(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

json opt_text(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }


const char* type_name(const json& v) {
  return v.is_string() ? "a string" : v.is_boolean() ? "a boolean"
       : v.is_number_float() ? "a fractional number" : v.is_number() ? "a number"
       : v.is_null() ? "null" : v.is_array() ? "an array" : "an object";
}

}  // namespace

ControlResult<std::string> RequestArgs::string(const char* key) const {
  auto it = j_.find(key);
  if (it == j_.end()) return control_fail(Fault::kBadRequest, fmt::format("missing field '{}'", key));
  if (!it->is_string()) {
    return control_fail(Fault::kBadRequest,
                        fmt::format("field '{}' must be a string, not {}", key, type_name(*it)));
  }
  return it->get_ref<const std::string&>();
}

ControlResult<std::string> RequestArgs::string_or(const char* key, std::string fallback) const {
  if (!j_.contains(key) || j_.at(key).is_null()) return fallback;
  return string(key);
}

ControlResult<int64_t> RequestArgs::integer(const char* key) const {
  auto it = j_.find(key);
  if (it == j_.end()) return control_fail(Fault::kBadRequest, fmt::format("missing field '{}'", key));
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return control_fail(Fault::kBadRequest, fmt::format("field '{}' is out of range", key));
    }
    return it->get<int64_t>();
  }
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return control_fail(Fault::kBadRequest,
                      fmt::format("field '{}' must be an integer, not {}", key, type_name(*it)));
}

ControlResult<int64_t> RequestArgs::integer_or(const char* key, int64_t fallback) const {
  if (!j_.contains(key) || j_.at(key).is_null()) return fallback;
  return integer(key);
}

bool RequestArgs::has(const char* key) const {
  auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

ControlResult<bool> RequestArgs::boolean_or(const char* key, bool fallback) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return control_fail(Fault::kBadRequest,
                        fmt::format("field '{}' must be true or false, not {}", key, type_name(*it)));
  }
  return it->get<bool>();
}

json run_json(const RunRecord& run) {
  return json{
      {"id", run.id},
      {"started_at", iso_time(run.started_at)},
      {"ended_at", iso_time(run.ended_at)},
      {"status", run_status_name(run.status)},
      {"snapshot", opt(run.snapshot)},
      {"snapshot_bytes", run.snapshot_bytes},
      {"duration_ms", run.duration_ms},
      {"changed_bytes", run.changed_bytes},
      {"changed_files", run.changed_files},
      // A written run's note is what its archive does not hold (RunRecord::error).
      {"error", run.status == RunStatus::kWritten ? json(nullptr) : opt(run.error)},
      {"warnings", run.status == RunStatus::kWritten ? opt(run.error) : json(nullptr)},
  };
}

json snapshot_json(const SnapshotRecord& snap) {
  json holders = json::array({"backupd"});
  for (const auto& r : snap.copies) holders.push_back(r);
  return json{
      {"id", snap.id},
      {"name", snap.id + ".tgz"},
      {"created_at", iso_time(snap.created_at)},
      {"bytes", snap.bytes},
      {"part_size", snap.part_size},
      {"parts", snap.digests.size()},
      {"holders", std::move(holders)},
  };
}

json sources_json(Hub& hub, const std::vector<std::string>& replica_names) {
  json out = json::array();
  for (const auto& r : hub.replicas()) {
    if (r.usage.restore_address.empty() || r.usage.identity.empty()) continue;
    if (std::find(replica_names.begin(), replica_names.end(), r.name) == replica_names.end()) {
      continue;
    }
    out.push_back(json{{"name", r.name},
                       {"address", r.usage.restore_address},
                       {"id", r.usage.identity}});
  }
  return out;
}

json volume_json(const VolumeView& v, int64_t now_ms) {
  int64_t lag_ops = 0, lag_bytes = 0;
  double lag = 0;
  if (v.node_status) {
    const wire::NodeStatus& s = v.node_status->status;
    lag_ops = static_cast<int64_t>(s.pending_ops);
    lag_bytes = static_cast<int64_t>(s.pending_bytes);
    lag = lag_seconds(s.oldest_ns, now_ms);
  }
  return json{
      {"host", v.reg.host},
      {"address", v.reg.address},
      {"port", v.reg.port},
      {"path", v.reg.path},
      {"node_id", v.reg.node_id},
      {"every_seconds", v.reg.every_seconds},
      {"registered_at", iso_time(v.reg.registered_at)},
      {"connected", v.served_here ? json(v.link.connected) : json(nullptr)},
      {"served_by", v.served_by ? json(*v.served_by) : json(nullptr)},
      {"last_error", opt(v.link.last_error)},
      {"lag_ops", lag_ops},
      {"lag_bytes", lag_bytes},
      {"lag_seconds", lag},
      {"lag_updated_at", v.node_status ? json(iso_time(v.node_status->received_ms)) : json(nullptr)},
      {"last_run", v.last_run ? run_json(*v.last_run) : json(nullptr)},
      {"next_run", v.next_run ? json(iso_time(*v.next_run)) : json(nullptr)},
      {"copies", copies_json(v)},
      {"copies_wanted", v.copies_wanted},
      {"copies_current", current_copies(v)},
      {"under_replicated", under_replicated(v)},
  };
}

json copies_json(const VolumeView& v) {
  json copies = json::array();
  copies.push_back({{"name", "mirror"}, {"state", copy_state_name(mirror_state(v))}});
  for (const auto& r : v.replicas) {
    copies.push_back({{"name", r.lag.replica}, {"state", copy_state_name(r.state)}});
  }
  return copies;
}

json transfer_json(const progress::View& t) {
  if (!t.active) return nullptr;
  return json{
      {"phase", t.phase},
      {"percent", t.percent()},
      {"done_bytes", t.done_bytes},
      {"total_bytes", t.total_bytes},
      {"files_left", t.pending_files},
      {"file", opt_text(t.file)},
      {"rate_bytes_per_second", std::round(t.rate())},
      {"elapsed_seconds", std::round(t.elapsed_s * 1000) / 1000},
  };
}

json replica_json(const ReplicaStatus& r, int64_t now_ms) {
  const ReplicaLag& lag = r.lag;
  return json{
      {"name", lag.replica},
      {"connected", lag.connected},
      {"state", copy_state_name(r.state)},
      {"lag_ops", lag.pending_ops},
      {"lag_bytes", lag.pending_bytes},
      {"lag_files", lag.pending_files},
      {"lag_seconds", lag_seconds(lag.oldest_ns, now_ms)},
      {"transfer", transfer_json(lag.transfer)},
      {"last_error", r.last_error ? json(r.last_error->message) : json(nullptr)},
      {"last_error_at", r.last_error ? json(iso_time(r.last_error->at_ms)) : json(nullptr)},
  };
}

json status_json(const StatusView& v, const std::optional<SnapshotRecord>& last_snapshot,
                 int64_t now_ms) {
  json j = volume_json(v.volume, now_ms);
  const auto& sample = v.volume.node_status;
  j["lag_files"] = sample ? sample->status.pending_files : 0;
  // What the node last said it was shipping is stale once the link is down.
  j["current_file"] = sample && v.volume.link.connected ? opt_text(sample->status.current_file)
                                                         : json(nullptr);
  j["transfer"] = transfer_json(v.ingest);
  json replicas = json::array();
  for (const auto& r : v.volume.replicas) replicas.push_back(replica_json(r, now_ms));
  j["replicas"] = std::move(replicas);
  j["last_snapshot"] = last_snapshot ? snapshot_json(*last_snapshot) : json(nullptr);
  return j;
}

json replicators_json(Hub& hub) {
  std::map<std::string, size_t> copies;
  for (const auto& v : hub.all_volumes()) {
    for (const auto& name : hub.placement(v->name())) ++copies[name];
  }
  json out = json::array();
  for (const auto& r : hub.replicas()) {
    out.push_back(json{{"name", r.name},
                       {"connected", r.connected},
                       {"measured", r.usage.measured},
                       {"stored_bytes", r.usage.stored_bytes},
                       {"free_bytes", r.usage.free_bytes},
                       {"round_trip_ms", std::round(r.usage.rtt_ms * 1000) / 1000},
                       {"copies", copies[r.name]},
                       {"restore_address", r.usage.restore_address}});
  }
  return out;
}

json peer_json(const PeerRecord& peer) {
  return json{{"id", peer.id}, {"name", opt_text(peer.name)}, {"added_at", iso_time(peer.added_at)}};
}

json pending_replica_json(const PendingReplica& p) {
  return json{{"id", p.id},
              {"name", p.name},
              {"address", p.address},
              {"last_seen_at", iso_time(p.last_seen_ms)},
              {"attempts", p.attempts}};
}

json error_json(const ControlError& e) {
  return json{{"ok", false}, {"code", fault_code(e.fault)}, {"error", e.message}};
}

std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace bkp::server
