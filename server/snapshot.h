// Snapshot files: one gzip-compressed tar (pax) per scheduled run of a volume, written from the
// mirror with libarchive.
//
// Atomicity (DESIGN.md invariant 5): the archive is written to ".tmp-<name>" in the snapshots
// directory, fsynced, renamed to its final name and the directory fsynced, so a file under a
// final name is always complete and durable. Leftover ".tmp-*" files are the remains of an
// interrupted run (kill -9, power loss) and are removed at startup.
//
// Names are UTC timestamps with milliseconds, "20261126T010203.123Z.tgz", so name order is time
// order; the id of a snapshot is its name without ".tgz".
//
// Consistency is the caller's job: it must keep the tree still (backupd holds the volume's
// mutex at a batch boundary) while write_snapshot() runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace bkp::server {

struct SnapshotFile {
  std::string id;    // "20261126T010203.123Z"
  std::string name;  // id + ".tgz"
  uint64_t bytes = 0;
  uint64_t files = 0;       // regular files archived
  uint64_t data_bytes = 0;  // their total size before compression
  // What the archive does not hold, one line for all ("" if nothing): sockets, which no tar
  // format can hold (counted, the first few named), and entries libarchive refused, by name.
  std::string warnings;
};

// "20261126T010203.123Z" for a CLOCK_REALTIME instant in milliseconds.
std::string snapshot_id_for(int64_t unix_ms);

// Archives the tree at tree_fd (an O_RDONLY or O_PATH directory fd) into snapshots_dir/<id>.tgz.
// Never follows symlinks; keeps hard links, symlinks, fifos, devices, modes, owners, mtimes,
// user.* xattrs and holes (a sparse map per file with holes: only data regions are stored and
// nothing in a hole is read); skips sockets and any entry the format refuses, which SnapshotFile::warnings
// then names (the run is still written). gzip_level 1..9. When cancel is given and becomes true, the write stops at the next
// entry or 1 MiB block with ECANCELED "cancelled", leaving no file behind.
Result<SnapshotFile> write_snapshot(int tree_fd, const std::string& snapshots_dir,
                                    const std::string& id, int gzip_level,
                                    const std::atomic<bool>* cancel = nullptr);

// Snapshots present in the directory, newest first.
Result<std::vector<SnapshotFile>> list_snapshots(const std::string& snapshots_dir);

// Deletes all but the newest `keep`; returns the ids deleted.
Result<std::vector<std::string>> rotate_snapshots(const std::string& snapshots_dir, size_t keep);

// Deletes ".tmp-*" leftovers of interrupted writes; returns how many.
size_t remove_partial_snapshots(const std::string& snapshots_dir);

}  // namespace bkp::server
