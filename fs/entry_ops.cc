// Lookups, inode references and attributes.
//
// lookup answers from fstatat + name_to_handle_at on the parent's descriptor: two syscalls and
// no descriptor kept, since most looked-up inodes never need one (the kernel caches their
// attributes for a day and opens regular files by handle). Races with renames are impossible
// through the mount: the kernel holds the parent locked against changes during a lookup.
// Negative lookups are cached for the same day: creating the name later goes through us too.
//
// setattr on a regular file is recorded by FileId (attributes flag or kTruncate), so it needs no
// path and no namespace lock; on anything else it is a kAttr by path.
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <climits>
#include <mutex>
#include <shared_mutex>

#include "common/log.h"
#include "fs/file_handle.h"
#include "fs/fs.h"

namespace bkp::fs {

void Fs::fill_entry(Inode& inode, const struct stat& st, fuse_entry_param* e) {
  e->ino = table_.ino_of(inode);
  e->generation = 0;
  e->attr = st;
  e->attr_timeout = kCacheTimeout;
  e->entry_timeout = kCacheTimeout;
}

int Fs::lookup_entry(Inode& dir, int dir_fd, const char* name, fuse_entry_param* e) {
  struct stat st;
  if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return errno;
  if (st.st_dev != table_.root_dev()) {
    static std::once_flag warned;
    std::call_once(warned, [] { log::warn("mount points inside the volume are not served"); });
    return EOPNOTSUPP;
  }
  auto handle = handle_at(dir_fd, name, 0);
  if (!handle) return handle.error().code;
  Inode& inode = table_.remember(std::move(*handle), st, dir, name);
  fill_entry(inode, st, e);
  return 0;
}

void Fs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Inode& dir = table_.get(parent);
  fuse_entry_param e{};
  auto fd = table_.path_fd(dir);
  int err = fd ? lookup_entry(dir, fd->get(), name, &e) : fd.error().code;
  if (err == ENOENT) {
    e.ino = 0;
    e.entry_timeout = kCacheTimeout;
    fuse_reply_entry(req, &e);
  } else if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_entry(req, &e);
  }
}

void Fs::forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept {
  table_.forget(ino, nlookup);
  fuse_reply_none(req);
}

void Fs::forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept {
  for (size_t i = 0; i < count; ++i) table_.forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void Fs::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  struct stat st;
  int res;
  if (fi != nullptr) {
    auto fd = file_fd(fi);
    if (!fd) return (void)fuse_reply_err(req, fd.error().code);
    res = ::fstat(*fd, &st);
  } else {
    auto fd = table_.path_fd(table_.get(ino));
    if (!fd) return (void)fuse_reply_err(req, fd.error().code);
    res = ::fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  }
  if (res < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_attr(req, &st, kCacheTimeout);
}

namespace {

// Applies the requested changes in the order chmod, before_chown(fd) and chown, truncate,
// utimens; stops at the first failure. *changed tells whether anything was applied (and so must
// be recorded). before_chown returns 0 or an errno.
template <typename BeforeChown>
int apply_setattr(InodeTable& table, Inode& inode, const struct stat& attr, int valid, int fh,
                  BeforeChown&& before_chown, bool* changed) {
  std::optional<PathFd> path;
  auto fd = [&]() -> int {
    if (fh >= 0) return fh;
    if (!path) {
      auto r = table.path_fd(inode);
      if (!r) {
        errno = r.error().code;
        return -1;
      }
      path.emplace(std::move(*r));
    }
    return path->get();
  };
  *changed = false;
  if (valid & FUSE_SET_ATTR_MODE) {
    int f = fd();
    if (f < 0) return errno;
    int res = fh >= 0 ? ::fchmod(fh, attr.st_mode) : ::chmod(proc_path(f).c_str(), attr.st_mode);
    if (res < 0) return errno;
    *changed = true;
  }
  if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr.st_uid : static_cast<uid_t>(-1);
    gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr.st_gid : static_cast<gid_t>(-1);
    int f = fd();
    if (f < 0) return errno;
    if (int err = before_chown(f)) return err;
    if (::fchownat(f, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return errno;
    *changed = true;
  }
  if (valid & FUSE_SET_ATTR_SIZE) {
    if (fh >= 0) {
      if (::ftruncate(fh, attr.st_size) < 0) return errno;
    } else {
      auto w = table.reopen(inode, O_WRONLY);
      if (!w) return w.error().code;
      if (::ftruncate(w->get(), attr.st_size) < 0) return errno;
    }
    *changed = true;
  }
  if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    struct timespec tv[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
    if (valid & FUSE_SET_ATTR_ATIME_NOW) {
      tv[0].tv_nsec = UTIME_NOW;
    } else if (valid & FUSE_SET_ATTR_ATIME) {
      tv[0] = attr.st_atim;
    }
    if (valid & FUSE_SET_ATTR_MTIME_NOW) {
      tv[1].tv_nsec = UTIME_NOW;
    } else if (valid & FUSE_SET_ATTR_MTIME) {
      tv[1] = attr.st_mtim;
    }
    int f = fd();
    if (f < 0 || ::utimensat(f, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return errno;
    *changed = true;
  }
  return 0;
}

}  // namespace

void Fs::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                 fuse_file_info* fi) noexcept {
  Inode& inode = table_.get(ino);
  struct stat st;
  int err;
  {
    // Only path-named records need the namespace lock.
    std::shared_lock ns(log_.namespace_lock(), std::defer_lock);
    if (!inode.is_reg()) ns.lock();
    bool killed = false;
    bool changed = false;
    // The open file's descriptor when the kernel names one (ftruncate, fchmod), else -1.
    int fh = -1;
    if (fi != nullptr) {
      auto fd = file_fd(fi);
      if (!fd) return (void)fuse_reply_err(req, fd.error().code);
      fh = *fd;
    }
    err = kill_for_setattr(req, inode, ino, valid, fh, &killed);
    if (err == 0) {
      auto before_chown = [&](int fd) {
        bool chown_killed = false;
        int e = channel_.killpriv_v2()
                    ? kill_privileges(req, inode, fd, KillCause::kChown, &chown_killed)
                    : 0;
        killed |= chown_killed;
        return e;
      };
      err = apply_setattr(table_, inode, *attr, valid, fh, before_chown, &changed);
    }
    changed |= killed;
    int stat_res;
    if (fh >= 0) {
      stat_res = ::fstat(fh, &st);
    } else if (auto fd = table_.path_fd(inode)) {
      stat_res = ::fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    } else {
      errno = fd.error().code;
      stat_res = -1;
    }
    if (err == 0 && stat_res < 0) err = errno;
    if (changed && inode.is_reg()) {
      if ((valid & FUSE_SET_ATTR_SIZE) && (err == 0 || stat_res == 0)) {
        uint64_t size = err == 0 ? attr->st_size : st.st_size;
        record_truncate(inode, size);
      }
      record_attrs(inode);
    } else if (changed && stat_res == 0) {
      record_path_attr(inode, st);
    }
  }
  if (err != 0) return (void)fuse_reply_err(req, err);
  fuse_reply_attr(req, &st, kCacheTimeout);
}

void Fs::readlink(fuse_req_t req, fuse_ino_t ino) noexcept {
  auto fd = table_.path_fd(table_.get(ino));
  if (!fd) return (void)fuse_reply_err(req, fd.error().code);
  char buf[PATH_MAX + 1];
  ssize_t n = ::readlinkat(fd->get(), "", buf, sizeof(buf));
  if (n < 0) return (void)fuse_reply_err(req, errno);
  if (static_cast<size_t>(n) >= sizeof(buf)) return (void)fuse_reply_err(req, ENAMETOOLONG);
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
}

void Fs::statfs(fuse_req_t req, fuse_ino_t) noexcept {
  struct statvfs sv;
  if (::fstatvfs(table_.mount_fd(), &sv) < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_statfs(req, &sv);
}

}  // namespace bkp::fs
