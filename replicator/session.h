// One connection of the replicator to backupd: handshake, then apply what the server ships.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/changes/applier.h"
#include "common/changes/transfer_progress.h"
#include "common/net/conn.h"
#include "common/net/socket.h"
#include "common/progress.h"
#include "common/result.h"
#include "common/stream/receiver.h"
#include "replicator/snapshot_store.h"
#include "replicator/usage.h"
#include "replicator/monitor.h"
#include "common/wire/messages.h"

namespace bkp::replicator {

constexpr int kHelloOkTimeoutMs = 10000;

// One volume's replica: its Applier, the stream's durable position, and the progress of what
// backupd sends into it, shown (meter) and counted (counters).
struct Tree {
  std::unique_ptr<changes::Applier> applier;
  std::unique_ptr<stream::Receiver> receiver;  // over *applier
  std::shared_ptr<progress::Meter> meter;
  changes::ReceiveProgress progress;
  TreeCounters* counters;  // owned by the Monitor
};

// The replica trees under ROOT, one per volume, opened on first Select and kept open until
// backupd drops the volume (an Applier carries a baseline in progress across reconnects). Each
// stream's position is on disk, so a restarted replicator resumes where it stood; only a stream
// backupd rebuilt (its restart) or one interrupted inside a baseline starts over.
// Layout: ROOT/<host>/<path without leading '/'>, ROOT/.ids/<host>/<escaped path> and
// ROOT/.state/<host>/<escaped path>/{state,position}.
class Trees {
 public:
  // display, if given, shows each tree's progress; monitor counts what each receives. Both
  // must outlive the Trees.
  Trees(std::string root, progress::Display* display, Monitor& monitor)
      : root_(std::move(root)), display_(display), monitor_(monitor) {}
  // host and path must be validated.
  Result<Tree*> open(const std::string& host, const std::string& path);
  // backupd's Drop (host and path validated): closes the volume's tree, releasing every
  // descriptor of it; with purge also deletes the tree, its id links and its stream state
  // (state first, so a purge cut short never leaves a position vouching for half a tree), each
  // beneath ROOT without following a symlink, and then their host directories if empty. A
  // volume this replicator does not hold is already dropped.
  Result<void> drop(const wire::Drop& drop);
  // The session ended: transfers still running show as stopped.
  void interrupt_all();

 private:
  // Deletes ROOT/<base>/<host>/<escaped path> (base "": ROOT/<host>/...), then the host's
  // directory if that left it empty.
  Result<void> remove_beneath(int root_fd, const std::string& base, const std::string& host,
                              const std::string& path);

  std::string root_;
  progress::Display* display_;
  Monitor& monitor_;
  std::map<std::string, std::unique_ptr<Tree>> trees_;  // by "host:path"
};

struct SessionEnd {
  Error error;           // why the session ended (ECONNRESET when the server closed)
  bool welcomed = false; // the server answered the Hello with HelloOk
  uint64_t acked = 0;    // batches acknowledged during the session
};

// What a session works on, kept by the replicator across sessions.
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
// connection ends. Apply errors are sent to the server as kError before returning.
SessionEnd run_session(net::Conn& conn, const std::string& name, uint64_t instance,
                       const Holdings& holdings);

}  // namespace bkp::replicator
