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
// does not send a large archive again from its first byte. Any other Begin drops it.
//
// Not thread-safe: the session thread only.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "common/wire/messages.h"

namespace bkp::replicator {

class SnapshotStore {
 public:
  explicit SnapshotStore(std::string root) : root_(std::move(root)) {}
  ~SnapshotStore() { abort(); }
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // The complete archives held of a volume (host and path validated), oldest first, and the
  // transfer of one of its archives kept from an earlier session, if any.
  Result<wire::SnapshotInventory> inventory(const std::string& host, const std::string& path);

  // One transfer: begin, data in order, end. Storage failures are kept for end()'s answer;
  // only a transfer out of order (data without begin, a gap) is an error here. A begin at an
  // offset other than 0 goes on with the kept transfer of that archive; when there is none
  // that matches, the data is taken and ignored and end() answers ESTALE.
  void begin(const wire::SnapshotBegin& b);
  Result<void> data(const wire::SnapshotData& d);
  Result<wire::SnapshotStored> end();
  // Drops a transfer in progress: its partial file goes.
  void abort();
  // abort() if the transfer in progress is of that volume's.
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
  };
  // ROOT/.snapshots/<host>/<escaped path>, created if missing.
  Result<UniqueFd> volume_dir(const std::string& host, const std::string& path);
  // Compares the parts completed since the last call with their digests.
  void check_parts(Incoming& in);
  Result<void> finish(Incoming& in);
  // Deletes all but the newest keep archives (and their .parts) in dir.
  Result<void> rotate(int dir, size_t keep);

  std::string root_;
  std::optional<Incoming> in_;
};

}  // namespace bkp::replicator
