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
#pragma once

#include <sys/stat.h>

#include <functional>
#include <optional>

#include "common/changes/change_log.h"
#include "common/result.h"

namespace bkp::changes {

// Names a regular file for the log; nullopt skips the file (it vanished).
using Identify = std::function<std::optional<FileRef>(int dir_fd, const char* name,
                                                       const struct stat& st)>;

// root_fd: an open directory fd of the tree. Errors only for an unreadable root.
Result<Batch> scan_tree(int root_fd, const Identify& identify);

}  // namespace bkp::changes
