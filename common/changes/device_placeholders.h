// DevicePlaceholders: device nodes kept in a tree by a process that may not create them.
//
// backupd runs with PrivateDevices= (systemd), which takes CAP_MKNOD away, yet its mirrors must
// keep every device node a volume has: snapshots archive them and replicas are rebuilt from the
// mirror. Where mknod(2) of a character or block device is refused (EPERM), the Applier makes a
// placeholder instead: an empty regular file at the node's name, carrying its owner, mode,
// times and xattrs, with a second hard link ids/devices/<c|b><rdev in hex>.<inode in hex>. That
// link says what the file stands for and holds the inode, so its number cannot be reused by
// another file while the index below names it; it goes when the last tree name goes (release,
// prune). A placeholder is recognised by its inode, never by anything a source could put in a
// file (a name, an xattr, a mode), so no source file can pass for a device node.
//
// Every reader that must see the tree as the source has it (baseline scans, manifests, snapshot
// cuts, verify) passes each entry's stat through as_source(). A tree written with CAP_MKNOD
// holds real nodes and no placeholders; a tree may hold both (a service whose configuration
// changed), and readers see both as device nodes.
//
// Thread-safety: as_source() may be called from any thread; the rest by the Applier's owner.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::changes {

class DevicePlaceholders {
 public:
  // Indexes the placeholders whose links are in ids_fd's devices/ (if it exists), dropping
  // those without a tree name left (a crash between an unlink and its release). ids_fd must
  // outlive this object.
  Result<void> open(int ids_fd);
  // Makes dir/name a placeholder of a device node (type S_IFCHR or S_IFBLK, rdev), mode 0600:
  // the caller sets owner, mode and times. EEXIST when the name is taken.
  Result<void> create(int dir, const std::string& name, mode_t type, dev_t rdev);
  // A tree name of inode ino went: if it is a placeholder with no tree name left, its link
  // goes too.
  Result<void> release(ino_t ino);
  // Indexes devices/ again, dropping what has no tree name (after a baseline's prune).
  Result<void> prune();
  // st, of an entry of the tree, as the source has it: a placeholder reads as its device node
  // (size 0, one link fewer). Anything else is left as it is.
  void as_source(struct stat& st) const;

 private:
  struct Node {
    mode_t type = 0;
    dev_t rdev = 0;
    std::string link;  // its name in devices/
  };

  Result<void> open_dir();   // ids/devices into dir_, if it exists
  Result<int> directory();   // dir_, creating ids/devices first if need be

  int ids_fd_ = -1;
  UniqueFd dir_;  // ids/devices, once it exists
  dev_t dev_ = 0;  // the filesystem of ids/ and the tree
  mutable std::mutex mu_;  // nodes_, for as_source() from readers on other threads
  std::unordered_map<ino_t, Node> nodes_;
};

}  // namespace bkp::changes
