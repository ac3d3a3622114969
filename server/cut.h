// Cut: a mirror exactly as one commit left it, readable while its ingest goes on, so a snapshot
// never stops the node's stream (issue 12; docs/ARCHITECTURE.md, "Changes to the design").
//
// How: at the cut (the volume's mutex held, at a batch boundary) the names of the whole tree are
// walked into the run's scratch area (server/cut_names.h): that freezes the namespace and every
// entry's metadata at the price of one metadata walk. The mutex is then released and the cut,
// registered as the volume Applier's observer, keeps file bytes by copy-before-write: before the
// applier changes bytes of a regular file the archive has not read yet (write, truncate, punch,
// a create that empties it), the cut copies the old bytes of that range, once, into
// scratch/old-<ino> at the same offsets (holes stay holes); before an id link goes (the file's
// last name removed, or its id given to another file), the cut hard-links the file into
// scratch/gone-<ino>, after which nothing can change it. The archiver reads a file's bytes
// range by range from the kept copy where one exists and from the live file elsewhere. Cost:
// what changes during the run, never the volume; nothing is kept of a file once it is archived,
// and its copies are deleted then.
//
// Failing to keep something (the scratch area's disk is full) never fails the apply: the cut
// records the error, stops keeping, and the archive fails with it at its next read.
//
// Thread-safety: one mutex (a leaf, taken under Volume::mu by the applier's calls and alone by
// the archiving thread) guards the table of files and what was kept. The archiver holds it for
// each read of at most one block, and the applier for each copy, so neither can see the other
// half-done; the node session waits at most one block read, the archiver at most one copy.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/changes/applier.h"
#include "common/changes/extent_map.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "server/cut_names.h"

namespace bkp::server {

class Cut final : public changes::ApplyObserver {
 public:
  // A regular file's bytes as at the cut, opened for reading (Cut::open).
  struct File {
    ino_t ino = 0;
    uint64_t size = 0;         // at the cut
    changes::ExtentMap data;   // its data regions at the cut (the rest is holes)
    UniqueFd live;             // the file itself, where nothing was kept of it
    UniqueFd kept;             // scratch/old-<ino>, once something was
  };

  // Takes the cut of the tree at tree_fd into scratch_dir (created if missing, emptied first).
  // ids_fd is the tree's ids/ directory and label tells each entry's id (label_entries); with
  // ids_fd -1 the tree must hold still until the cut is destroyed (files are read by path).
  // Call while nothing changes the tree, and set the cut as the applier's observer before
  // anything may change it again. Errors: the walk's, or the scratch area's (ENOSPC).
  static Result<std::unique_ptr<Cut>> take(int tree_fd, int ids_fd,
                                           const EntryLabel& label,
                                           const std::string& scratch_dir);
  ~Cut() override;  // deletes what it kept and the names (not the scratch directory itself)
  Cut(const Cut&) = delete;
  Cut& operator=(const Cut&) = delete;

  uint64_t entries() const { return entries_; }  // in the names, the root included
  uint64_t files() const { return files_.size(); }  // regular files (inodes)

  // The names, from the first. Any number of readers, one pass each.
  Result<NameReader> names() const;

  // Opens a regular file of the names for reading its bytes as at the cut. Errors: the
  // failure() of the cut; EIO "internal error" if the file changed without its bytes kept.
  Result<File> open(const CutEntry& e);
  // Reads [offset, offset + n) of the file as at the cut (n bytes unless past its size; holes
  // read as zeros). Errors: failure(), or a read error.
  Result<size_t> read(File& f, char* buf, size_t n, uint64_t offset);
  // The archive has what it needs of this inode: stop keeping it, delete what was kept.
  void archived(ino_t ino);
  // Why the cut can no longer give the tree as it was (it could not keep something), if so.
  std::optional<Error> failure() const;
  // Keeps nothing more (the archive ended); applier calls after it do nothing.
  void close();

  // changes::ApplyObserver, called by the applier under the volume's mutex.
  void before_change(int fd, uint64_t offset, uint64_t length) noexcept override;
  void before_unlink_id(int ids_dir, const std::string& name) noexcept override;

 private:
  struct Slot {
    ino_t ino = 0;
    uint64_t size = 0;
    bool archived = false;  // nothing more to keep
    bool gone = false;      // hard-linked at scratch/gone-<ino>: frozen
  };

  Cut(UniqueFd tree, UniqueFd ids, UniqueFd scratch, std::string scratch_dir)
      : tree_(std::move(tree)), ids_(std::move(ids)), scratch_(std::move(scratch)),
        scratch_dir_(std::move(scratch_dir)) {}

  // One entry of the walk at the cut: into the names, and a regular file into files_.
  Result<void> add(int dir_fd, const std::string& name, const CutEntry& e, NameWriter& names);
  Slot* find(ino_t ino);  // mu_ held
  // Copies the bytes [start, end) of the file at fd that are not kept yet into old-<ino>. The
  // range should be whole filesystem blocks (before_change), so that what a change does to the
  // live file's holes stays inside it.
  Result<void> keep(Slot& s, int fd, uint64_t start, uint64_t end);  // mu_ held
  Result<void> detach(Slot& s, int dir_fd, const std::string& name);  // mu_ held
  Result<UniqueFd> open_live(const Slot& s, const CutEntry& e);       // mu_ held
  void record_failure(Error e);                                       // mu_ held

  const UniqueFd tree_;     // dup of the tree's descriptor
  const UniqueFd ids_;      // dup of ids/, or invalid for a still tree
  const UniqueFd scratch_;  // the scratch directory
  const std::string scratch_dir_;
  uint64_t entries_ = 0;

  mutable std::mutex mu_;
  // Guarded by mu_. files_ is sorted by inode and only its flags change after take().
  std::vector<Slot> files_;
  std::unordered_map<ino_t, changes::ExtentMap> kept_;  // ranges copied into old-<ino>
  std::optional<Error> failure_;
  bool closed_ = false;
};

// Empties a scratch directory left by an interrupted run (startup); returns the files removed.
size_t remove_cut_leftovers(const std::string& scratch_dir);

}  // namespace bkp::server
