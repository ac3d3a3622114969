// Applier: plays a change stream (wire::Op, wire::Write) into a tree on disk. Used by backupd
// for each volume's mirror and by the replicator for each replica tree.
//
// Layout: tree_dir holds the tree exactly as the source has it. ids_dir holds one hard link per
// regular file, named by its FileId in 16 lowercase hex digits, so data and attributes can be
// applied by id without a path map, renames are plain renames, and hard links stay one inode.
// Both must be on one filesystem. An id's link is removed when the last tree name of the file
// goes (unlink, rename over, rmdir of a tree, sync end). Where this process may not create a
// device node, the tree holds a placeholder for it, indexed in ids_dir/devices
// (device_placeholders.h): readers of the tree see it through placeholders().as_source().
//
// Safety (DESIGN.md invariant 7): every path is checked with validate_rel_path() and resolved
// with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) for its parent, then the final component
// is used with *at() calls that never follow a symlink. A bad path is EINVAL: the stream is bad.
//
// Replays: a batch that was partly applied before a crash is sent again, so operations tolerate
// their own earlier effect: kMkdir on an existing directory, kCreate on a path that already has
// this id (it is truncated to empty), kUnlink/kRmdir of a missing entry, kRename whose source is
// missing and whose target exists, kLink whose name already is that file. Anything else that
// fails is an error carrying errno (ENOSPC, EIO ...): the caller must not acknowledge the batch.
//
// Durability: nothing is durable until commit(), which syncs the filesystem once (group
// commit), so a batch of 1000 files costs one flush, not 1000. Writes of 128 KiB and up start
// their writeback at once (sync_file_range, advice only), so that sync has less left to flush.
// A long sequential run's pages are also waited for on the disk a few MiB behind its end and
// dropped from the page cache: a copy is written far more than it is read back, so its pages
// are recycled instead of taking fresh memory for every byte, and the dirty data the commit
// waits for stays bounded.
//
// Source ctimes: a file's closing Attr carries the ctime its source had when the data was read;
// the applier remembers it per id (ids_dir/ctimes, an append-only list of (id, ctime) records
// folded at open) and forgets it as soon as the file's content changes again (create, write,
// truncate) or the file goes. A reconcile compares it with the source's ctime now
// (common/changes/scan.h): equal means the content here is the source's.
//
// Observer: an ApplyObserver (set_observer) is told, on the applying thread, before a regular
// file's bytes change and before an id link goes, so a snapshot being written from an earlier
// cut can keep what it still has to read (server/cut.h). The applier never waits for it and
// never fails because of it.
//
// Not thread-safe: the owner serializes calls (backupd holds the volume's mutex), except
// open_id(), source_ctime() and placeholders().as_source(), which other threads may call.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "common/changes/change_log.h"
#include "common/changes/device_placeholders.h"
#include "common/changes/shipper.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "common/wire/messages.h"

namespace bkp::changes {

// What an Applier tells before it changes a file a reader may still need as it was. Both calls
// come from the applying thread, before the change; they must not throw and cannot stop it.
class ApplyObserver {
 public:
  static constexpr uint64_t kToEnd = UINT64_MAX;

  virtual ~ApplyObserver() = default;
  // The bytes [offset, offset + length) of the regular file open at fd (maybe O_WRONLY) are
  // about to change: written, punched, or cut off (length kToEnd: everything from offset on).
  virtual void before_change(int fd, uint64_t offset, uint64_t length) noexcept = 0;
  // The id link ids_dir/name of a regular file is about to be removed or replaced: the file
  // may have no other name left, and its id will no longer lead to it.
  virtual void before_unlink_id(int ids_dir, const std::string& name) noexcept = 0;
};

class Applier {
 public:
  // Opens base/tree_rel and base/ids_rel, creating what is missing, and indexes the ids
  // (inode -> id). base is trusted (configuration); below it no symlink is ever followed, at
  // any level, so a tree whose name a peer chose cannot lead outside base.
  static Result<std::unique_ptr<Applier>> open(const std::string& base, const std::string& tree_rel,
                                               const std::string& ids_rel);
  ~Applier();

  Result<void> apply(const wire::Op& op);
  // Writes data at offset into the file with this id. A missing id is not an error (the file
  // was removed later in the stream); the write is skipped.
  Result<void> write(const wire::Write& w);
  // Makes everything applied so far durable.
  Result<void> commit();

  // Read-only descriptor of the file with this id (ENOENT if none). For shipping onward.
  Result<UniqueFd> open_id(uint64_t id) const;
  // The id of a tree inode, for baseline scans of this tree.
  std::optional<uint64_t> id_of_inode(ino_t ino) const;
  // The inode of the entry at rel (not following a final symlink), 0 if there is none.
  ino_t inode_at(const std::string& rel) const;
  // The source ctime this id's content is known to match; 0 when unknown.
  int64_t source_ctime(uint64_t id) const;
  // Forgets every source ctime, durably: after a restart of the machine that may have lost
  // part of an uncommitted batch (stream::Receiver), a record can vouch for bytes that are not
  // there, so the next reconcile compares every file's content instead.
  Result<void> forget_source_ctimes();
  int tree_fd() const;
  // The ids/ directory (O_RDONLY): files by id, for readers of a cut of this tree.
  int ids_fd() const;
  // The tree's device node placeholders: what a walk of tree_fd() must read through.
  const DevicePlaceholders& placeholders() const;
  // Tells observer (nullptr: nobody) about every later change it must know of. The observer
  // must outlive its registration; the owner serializes this with the other calls.
  void set_observer(ApplyObserver* observer);
  // True between a kSyncBegin and its kSyncEnd (a baseline is being applied).
  bool syncing() const;

 private:
  Applier() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Adapts an Applier to the shipper's DataSource (backupd reads replica data from its mirror).
// The default prefetch (by open_id) serves a replica's baseline, whose mirror is cold after a
// restart or for a replica placed on an old volume.
class ApplierSource : public DataSource {
 public:
  explicit ApplierSource(Applier& applier) : applier_(applier) {}
  Result<UniqueFd> open_file(const FileRef& file) override { return applier_.open_id(file.id); }
  int64_t source_ctime(const FileRef& file, const struct stat&) override {
    return applier_.source_ctime(file.id);
  }

 private:
  Applier& applier_;
};

}  // namespace bkp::changes
