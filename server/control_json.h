// JSON shapes of the control protocol (docs/PROTOCOL.md "Control"): reading request fields
// with clear bad_request errors, and writing VOLUME, STATUS, TRANSFER, RUN, SNAPSHOT, PEER and
// PENDING objects.
//
// Nothing here throws: fields are type-checked before they are read, and dump() replaces
// invalid UTF-8 instead of throwing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/progress.h"
#include "server/catalog.h"
#include "server/peer_gate.h"
#include "server/registry.h"

namespace bkp::server {

using json = nlohmann::json;

using bkp::iso_time;     // common/clock.h
using bkp::lag_seconds;  // common/clock.h

// Field access on a request object; errors are bad_request naming the field.
class RequestArgs {
 public:
  explicit RequestArgs(const json& request) : j_(request) {}
  ControlResult<std::string> string(const char* key) const;
  ControlResult<std::string> string_or(const char* key, std::string fallback) const;
  ControlResult<int64_t> integer(const char* key) const;
  ControlResult<int64_t> integer_or(const char* key, int64_t fallback) const;
  ControlResult<bool> boolean_or(const char* key, bool fallback) const;
  // Whether the request has the field with a non-null value.
  bool has(const char* key) const;

 private:
  const json& j_;
};

json run_json(const RunRecord& run);
// bytes: size of the file on disk.
json snapshot_json(const SnapshotRecord& snap);
// SOURCES of a restore header: [{"name", "address", "id"}] of the named replicas that told
// backupd where they serve their snapshot copies, so bkptool can fetch parts from them too.
json sources_json(Hub& hub, const std::vector<std::string>& replica_names);
// COPIES: [{"name": "mirror" | replica, "state": "current" | "catching up" | "missing"}].
json copies_json(const VolumeView& view);
json volume_json(const VolumeView& view, int64_t now_ms);
// A VOLUME with the live fields of STATUS; last_snapshot: the newest snapshot still on disk.
json status_json(const StatusView& view, const std::optional<SnapshotRecord>& last_snapshot,
                 int64_t now_ms);
// A replica's entry in STATUS "replicas": its lag, transfer and last error.
json replica_json(const ReplicaStatus& replica, int64_t now_ms);
// A TRANSFER object for a running episode; null for one that is not active.
json transfer_json(const progress::View& transfer);

// REPLICATORS: every replicator seen since start with what placement weighs:
// [{"name","connected","measured","stored_bytes","free_bytes","round_trip_ms","copies"}]
// (copies: how many volumes' copies are placed on it).
json replicators_json(Hub& hub);

// An authorised replica or operator: {"id","name"|null,"added_at"}.
json peer_json(const PeerRecord& peer);
// A replicator waiting for authorisation: {"id","name","address","last_seen_at","attempts"}.
json pending_replica_json(const PendingReplica& pending);

json error_json(const ControlError& e);

// Serialises without ever throwing (invalid UTF-8 is replaced).
std::string dump_json(const json& j);

}  // namespace bkp::server
