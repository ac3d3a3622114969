// DropQueue: the copies each replica must give up, kept until the replica confirms.
//
// When a volume is unregistered every replica closes its copy (no descriptor of it stays open)
// and, with --purge, deletes it; placement will drop a copy that moved to another replica the
// same way. Each drop is one (replica, volume) row in the catalog, so a replicator that is away
// when the drop is queued, or a backupd restarted before it was delivered, loses nothing: the
// replica's session sends its pending drops (wire Drop) before anything else each time it
// connects, and forgets each one the replica answers as done (wire Dropped). A drop the
// replica could not carry out stays queued for its next connection, with the replica's reason.
//
// Rejected: the replicator asking, at each connection, for the list of volumes it should hold
// and dropping the rest. Deleting by absence would turn a backupd whose catalog was lost or
// reset, or a replicator pointed at another backupd, into one that wipes every copy it has,
// and the copies are the last line of defence; a list also cannot tell a purge from a close.
//
// Which replicas get a drop: every replica name that ever connected (kept in the catalog),
// since any of them may hold a copy; one that holds none answers at once.
//
// Thread-safety: every method is safe from any thread. Lock order: DropQueue::mu_ -> the
// catalog's mutex (a leaf); never held while calling anything else.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "server/catalog.h"

namespace bkp::server {

enum class Purge { kNo, kYes };

// One copy a replica must still give up.
struct PendingDrop {
  std::string host, path;
  Purge purge = Purge::kNo;
  // The replica's answer when it could not (its error text); empty while unanswered. Cleared
  // when the drop is queued again.
  std::string error;
};

class DropQueue {
 public:
  explicit DropQueue(Catalog& catalog) : catalog_(catalog) {}

  // Reads the known replicas and the pending drops from the catalog (once, at startup).
  Result<void> load();
  // A replica connected under this name: it may hold copies from now on, so it gets every
  // later drop. Durable before it returns; cheap for a name already known.
  Result<void> note_replica(const std::string& name);
  // Queues a drop of host:path for every known replica (durably, in one transaction); a purge
  // replaces a plain drop still pending. Returns those replicas, sorted.
  Result<std::vector<std::string>> queue(const std::string& host, const std::string& path,
                                         Purge purge);
  // Queues a drop of host:path for one replica (a copy placed elsewhere now), the same way.
  Result<void> queue_one(const std::string& replica, const std::string& host,
                         const std::string& path, Purge purge);
  // The replica's pending drops, by volume.
  std::vector<PendingDrop> pending(const std::string& replica);
  // The replica carried out `drop` as sent: forgotten (durably), unless a purge of the same
  // copy was queued after a plain drop was sent; then the purge stays pending.
  Result<void> done(const std::string& replica, const PendingDrop& drop);
  // The replica could not: the drop stays pending, and waiters learn why.
  void failed(const std::string& replica, const PendingDrop& drop, std::string error);
  // Waits until every one of `replicas` has answered its drop of host:path (done or failed), or
  // until timeout. Returns, by replica, the drop still pending (error empty: unanswered), or
  // nullopt for one that is done.
  std::map<std::string, std::optional<PendingDrop>> wait(const std::string& host,
                                                         const std::string& path,
                                                         const std::set<std::string>& replicas,
                                                         std::chrono::milliseconds timeout);

 private:
  using Key = std::pair<std::string, std::string>;  // host, path
  // Queues the drop for replicas, durably first (mu_ held).
  Result<void> add(const std::vector<std::string>& replicas, const std::string& host,
                   const std::string& path, Purge purge);
  std::optional<PendingDrop> find(const std::string& replica, const Key& key);  // mu_ held

  Catalog& catalog_;
  std::mutex mu_;
  std::condition_variable answered_;  // a drop was done or failed
  // Guarded by mu_.
  std::set<std::string> replicas_;
  std::map<std::string, std::map<Key, PendingDrop>> pending_;  // by replica
};

}  // namespace bkp::server
