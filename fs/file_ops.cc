// Regular files: create, open, read, write, and the calls that change content in place.
//
// Every open file holds one real descriptor of the backing file, opened by handle; fi->fh is its
// entry in the shared fh table (takeover.h), so a successor worker reopens it on first use.
// Reads are answered with an fd-backed buffer, so libfuse splices file pages into /dev/fuse
// without a copy through user space; writes arrive in the request buffer (read(2), see
// kernel_channel.cc) and are written from it. Each successful write then marks
// [offset, offset + written) dirty in the change log; the bytes themselves are read again when
// shipped. A write, truncating open or create the kernel flags drops set-id bits first
// (kill_privileges.cc).
//
// O_APPEND and O_DIRECT are not passed to the backing descriptor: without the writeback cache
// the kernel already resolves append positions to its (exact) idea of the file size, and the
// offset it sends is then the offset we record; O_DIRECT would make spliced, unaligned writes
// fail. fi->noflush spares a round trip on every close: flush has nothing to do here.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include "common/log.h"
#include "common/path.h"
#include "fs/file_handle.h"
#include "fs/fs.h"

namespace bkp::fs {
namespace {

constexpr int kDroppedOpenFlags = O_CREAT | O_EXCL | O_NOCTTY | O_APPEND | O_DIRECT;

void set_open_flags(fuse_file_info* fi) {
  fi->keep_cache = 1;  // every change to the file goes through this kernel inode
  fi->noflush = 1;
}

}  // namespace

Fs::Fs(InodeTable& table, changes::ChangeLog& log, std::unique_ptr<SharedRecords> files,
       uint32_t generation, Orphans& orphans)
    : table_(table),
      log_(log),
      files_(std::move(files), generation,
             [this](uint64_t node, int flags, OpenKind kind) {
               return reopen_open(node, flags, kind);
             }),
      orphans_(orphans) {
  files_.for_each([&](uint64_t node, OpenKind kind) {
    if (kind == OpenKind::kFile) orphans_.opened(node);
  });
}

int Fs::add_open(fuse_file_info* fi, const Inode& inode, OpenKind kind, uint64_t local) {
  auto fh = files_.add(inode.id, fi->flags, kind, local);
  if (!fh) return fh.error().code;
  fi->fh = *fh;
  if (kind == OpenKind::kFile) orphans_.opened(inode.id);
  return 0;
}

void Fs::release_file(const fuse_file_info* fi) {
  uint64_t node = 0;
  if (auto local = files_.release(fi->fh, &node)) ::close(static_cast<int>(*local));
  if (node != 0) orphans_.released(node);
}

Result<int> Fs::file_fd(const fuse_file_info* fi) {
  auto local = files_.get(fi->fh);
  if (!local) {
    log::warn("open file: {}", local.error().message);
    return tl::unexpected(local.error());
  }
  return static_cast<int>(*local);
}

Result<uint64_t> Fs::reopen_open(uint64_t node, int flags, OpenKind kind) {
  Inode& inode = table_.get(node);
  if (kind == OpenKind::kDir) return reopen_dir(inode);
  // As open(2) but without what only the first open may do (create, truncate).
  flags &= ~(kDroppedOpenFlags | O_TRUNC);
  auto held = orphans_.reopen(node, flags);  // a file with no name left (orphans.h)
  auto fd = BKP_TRY(held ? std::move(*held) : table_.reopen(inode, flags));
  log::debug("takeover: reopened node {} for an open file", node);
  return static_cast<uint64_t>(fd.release());
}

int Fs::open_file(fuse_req_t req, Inode& inode, fuse_file_info* fi, bool kill) {
  // O_TRUNC truncates whatever the access mode (Linux truncates with O_RDONLY too), and the
  // truncate drops a file capability: seen here, recorded below once the open succeeded (one
  // that fails, ETXTBSY on a running program say, truncates nothing and keeps it).
  const bool truncating = (fi->flags & O_TRUNC) && inode.is_reg();
  bool capability = false;
  if (truncating && !inode.no_capability.load(std::memory_order_relaxed)) {
    auto path = table_.path_fd(inode);
    if (!path) return path.error().code;
    capability = ::getxattr(proc_path(path->get()).c_str(), kCapabilityXattr, nullptr, 0) >= 0;
    if (!capability && errno == ENODATA) inode.no_capability.store(true);
  }
  auto fd = table_.reopen(inode, fi->flags & ~kDroppedOpenFlags);
  // ESTALE, not ENOENT, when the file is gone: it was renamed over or unlinked between the
  // kernel's LOOKUP and this OPEN, and on ESTALE the VFS walks the path again (LOOKUP_REVAL) and
  // opens what the name leads to now, as open(2) of a plain directory would have.
  if (!fd) return fd.error().code;
  if (truncating) {
    record_truncate(inode, 0);
    if (capability) {
      if (int err = drop_capability(inode, fd->get(), /*was_there=*/true)) return err;
    }
    if (kill) {
      if (int err = kill_for_write(req, inode, fd->get())) return err;
    }
  }
  if (int err = add_open(fi, inode, OpenKind::kFile, static_cast<uint64_t>(fd->get()))) return err;
  fd->release();
  set_open_flags(fi);
  return 0;
}

void Fs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  int err = open_file(req, table_.get(ino), fi, kill_requested(FUSE_OPEN, ino));
  if (err != 0) return (void)fuse_reply_err(req, err);
  if (fuse_reply_open(req, fi) == -ENOENT) close_interrupted(fi);
}

void Fs::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                fuse_file_info* fi) noexcept {
  Inode& dir = table_.get(parent);
  const fuse_ctx& ctx = *fuse_req_ctx(req);
  fuse_entry_param e{};
  int err = 0;
  {
    std::shared_lock ns(log_.namespace_lock());
    auto dfd = table_.path_fd(dir);
    if (!dfd) {
      err = dfd.error().code;
    } else {
      const int d = dfd->get();
      const int flags = (fi->flags & ~kDroppedOpenFlags) | O_CREAT | O_EXCL | O_CLOEXEC;
      UniqueFd fd(::openat(d, name, flags, mode & 07777));
      struct stat dst, st;
      const int open_err = fd ? 0 : errno;
      if (open_err == EEXIST && (!(fi->flags & O_EXCL) || resent_and_done(open_err, EEXIST))) {
        // The name exists although the kernel believed otherwise (the directory was changed
        // behind the mount, or a predecessor created it and died before answering this resent
        // request): behave like open(2) on the existing file.
        err = lookup_entry(dir, d, name, &e);
        if (err == 0 && (err = open_file(req, table_.get(e.ino), fi,
                                         kill_requested(FUSE_CREATE, parent))) != 0) {
          table_.forget(e.ino, 1);
        }
      } else if (!fd) {
        err = open_err;
      } else if (die_after_if_asked(name); (err = ::fstatat(d, "", &dst, AT_EMPTY_PATH) < 0 ? errno : 0) == 0 &&
                 (err = ::fstat(fd.get(), &st) < 0 ? errno : 0) == 0) {
        err = give_to_caller(fd.get(), "", AT_EMPTY_PATH, ctx, dst, st);
        auto handle = handle_at(fd.get(), "", AT_EMPTY_PATH);
        if (handle) {
          InodeTable::Lock lock(table_);
          if (auto dir_path = table_.path_locked(dir)) {
            record(wire::Op{.kind = wire::OpKind::kCreate,
                            .path = join_rel(*dir_path, name),
                            .id = file_id_of(*handle),
                            .mode = st.st_mode & 07777,
                            .uid = st.st_uid,
                            .gid = st.st_gid});
            record_attr_locked(*dir_path, dst);
            // kCreate carries no times; this ships them even if nothing is ever written.
            log_.attrs(changes::FileRef{file_id_of(*handle), *handle});
          }
        } else if (err == 0) {
          err = handle.error().code;
        }
        if (err == 0) {
          Inode& inode = table_.remember(std::move(*handle), st, dir, name);
          inode.no_capability.store(true);  // just made: no attribute yet
          fill_entry(inode, st, &e);
          err = add_open(fi, inode, OpenKind::kFile, static_cast<uint64_t>(fd.get()));
          if (err == 0) {
            fd.release();
            set_open_flags(fi);
          } else {
            table_.forget(e.ino, 1);
          }
        }
      }
    }
  }
  if (err != 0) return (void)fuse_reply_err(req, err);
  if (fuse_reply_create(req, &e, fi) == -ENOENT) close_interrupted(fi);
}

void Fs::close_interrupted(fuse_file_info* fi) { release_file(fi); }

void Fs::read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) noexcept {
  auto fd = file_fd(fi);
  if (!fd) return (void)fuse_reply_err(req, fd.error().code);
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = *fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void Fs::write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in_buf, off_t off,
                   fuse_file_info* fi) noexcept {
  auto fd = file_fd(fi);
  if (!fd) return (void)fuse_reply_err(req, fd.error().code);
  size_t size = fuse_buf_size(in_buf);
  fuse_bufvec out = FUSE_BUFVEC_INIT(size);
  out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  out.buf[0].fd = *fd;
  out.buf[0].pos = off;
  Inode& inode = table_.get(ino);
  if (kill_requested(FUSE_WRITE, ino)) {
    if (int err = kill_for_write(req, inode, out.buf[0].fd)) return (void)fuse_reply_err(req, err);
  } else if (int err = drop_capability(inode, out.buf[0].fd)) {
    return (void)fuse_reply_err(req, err);
  }
  ssize_t n;
  {
    changes::WriteInProgress writing(log_, inode.ref.id);
    n = fuse_buf_copy(&out, in_buf, FUSE_BUF_SPLICE_MOVE);
    if (n > 0) record_write(inode, off, static_cast<uint64_t>(n));
  }
  if (n < 0) return (void)fuse_reply_err(req, static_cast<int>(-n));
  fuse_reply_write(req, static_cast<size_t>(n));
}

void Fs::record_write(const Inode& inode, uint64_t offset, uint64_t length) {
  if (log::enabled(log::Level::kDebug)) {
    log::debug("record write id={:016x} [{}, +{})", inode.ref.id, offset, length);
  }
  log_.write(inode.ref, offset, length);
}

void Fs::copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in,
                         fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                         int flags) noexcept {
  const Inode& inode = table_.get(ino_out);
  auto fd_in = file_fd(fi_in);
  auto fd_out = file_fd(fi_out);
  if (!fd_in || !fd_out) {
    return (void)fuse_reply_err(req, !fd_in ? fd_in.error().code : fd_out.error().code);
  }
  const off_t start = off_out;
  ssize_t n;
  int err = 0;
  {
    changes::WriteInProgress writing(log_, inode.ref.id);
    n = ::copy_file_range(*fd_in, &off_in, *fd_out, &off_out, len, static_cast<unsigned>(flags));
    err = errno;
    if (n > 0) record_write(inode, static_cast<uint64_t>(start), static_cast<uint64_t>(n));
  }
  if (n < 0) return (void)fuse_reply_err(req, err);
  fuse_reply_write(req, static_cast<size_t>(n));
}

void Fs::flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) noexcept { fuse_reply_err(req, 0); }

void Fs::release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  release_file(fi);
  fuse_reply_err(req, 0);
}

void Fs::fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) noexcept {
  auto fd = file_fd(fi);
  if (!fd) return (void)fuse_reply_err(req, fd.error().code);
  int res = datasync ? ::fdatasync(*fd) : ::fsync(*fd);
  fuse_reply_err(req, res < 0 ? errno : 0);
}

void Fs::fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                   fuse_file_info* fi) noexcept {
  auto open_fd = file_fd(fi);
  if (!open_fd) return (void)fuse_reply_err(req, open_fd.error().code);
  const int fd = *open_fd;
  struct stat before, after;
  if (::fstat(fd, &before) < 0) return (void)fuse_reply_err(req, errno);
  const Inode& inode = table_.get(ino);
  const uint64_t start = static_cast<uint64_t>(offset);
  changes::WriteInProgress writing(log_, inode.ref.id);
  if (::fallocate(fd, mode, offset, length) < 0) return (void)fuse_reply_err(req, errno);
  if (::fstat(fd, &after) < 0) return (void)fuse_reply_err(req, errno);
  const uint64_t size = static_cast<uint64_t>(after.st_size);
  const uint64_t end = std::min(start + static_cast<uint64_t>(length), size);
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    // A hole on every copy too (a punch always keeps the size).
    if (end > start) {
      log::debug("record punch id={:016x} [{}, +{})", inode.ref.id, start, end - start);
      log_.punch(inode.ref, start, end - start);
    }
  } else if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_ZERO_RANGE)) == 0) {
    // A preallocation or a zero range, done the same way on every copy: allocated (unwritten)
    // extents there too, not written zeros.
    uint32_t flags = (mode & FALLOC_FL_KEEP_SIZE) ? wire::kAllocateKeepSize : 0;
    if (mode & FALLOC_FL_ZERO_RANGE) flags |= wire::kAllocateZeroRange;
    log::debug("record allocate id={:016x} flags={:#x} [{}, +{})", inode.ref.id, flags, start,
               length);
    log_.allocate(inode.ref, flags, start, static_cast<uint64_t>(length));
  } else if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) {
    if (after.st_size < before.st_size) record_truncate(inode, size);
    if (size > start) record_write(inode, start, size - start);  // everything after moved
  } else if (after.st_size != before.st_size) {
    record_truncate(inode, size);  // any other mode (unshare): only a new size to carry
  }
  fuse_reply_err(req, 0);
}

void Fs::lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) noexcept {
  auto fd = file_fd(fi);
  if (!fd) return (void)fuse_reply_err(req, fd.error().code);
  off_t res = ::lseek(*fd, off, whence);
  if (res < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_lseek(req, res);
}

}  // namespace bkp::fs
