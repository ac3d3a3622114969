// The replica side of backupd: ships each volume's changes to one connected replicator.
#pragma once

#include <atomic>
#include <string>

#include "common/net/conn.h"
#include "common/wire/messages.h"
#include "server/catalog.h"
#include "server/drops.h"
#include "server/hub.h"

namespace bkp::server {

constexpr int kReplicaAckTimeoutMs = 30000;
constexpr int kReplicaIdleWaitMs = 50;
// How long a replica may take to answer a Drop: deleting a large tree takes a while.
constexpr int kReplicaDropTimeoutMs = 300000;
// How long a verify waits for each Manifest frame of a replica: with content digests a frame
// can take many files' reading.
constexpr int kReplicaVerifyTimeoutMs = 600000;

// What a replica session sends besides the streams: the replica's drops, and copies of the
// snapshots of its volumes (the newest keep of each, recorded in catalog).
struct ReplicaDuties {
  DropQueue& drops;
  Catalog& catalog;
  size_t keep_snapshots = 10;
};

// Serves one replica connection after its Hello until it fails, closes, or stopping is set:
// the replica's pending drops first (and any queued later, before the next batch), then its
// streams, with its snapshot copies between batches (server/snapshot_copies.h). Logs every
// outcome itself; on an error it sends a kError frame first.
void run_replica_session(net::Conn& conn, const wire::Hello& hello, Hub& hub,
                         const ReplicaDuties& duties, const std::string& peer,
                         const std::atomic<bool>& stopping);

}  // namespace bkp::server
