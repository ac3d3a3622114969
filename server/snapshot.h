// Snapshot files: one gzip-compressed tar (pax) per scheduled run of a volume, written from the
// mirror with libarchive. The gzip is a series of members of 1 MiB of tar each, compressed on
// every core (server/gzip_members.h); any gzip reader reads it as one stream.
//
// Where the archive goes is an ArchiveStore (server/archive_store.h), a directory or an S3
// bucket; the store makes it visible only once complete and durable (DESIGN.md invariant 5).
//
// Names are UTC timestamps with milliseconds, "20261126T010203.123Z.tgz", so name order is time
// order; the id of a snapshot is its name without ".tgz".
//
// Consistency comes from the Cut (server/cut.h): the archive holds the names and bytes of the
// tree as they were when the cut was taken, whatever changed in the tree since.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/part_digests.h"
#include "common/result.h"
#include "server/archive_store.h"
#include "server/cut.h"

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
  std::vector<PartDigest> digests;  // of every kPartSize bytes of the file, as written
};

// "20261126T010203.123Z" for a CLOCK_REALTIME instant in milliseconds, and back (nullopt for
// anything snapshot_id_for would not make).
std::string snapshot_id_for(int64_t unix_ms);
std::optional<int64_t> snapshot_id_ms(std::string_view id);

struct ArchiveOptions {
  int gzip_level = 1;  // 1..9
  unsigned gzip_threads = 0;  // compressing threads; 0: one per online CPU
  // When given and it becomes true, the write stops at the next entry or 1 MiB block with
  // ECANCELED "cancelled", leaving no file behind.
  const std::atomic<bool>* cancel = nullptr;
  // Test seam (backupd's BACKUPD_TEST_ARCHIVE_DELAY_MS): a pause before each entry, so a test
  // can change the tree while its archive is being written. Zero otherwise.
  std::chrono::milliseconds entry_delay{0};
};

// Archives the tree of the cut into the store as <id>.tgz. Keeps hard links, symlinks, fifos,
// devices, modes, owners, mtimes, xattrs (file capabilities and ACLs too) and holes (a sparse map per file with holes:
// only data regions are stored and nothing in a hole is read); skips sockets and any entry the
// format refuses, which SnapshotFile::warnings then names (the run is still written). Fails
// with the cut's failure() as soon as it has one (the archive could not be the cut), leaving
// nothing in the store.
Result<SnapshotFile> write_snapshot(Cut& cut, ArchiveStore& store, const std::string& id,
                                    const ArchiveOptions& options);

}  // namespace bkp::server
