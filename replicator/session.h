// One connection of the replicator to backupd: handshake, then apply what the server ships.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/net/conn.h"
#include "common/net/socket.h"
#include "common/result.h"
#include "replicator/monitor.h"
#include "replicator/snapshot_store.h"
#include "replicator/trees.h"
#include "replicator/usage.h"

namespace bkp::replicator {

constexpr int kHelloOkTimeoutMs = 10000;

struct SessionEnd {
  Error error;           // why the session ended (ECONNRESET when the server closed)
  bool welcomed = false; // the server answered the Hello with HelloOk
  uint64_t acked = 0;    // batches acknowledged during the session
};

// What a session works on, kept by the replicator across sessions and shared by the sessions
// with every server it follows (each is safe to share: see its header).
struct Holdings {
  Trees& trees;
  UsageMeter& usage;         // answers UsageRequest
  SnapshotStore& snapshots;  // receives snapshot copies
  Monitor& monitor;          // told when a session begins (HelloOk) and ends
  // Where the restore service listens (restore_service.h), told to backupd with each Usage;
  // nullopt: it does not. A wildcard host is replaced by this end of the session's connection.
  std::optional<net::HostPort> restore_service;
};

// Sends Hello{kReplica, name, instance}, expects HelloOk, then applies frames until the
// connection ends. Apply errors are sent to the server as kError before returning. server
// ("ADDR:PORT" as given with --server) names the peer in the log, the display and the Monitor.
// Sessions with different servers may run at once on their own threads.
SessionEnd run_session(net::Conn& conn, const std::string& server, const std::string& name,
                       uint64_t instance, const Holdings& holdings);

}  // namespace bkp::replicator
