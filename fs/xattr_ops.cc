// Extended attributes, passed through and recorded.
//
// O_PATH descriptors refuse f*xattr calls, so the attribute calls go through the descriptor's
// /proc/self/fd magic link, which resolves to the object itself (a symlink is not followed
// again). getxattr("security.capability") is asked by the kernel before the first write of each
// inode to decide whether to drop file capabilities; for an inode known to have none
// (Inode::no_capability: made through the mount, or asked once) it is answered ENODATA without
// a syscall. Any other inode is asked of the real file, so a capability set before mounting is
// seen (by getcap, and by exec through the mount).
//
// Changes are recorded by FileId for regular files (no path, no namespace lock) and by path for
// everything else.
#include <sys/xattr.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>

#include "common/log.h"
#include "fs/fs.h"

namespace bkp::fs {

void Fs::record_xattr(Inode& inode, wire::Op op) {
  if (inode.is_reg()) {
    op.id = inode.ref.id;
    record(std::move(op));
    record_attrs(inode);  // its ctime moved: the receiver's record of it must follow
  } else {
    InodeTable::Lock lock(table_);
    if (auto path = table_.path_locked(inode)) {
      op.path = std::move(*path);
      record(std::move(op));
    }
  }
}

void Fs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  Inode& inode = table_.get(ino);
  const bool capability = std::strcmp(name, kCapabilityXattr) == 0;
  if (capability && inode.no_capability.load(std::memory_order_relaxed)) {
    return (void)fuse_reply_err(req, ENODATA);
  }
  auto fd = table_.path_fd(inode);
  if (!fd) return (void)fuse_reply_err(req, fd.error().code);
  std::string path = proc_path(fd->get());
  std::unique_ptr<char[]> buf;
  if (size > 0) {
    buf.reset(new (std::nothrow) char[size]);
    if (!buf) return (void)fuse_reply_err(req, ENOMEM);
  }
  ssize_t n = ::getxattr(path.c_str(), name, buf.get(), size);
  if (n < 0) {
    if (errno == ENODATA && capability) inode.no_capability.store(true);
    return (void)fuse_reply_err(req, errno);
  }
  if (size == 0) return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
  fuse_reply_buf(req, buf.get(), static_cast<size_t>(n));
}

void Fs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  auto fd = table_.path_fd(table_.get(ino));
  if (!fd) return (void)fuse_reply_err(req, fd.error().code);
  std::string path = proc_path(fd->get());
  if (size == 0) {
    ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
  }
  std::unique_ptr<char[]> buf(new (std::nothrow) char[size]);
  if (!buf) return (void)fuse_reply_err(req, ENOMEM);
  ssize_t n = ::listxattr(path.c_str(), buf.get(), size);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_buf(req, buf.get(), static_cast<size_t>(n));
}

namespace {

// Whether the xattr name of path holds exactly value.
bool has_value(const std::string& path, const char* name, std::string_view value) {
  std::string got(value.size() + 1, '\0');
  ssize_t n = ::getxattr(path.c_str(), name, got.data(), got.size());
  return n == static_cast<ssize_t>(value.size()) && got.compare(0, value.size(), value) == 0;
}

}  // namespace

int Fs::set_xattr(const std::string& path, const char* name, std::string_view value, int flags) {
  if (::setxattr(path.c_str(), name, value.data(), value.size(), flags) == 0) return 0;
  const int err = errno;
  // A resent XATTR_CREATE whose value is already there: the first attempt succeeded.
  return resent_and_done(err, EEXIST) && has_value(path, name, value) ? 0 : err;
}

void Fs::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                  size_t size, int flags) noexcept {
  Inode& inode = table_.get(ino);
  int err = 0;
  {
    std::shared_lock ns(log_.namespace_lock(), std::defer_lock);
    if (!inode.is_reg()) ns.lock();
    // Before the call: from now on a getxattr of the capability asks the real file.
    if (std::strcmp(name, kCapabilityXattr) == 0) inode.no_capability.store(false);
    auto fd = table_.path_fd(inode);
    if (!fd) {
      err = fd.error().code;
    } else if ((err = set_xattr(proc_path(fd->get()), name, std::string_view(value, size),
                                flags)) != 0) {
    } else {
      die_after_if_asked(name);
      wire::Op op{.kind = wire::OpKind::kSetXattr};
      op.name = name;
      op.value.assign(value, size);
      record_xattr(inode, std::move(op));
    }
  }
  fuse_reply_err(req, err);
}

void Fs::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
  Inode& inode = table_.get(ino);
  int err = 0;
  {
    std::shared_lock ns(log_.namespace_lock(), std::defer_lock);
    if (!inode.is_reg()) ns.lock();
    auto fd = table_.path_fd(inode);
    if (!fd) {
      err = fd.error().code;
    } else if (::removexattr(proc_path(fd->get()).c_str(), name) < 0 &&
               !resent_and_done(errno, ENODATA)) {
      err = errno;
    } else {
      die_after_if_asked(name);
      record_xattr(inode, wire::Op{.kind = wire::OpKind::kRemoveXattr, .name = name});
    }
  }
  fuse_reply_err(req, err);
}

}  // namespace bkp::fs
