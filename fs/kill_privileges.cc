// Dropping set-id bits and file capabilities, which the kernel leaves to us once
// FUSE_HANDLE_KILLPRIV_V2 is negotiated (kernel_channel.cc says why we negotiate it).
//
// Our backing calls run as root, and root keeps set-id bits on write and truncate, so the bits
// must be cleared explicitly, with the rules of the kernel's VFS (fs/attr.c
// setattr_should_drop_suidgid and setattr_should_drop_sgid, fs/open.c chown_common):
//   - write or truncate by a caller without CAP_FSETID (the kernel flags those requests), of a
//     regular file: clear S_ISUID; clear S_ISGID if the file is group-executable or the caller
//     is not in the file's group;
//   - chown or chgrp of a non-directory, by anyone: the same, where root counts as in the group
//     (so root keeps S_ISGID on a file that is not group-executable);
//   - both drop security.capability.
// A chown in the same SETATTR as a chmod clears the bits from the new mode, as nfsd does (the
// VFS itself never combines them). Where the kernel removes privileges itself (its
// file_remove_privs before copy_file_range, fallocate, or a chown(-1, -1)), KILLPRIV_V2 makes it
// strip the mode it computed and send a SETATTR of nothing: from a caller other than root that
// is treated as a flagged write. (From root it is left alone: root keeps set-id bits on write,
// so only a chown(f, -1, -1) by root, which would clear them, is missed.) Each change is
// recorded as if the application had made it, so the mirror follows.
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <vector>

#include "common/log.h"
#include "fs/fs.h"

namespace bkp::fs {
namespace {

// Whether the caller of req is in group gid (primary or supplementary).
bool caller_in_group(fuse_req_t req, gid_t gid) {
  if (fuse_req_ctx(req)->gid == gid) return true;
  std::vector<gid_t> groups(32);
  for (;;) {
    int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n < 0) return false;  // the caller is gone; nothing to keep a bit for
    if (static_cast<size_t>(n) <= groups.size()) {
      groups.resize(static_cast<size_t>(n));
      return std::find(groups.begin(), groups.end(), gid) != groups.end();
    }
    groups.resize(static_cast<size_t>(n));
  }
}

}  // namespace

bool Fs::kill_requested(uint32_t opcode, fuse_ino_t ino) const {
  const RequestNote& note = KernelChannel::current();
  return note.kill_suidgid && note.is(opcode, ino) && channel_.killpriv_v2();
}

int Fs::kill_for_write(fuse_req_t req, Inode& inode, int fd) {
  bool mode_changed = false;
  int err = kill_privileges(req, inode, fd, KillCause::kWrite, &mode_changed);
  if (err == 0 && mode_changed) {
    record_attrs(inode);
    // The OPEN and WRITE replies carry no attributes: the mode the kernel caches must go.
    channel_.invalidate_attributes(table_.ino_of(inode));
  }
  return err;
}

int Fs::kill_for_setattr(fuse_req_t req, Inode& inode, fuse_ino_t ino, int valid, int fh,
                         bool* mode_changed) {
  *mode_changed = false;
  const RequestNote& note = KernelChannel::current();
  if (!channel_.killpriv_v2() || !note.is(FUSE_SETATTR, ino)) return 0;
  const bool truncate = note.kill_suidgid && (valid & FUSE_SET_ATTR_SIZE);
  const bool bare = (note.setattr_valid & ~(FATTR_FH | FATTR_LOCKOWNER)) == 0 &&
                    fuse_req_ctx(req)->uid != 0;
  if (!truncate && !bare) return 0;
  if (fh >= 0) return kill_privileges(req, inode, fh, KillCause::kWrite, mode_changed);
  auto fd = table_.path_fd(inode);
  if (!fd) return fd.error().code;
  return kill_privileges(req, inode, fd->get(), KillCause::kWrite, mode_changed);
}

int Fs::kill_privileges(fuse_req_t req, Inode& inode, int fd, KillCause cause,
                        bool* mode_changed) {
  *mode_changed = false;
  struct stat st;
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return errno;
  const bool applies = cause == KillCause::kWrite ? S_ISREG(st.st_mode) : !S_ISDIR(st.st_mode);
  if (!applies) return 0;
  // Every write by a user other than root comes here: the common case costs the fstat alone.
  const bool capability = !inode.no_capability.load(std::memory_order_relaxed);
  if ((st.st_mode & (S_ISUID | S_ISGID)) == 0 && !capability) return 0;
  const std::string path = proc_path(fd);
  const mode_t mode = st.st_mode & 07777;
  // setattr_should_drop_sgid: in_group_or_capable, where root counts as capable on chown (a
  // writer the kernel flagged lacks CAP_FSETID).
  auto in_group_or_capable = [&] {
    return (cause == KillCause::kChown && fuse_req_ctx(req)->uid == 0) ||
           caller_in_group(req, st.st_gid);
  };
  mode_t kept = mode & ~S_ISUID;
  if ((mode & S_ISGID) && ((mode & S_IXGRP) || !in_group_or_capable())) kept &= ~S_ISGID;
  if (kept != mode) {
    if (::chmod(path.c_str(), kept) < 0) return errno;
    log::debug("killed set-id bits of id={:016x}: {:o} -> {:o}", inode.ref.id, mode, kept);
    *mode_changed = true;
  }
  // A chown as root would drop a capability unrecorded, so it is removed (and recorded) here.
  return capability ? drop_capability(inode, fd) : 0;
}

int Fs::drop_capability(Inode& inode, int fd, bool was_there) {
  if (inode.no_capability.load(std::memory_order_relaxed)) return 0;
  if (::removexattr(proc_path(fd).c_str(), kCapabilityXattr) == 0 ||
      (was_there && errno == ENODATA)) {
    record_xattr(inode, wire::Op{.kind = wire::OpKind::kRemoveXattr, .name = kCapabilityXattr});
  } else if (errno != ENODATA && errno != EOPNOTSUPP) {
    return errno;
  }
  // Once gone, or never there, the inode is known to have none.
  inode.no_capability.store(true);
  return 0;
}

}  // namespace bkp::fs
