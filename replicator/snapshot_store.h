// The snapshot copies a replicator keeps, so that a lost backupd does not mean lost backups
// (issue 13): backupd sends each snapshot of a volume placed here as it is written, and the
// replicator keeps the same newest-N rotation.
//
// Layout, beneath ROOT and opened without following any symlink (common/files.h
// open_dir_beneath): ROOT/.snapshots/<host>/<escaped path>/<id>.tgz, beside it <id>.parts (the
// part size, then the SHA-256 of every part in hex, one per line: what a restore checks each
// part against, wherever it fetched it), and ".tmp-<id>.tgz" while one arrives. An archive is
// complete once its .tgz exists under its final name: the .parts file is written (synced)
// first, then the archive is synced and renamed, then the directory synced.
//
// Every part is checked against its digest as it arrives; a mismatch, a short archive or a
// write error fails that one snapshot (SnapshotStored with the errno), never the session, and
// leaves nothing behind.
//
// A transfer cut by the end of a session is kept (its temporary file and the state of its
// checks, in memory): the next inventory of that volume names it with the bytes held, and a
// SnapshotBegin of the same archive at that offset goes on from there, so a cut connection
// does not send a large archive again from its first byte (one kept per volume; any other Begin
// of that volume drops it). The next session may be with another backupd (the volume moved):
// the archive and its digests are the same in the shared snapshot store, and they are what a
// Begin that goes on must match.
//
// Each session receives through its own Intake; the store is shared by all (one session per
// backupd the replicator follows). A volume receives one archive at a time: a Begin for a
// volume another session's Intake is receiving now (two servers both sending it, during a
// move) fails that transfer with EBUSY (SnapshotStored), so two writers never share its
// temporary files or rotate under each other.
//
// Thread-safety: SnapshotStore's methods from any thread; an Intake from its session's thread
// only.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "common/wire/messages.h"

namespace bkp::replicator {

class SnapshotStore {
  struct Incoming;

 public:
  // One session's side of the snapshot frames: begin, data in order, end.
  class Intake {
   public:
    explicit Intake(SnapshotStore& store) : store_(store) {}
    // The session ended: a transfer in progress is kept by the store for the next session.
    ~Intake();
    Intake(const Intake&) = delete;
    Intake& operator=(const Intake&) = delete;

    // Storage failures are kept for end()'s answer; only a transfer out of order (data
    // without begin, a gap) is an error here. A begin at an offset other than 0 goes on with
    // the kept transfer of that archive; when there is none that matches, the data is taken and
    // ignored and end() answers ESTALE.
    void begin(const wire::SnapshotBegin& b);
    Result<void> data(const wire::SnapshotData& d);
    Result<wire::SnapshotStored> end();
    // Drops the transfer in progress: its partial file goes.
    void abort();
    // abort() if the transfer in progress is that volume's; and drops one the store keeps.
    void forget(const std::string& host, const std::string& path);

   private:
    SnapshotStore& store_;
    std::unique_ptr<Incoming> in_;  // the transfer in progress, if any
  };

  explicit SnapshotStore(std::string root);
  ~SnapshotStore();  // kept transfers' partial files go
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // The complete archives held of a volume (host and path validated), oldest first, and the
  // transfer of one of its archives kept from an earlier session, if any.
  Result<wire::SnapshotInventory> inventory(const std::string& host, const std::string& path);
  // Drops the transfer of that volume kept from an earlier session, if any.
  void forget(const std::string& host, const std::string& path);

 private:
  struct Incoming {
    wire::SnapshotBegin begin;
    UniqueFd dir;
    UniqueFd file;
    uint64_t offset = 0;
    size_t checked = 0;  // parts compared with their digests so far
    std::optional<PartHasher> hasher;
    std::optional<Error> error;  // the first failure; the rest of the data is ignored
    bool claimed = false;        // holds the volume in arriving_
  };
  static std::string key(const std::string& host, const std::string& path) {
    return host + ":" + path;
  }
  // A new transfer of b's volume: claims the volume unless another Intake receives it (EBUSY),
  // and takes a kept transfer of it out of the store (returned when b goes on with it, else
  // discarded).
  std::unique_ptr<Incoming> start(const wire::SnapshotBegin& b);
  // The transfer ended or was dropped: its partial file goes and its claim is released.
  void discard(std::unique_ptr<Incoming> in);
  // A transfer cut by its session's end: kept for the next inventory and Begin of its volume.
  void keep(std::unique_ptr<Incoming> in);
  // ROOT/.snapshots/<host>/<escaped path>, created if missing.
  Result<UniqueFd> volume_dir(const std::string& host, const std::string& path);
  // Compares the parts completed since the last call with their digests.
  static void check_parts(Incoming& in);
  static Result<void> finish(Incoming& in);
  // Deletes all but the newest keep archives (and their .parts) in dir.
  static Result<void> rotate(int dir, size_t keep);

  const std::string root_;
  std::mutex mu_;  // leaf; never held across I/O but the unlink of a discarded partial file
  // Guarded by mu_, each by "host:path":
  std::set<std::string> arriving_;                          // volumes an Intake receives now
  std::map<std::string, std::unique_ptr<Incoming>> kept_;  // cut transfers, one per volume
};

}  // namespace bkp::replicator
