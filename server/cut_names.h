// The names of a tree at a snapshot's cut: every entry with everything the archive holds of it
// except a regular file's bytes (path, stat, symlink target, xattrs, FileId), walked
// once while the tree holds still and kept in a file in the run's scratch area, so the archive
// can be written later from these names while the tree moves on (server/cut.h).
//
// Why a file and not a vector: a volume of a million entries would hold a few hundred MiB in
// memory for the whole run; the file is written and read once, front to back, with one buffer.
// The format is private to one run of one process (native byte order, raw struct stat): a
// record is the path, the stat, the id, the symlink target and the xattrs, each string with a
// 32-bit length.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <string>

#include "common/changes/applier.h"
#include "common/changes/xattrs.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::server {

// One entry of the tree at the cut.
struct CutEntry {
  std::string path;        // volume-relative; "" is the root
  struct stat st {};       // lstat at the cut
  uint64_t id = 0;         // a regular file's FileId (its ids/ link), 0 if it has none
  int64_t source_ctime = 0;  // the source ctime its content matched at the cut (0: unknown)
  std::string target;      // a symlink's target
  changes::Xattrs xattrs;  // every readable attribute (none for sockets, which no archive holds)
};

// Appends CutEntry records to a file through one buffer. Not thread-safe.
class NameWriter {
 public:
  explicit NameWriter(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<void> add(const CutEntry& e);
  // Writes what is buffered; the file is complete after it.
  Result<void> finish();

 private:
  Result<void> flush();

  UniqueFd fd_;
  std::string buf_;
};

// Reads the records back in the order they were written. Not thread-safe.
class NameReader {
 public:
  explicit NameReader(UniqueFd fd) : fd_(std::move(fd)) {}
  // The next record into e; false after the last one. A torn record is EIO.
  Result<bool> next(CutEntry& e);

 private:
  // Makes n bytes available at buf_[pos_]; false at the end of the file before any of them.
  Result<bool> need(size_t n);

  UniqueFd fd_;
  std::string buf_;
  size_t pos_ = 0;
};

// What an entry is on the source, from its stat in the tree: sets e.id (a regular file's
// FileId, 0: none) and e.source_ctime (Applier::source_ctime), and reads a device node
// placeholder as the node it stands for
// (changes::DevicePlaceholders). label_entries labels an Applier's tree (not thread-safe: call
// where the applier is not applying); a tree without ids labels nothing.
using EntryLabel = std::function<void(CutEntry& e)>;
EntryLabel label_entries(const changes::Applier& applier);

// Walks the tree at tree_fd depth first, the root first (path ""), each directory's names
// sorted (archives are deterministic), never following a symlink, and calls visit with each
// entry, labelled, and where it is (its directory's descriptor and its name). An entry that
// cannot be read fails the walk; so does an error from visit.
using NameVisitor = std::function<Result<void>(int dir_fd, const std::string& name, CutEntry& e)>;
Result<void> walk_names(int tree_fd, const EntryLabel& label, const NameVisitor& visit);

}  // namespace bkp::server
