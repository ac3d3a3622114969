// Trees: the replica trees under ROOT, one per volume, shared by the sessions with every backupd
// the replicator follows (one session per --server at a time, each on its own thread).
//
// A volume is served by one backupd at a time (its lease, server/leases.h), but it moves when its
// server dies or is cut off, and the session with the old server may not have noticed yet (a
// peer that vanished leaves recv waiting until TCP keepalive gives up). So each tree records the
// session that selected it last, and a Select from another session *takes* the tree: the newer
// Select is the server that holds the lease now, while the old session may never end by itself.
// The old session's next frame of that volume fails ("moved"), which ends that session; its
// reconnect resumes its other volumes where their positions stand. Refusing the new Select
// until the old session lets go was rejected: it could wait forever on a dead peer, and the
// refusal would end the new server's whole session, stalling every other volume it serves.
// Either way one Applier writes a tree at a time: each frame is applied under the tree's lock,
// and the receiver's position (on disk) tells the new server's stream where the tree stands
// (a stream it does not know reconciles first, so a batch the old session left half applied
// costs a reconcile, never a wrong tree).
//
// Trees are opened on first Select and kept open until backupd drops the volume (an Applier
// carries a baseline in progress across reconnects). Each stream's position is on disk, so a
// restarted replicator resumes where it stood; only a stream backupd rebuilt (its restart, or a
// volume that moved to another server) or one interrupted inside a baseline starts over.
// Layout: ROOT/<host>/<path without leading '/'>, ROOT/.ids/<host>/<escaped path> and
// ROOT/.state/<host>/<escaped path>/{state,position}.
//
// Thread-safety: every method may be called from any session thread. Lock order: mu_ (the map)
// is a leaf, never held while a tree's lock is taken; a tree's lock is never held with another's.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/changes/applier.h"
#include "common/changes/transfer_progress.h"
#include "common/progress.h"
#include "common/result.h"
#include "common/stream/receiver.h"
#include "common/wire/messages.h"
#include "replicator/monitor.h"

namespace bkp::replicator {

// One volume's replica: its Applier, the stream's durable position, and the progress of what
// backupd sends into it, shown (meter, named after the server whose stream fills it) and
// counted (counters).
struct Tree {
  std::unique_ptr<changes::Applier> applier;
  std::unique_ptr<stream::Receiver> receiver;  // over *applier
  std::string server;                          // "ADDR:PORT" the meter names
  std::shared_ptr<progress::Meter> meter;
  changes::ReceiveProgress progress;
  TreeCounters* counters;  // owned by the Monitor
};

class Trees {
 private:
  struct Slot;

 public:
  // A session's handle on the tree it selected; valid as long as the Trees.
  using Selected = Slot*;

  // One frame's hold on a tree: no other session touches the tree while it lives.
  class Use {
   public:
    Tree* operator->() const { return tree_; }

   private:
    friend class Trees;
    Use(std::unique_lock<std::mutex> lock, Tree* tree) : lock_(std::move(lock)), tree_(tree) {}
    std::unique_lock<std::mutex> lock_;
    Tree* tree_;
  };

  // display, if given, shows each tree's progress; monitor counts what each receives. Both
  // must outlive the Trees.
  Trees(std::string root, progress::Display* display, Monitor& monitor)
      : root_(std::move(root)), display_(display), monitor_(monitor) {}

  // backupd's Select (host and path validated) on the session numbered `session` with `server`:
  // the volume's tree, opened if it is not, held by that session from now on (taken from
  // another session that held it, logged as a move). Waits for a frame another session is
  // applying to it.
  Result<Selected> select(const std::string& host, const std::string& path, uint64_t session,
                          const std::string& server);
  // The selected tree for one frame of `session`. ESTALE, saying so (the caller names the
  // volume), if another session took it since (the volume moved) or backupd dropped it.
  Result<Use> use(Selected selected, uint64_t session);
  // backupd's Drop (host and path validated): closes the volume's tree, releasing every
  // descriptor of it (a session that held it gets ESTALE from use()); with purge also deletes
  // the tree, its id links and its stream state (state first, so a purge cut short never leaves
  // a position vouching for half a tree), each beneath ROOT without following a symlink, and
  // then their host directories if empty. A volume this replicator does not hold is already
  // dropped.
  Result<void> drop(const wire::Drop& drop);
  // The session ended: the trees it held are held by nobody, their transfers shown as stopped.
  void release(uint64_t session);

 private:
  struct Slot {
    Slot(std::string h, std::string p) : host(std::move(h)), path(std::move(p)) {}
    const std::string host, path;
    std::mutex mu;               // held while a frame is applied to the tree, or it opens/closes
    std::unique_ptr<Tree> tree;  // guarded by mu; null while closed
    uint64_t session = 0;        // guarded by mu: the session that selected it last; 0: none
    std::string server;          // guarded by mu: that session's server
  };

  // The volume's slot, made on first use; slots live as long as the Trees.
  Slot& slot(const std::string& host, const std::string& path);
  Result<std::unique_ptr<Tree>> open(const std::string& host, const std::string& path,
                                     const std::string& server);
  // A meter (shown by the display) for the volume's progress from server.
  std::shared_ptr<progress::Meter> meter(const std::string& host, const std::string& path,
                                         const std::string& server);
  // Deletes ROOT/<base>/<host>/<escaped path> (base "": ROOT/<host>/...), then the host's
  // directory if that left it empty.
  Result<void> remove_beneath(int root_fd, const std::string& base, const std::string& host,
                              const std::string& path);

  const std::string root_;
  progress::Display* const display_;
  Monitor& monitor_;
  std::mutex mu_;  // leaf: guards the map only
  std::map<std::string, std::unique_ptr<Slot>> slots_;  // by "host:path"; guarded by mu_
};

}  // namespace bkp::replicator
