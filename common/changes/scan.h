// Baseline scan: turns a whole tree into one Batch, as if every entry had just been created.
//
// Emits kSyncBegin, then depth-first: kMkdir for directories; kCreate + kTruncate(size) + dirty
// extents for the data regions of regular files (SEEK_DATA/SEEK_HOLE, so sparse files stay
// sparse); kSymlink; kMknod (+ kAttr) for fifos, sockets and devices; kLink for every further
// name of a non-directory already emitted (by id for regular files, else id 0 and target = the
// first name); kSetXattr for every extended attribute the process can read, once per inode, right
// after the op creating it (by id for regular files, else by path) and for a directory after its
// contents; each directory's kAttr after its contents (so its mtime is final); the root's xattrs
// and kAttr; then kSyncEnd. The receiver removes whatever the baseline did not name.
//
// A reconcile is the same scan given the receiver's manifest (what it holds, by path): a
// non-directory it already holds exactly becomes one kKeep (named, so not pruned; nothing
// shipped). "Exactly" for a regular file means the same FileId, size, mode, owner, mtime,
// xattrs and the same *source ctime*: the receiver remembers the ctime the file had when its
// data was read (Applier), and the kernel moves ctime on every change to content or metadata,
// so a file rewritten with its mtime put back is still caught. A directory whose entries all
// became kKeep, that the receiver lists with exactly as many entries and with the same mode,
// owner, mtime and xattrs, collapses into one kKeep of the directory (mode S_IFDIR: the whole
// subtree is held), so an unchanged tree costs a handful of ops, not one per entry; any other
// directory is sent (kMkdir keeps an existing one; cheap). xattrs are sent only when their digest differs, with a
// kRemoveXattr for each name the receiver has and the source no longer has. A file of at least
// kVerifyMin bytes that the receiver holds under the same FileId but not exactly is updated in
// place: kKeep, kTruncate(size), and the whole file as dirty extents marked
// FileChange::verify, which the caller narrows to the blocks that differ
// (stream::narrow_by_digests) before shipping. A regular file the receiver holds only under
// another name (the same FileId: renamed or linked while apart) first gets a kLink by id, so
// its bytes are reused rather than sent; the old name goes at kSyncEnd if nothing names it.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>
#include <functional>
#include <thread>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/changes/change_log.h"
#include "common/changes/device_placeholders.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::changes {

constexpr uint64_t kVerifyMin = 64 * 1024;

// What a receiver holds, by volume-relative path ("" is the root).
using Manifest = std::unordered_map<std::string, wire::ManifestEntry>;

struct ScanOptions {
  // The receiver's manifest for a reconcile; nullptr: a plain baseline.
  const Manifest* have = nullptr;
  // The ctime a regular file's content is known by (0: unknown, never equal). Default: its own
  // st_ctime (a node's source tree); backupd's mirror answers with the source's (Applier).
  std::function<int64_t(uint64_t id, const struct stat& st)> ctime;
  // A tree with device node placeholders (an Applier's): entries are read through it.
  const DevicePlaceholders* placeholders = nullptr;
};

// Names a regular file for the log; nullopt skips the file (it vanished).
using Identify = std::function<std::optional<FileRef>(int dir_fd, const char* name,
                                                       const struct stat& st)>;

// Adds the data regions of the open file (SEEK_DATA/SEEK_HOLE) below size to out; all of it if
// the filesystem cannot tell.
void data_regions(int fd, uint64_t size, ExtentMap& out);

// root_fd: an open directory fd of the tree. Errors only for an unreadable root.
Result<Batch> scan_tree(int root_fd, const Identify& identify, const ScanOptions& options = {});

// Walks a tree in the background (readdir and lstat of every entry, nothing read, nothing
// followed) so that the kernel's caches hold its metadata when a walk that needs it comes: a
// reconcile starts one while the peer walks its own tree for the manifest, and the manifest walk
// runs behind one, so cold walks overlap instead of following each other. Several threads share
// a queue of directories: a cold walk waits on one inode-table read after another, and parallel
// reads keep the disk's queue full. Destruction stops the walk at the next entry and joins.
class TreeWarmer {
 public:
  static constexpr unsigned kThreads = 6;
  explicit TreeWarmer(int root_fd, unsigned threads = kThreads);
  ~TreeWarmer();
  TreeWarmer(const TreeWarmer&) = delete;
  TreeWarmer& operator=(const TreeWarmer&) = delete;

  // Entries seen so far (for logs and tests); final once the destructor has joined.
  uint64_t visited() const { return visited_; }

 private:
  struct Pending {
    UniqueFd dir;
    int depth = 0;
  };
  void work();
  void walk(int dir_fd, int depth);

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> visited_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;  // guarded by mu_: directories not yet listed
  unsigned busy_ = 0;          // guarded by mu_: threads listing a directory
  std::vector<std::thread> threads_;
};

}  // namespace bkp::changes
