// Snapshot copies on replicas (issue 13): every snapshot backupd keeps of a volume is also sent
// to each replica the volume is placed on, which keeps the same newest-N rotation
// (replicator/snapshot_store.h), so the archives outlive backupd's disk.
//
// One SnapshotShipper per replica session, driven between batches by the session thread:
//   - once per volume and connection it asks the replica which snapshots it holds
//     (SnapshotInventoryRequest), and records that in the catalog's snapshot_copies;
//   - whenever the volume's snapshots changed (Volume::snapshot_epoch) it lists the ones the
//     catalog has on disk, newest first, up to keep, and queues those the replica lacks;
//   - it sends one at a time, SnapshotBegin (size, part digests: computed from the file if the
//     catalog has none) then SnapshotData, at most kSnapshotSlice bytes per step so the live
//     stream's batches go between slices, then SnapshotEnd, and records the copy when the
//     replica answers SnapshotStored with success.
// A replica that cannot store one (its disk is full, a part arrived damaged) says why; that
// snapshot is not offered again on this connection. An archive rotated away on backupd before
// it was sent is skipped. An interrupted transfer goes on at the next connection from the bytes
// the replica kept of it (its inventory names them), else it starts over.
//
// Not thread-safe: the replica session's thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/net/conn.h"
#include "common/result.h"
#include "common/byte_source.h"
#include "server/catalog.h"
#include "server/hub.h"

namespace bkp::server {

constexpr uint64_t kSnapshotSlice = uint64_t{8} << 20;
constexpr int kSnapshotStoredTimeoutMs = 120000;  // the replica syncs the whole archive

class SnapshotShipper {
 public:
  // keep: how many of the newest snapshots of each volume a replica keeps.
  SnapshotShipper(net::Conn& conn, Catalog& catalog, Replica& replica, size_t keep)
      : conn_(conn), catalog_(catalog), replica_(replica), keep_(keep) {}

  // One step for the volumes of these streams: an inventory, one slice of the transfer in
  // progress, or the start of the next one. False when there was nothing to do.
  Result<bool> step(const std::vector<std::shared_ptr<ReplicaStream>>& streams);

 private:
  struct VolumeCopies {
    bool inventoried = false;
    uint64_t epoch_seen = UINT64_MAX;
    std::set<std::string> held;     // by the replica, as it said or since it stored them
    std::set<std::string> refused;  // it could not store them (this connection)
    std::deque<SnapshotRecord> missing;  // newest first
    // A transfer the replica kept from an earlier connection: sent from partial_bytes on.
    std::string partial_id;
    uint64_t partial_bytes = 0;
  };
  struct Transfer {
    std::shared_ptr<Volume> volume;
    std::string id;
    std::unique_ptr<ByteSource> file;  // the archive, open since the transfer began
    uint64_t bytes = 0;
    uint64_t offset = 0;
  };

  Result<void> inventory(Volume& v, VolumeCopies& copies);
  void find_missing(Volume& v, VolumeCopies& copies);
  // Sends SnapshotBegin for the next missing archive that is still on disk; false if none.
  Result<bool> begin_next(const std::shared_ptr<Volume>& v, VolumeCopies& copies);
  Result<void> send_slice();

  net::Conn& conn_;
  Catalog& catalog_;
  Replica& replica_;
  const size_t keep_;
  std::map<std::string, VolumeCopies> volumes_;  // by volume name
  std::optional<Transfer> transfer_;
};

}  // namespace bkp::server
