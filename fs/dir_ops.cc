// Directory listing: opendir, readdir, readdirplus, releasedir, fsyncdir.
//
// A directory handle is a DIR stream on a descriptor opened by handle, plus the offset the
// kernel last asked for and an entry read but not yet returned (it did not fit the kernel's
// buffer). readdirplus answers every entry with a full lookup so that `ls -l` costs one round
// trip per buffer instead of one per entry; each entry the kernel receives counts as a lookup,
// so an entry that does not fit is forgotten again. This is libfuse passthrough_ll's scheme.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <new>

#include "common/log.h"
#include "fs/fs.h"

namespace bkp::fs {
namespace {

bool is_dot_or_dotdot(const char* name) {
  return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

}  // namespace

struct Fs::DirHandle {
  DIR* dp = nullptr;
  off_t offset = 0;  // -1: unknown (a successor's fresh stream), seek before reading
  struct dirent* entry = nullptr;

  ~DirHandle() {
    if (dp != nullptr) ::closedir(dp);
  }
};

// A stream on the directory opened by handle, at offset.
static Result<std::unique_ptr<Fs::DirHandle>> open_dir_stream(InodeTable& table, Inode& dir,
                                                               off_t offset) {
  auto fd = table.reopen(dir, O_RDONLY | O_DIRECTORY);
  if (!fd) return fail(fd.error().code, "open directory");  // ESTALE: see Fs::open_file
  auto d = std::unique_ptr<Fs::DirHandle>(new (std::nothrow) Fs::DirHandle);
  if (!d) return fail(ENOMEM, "directory handle");
  d->dp = ::fdopendir(fd->get());
  if (d->dp == nullptr) return fail_errno("fdopendir");
  fd->release();  // owned by the DIR stream now
  d->offset = offset;
  return d;
}

Result<uint64_t> Fs::reopen_dir(Inode& inode) {
  // Directory offsets (ext4's are hash cookies) hold across streams: the next readdir seeks.
  auto d = BKP_TRY(open_dir_stream(table_, inode, -1));
  return reinterpret_cast<uint64_t>(d.release());
}

Result<Fs::DirHandle*> Fs::dir_handle(const fuse_file_info* fi) {
  auto local = files_.get(fi->fh);
  if (!local) {
    log::warn("open directory: {}", local.error().message);
    return tl::unexpected(local.error());
  }
  return reinterpret_cast<DirHandle*>(*local);
}

void Fs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Inode& inode = table_.get(ino);
  auto d = open_dir_stream(table_, inode, 0);
  if (!d) return (void)fuse_reply_err(req, d.error().code);
  if (int err = add_open(fi, inode, OpenKind::kDir, reinterpret_cast<uint64_t>(d->get()))) {
    return (void)fuse_reply_err(req, err);
  }
  d->release();
  if (fuse_reply_open(req, fi) == -ENOENT) {  // interrupted: no releasedir will come
    if (auto local = files_.release(fi->fh)) delete reinterpret_cast<DirHandle*>(*local);
  }
}

void Fs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                 bool plus) noexcept {
  auto handle = dir_handle(fi);
  if (!handle) return (void)fuse_reply_err(req, handle.error().code);
  DirHandle& d = **handle;
  Inode& dir = table_.get(ino);
  std::unique_ptr<char[]> buf(new (std::nothrow) char[size]);
  if (!buf) return (void)fuse_reply_err(req, ENOMEM);
  if (off != d.offset) {
    ::seekdir(d.dp, off);
    d.entry = nullptr;
    d.offset = off;
  }
  char* p = buf.get();
  size_t rem = size;
  int err = 0;
  std::optional<PathFd> dir_fd;
  while (true) {
    if (d.entry == nullptr) {
      errno = 0;
      d.entry = ::readdir(d.dp);
      if (d.entry == nullptr) {
        err = errno;  // 0 at the end of the stream
        if (err != 0) log::warn("readdir of node {}: {}", ino, std::strerror(err));
        break;
      }
    }
    const off_t next = d.entry->d_off;
    const char* name = d.entry->d_name;
    size_t entsize;
    if (plus) {
      fuse_entry_param e{};
      bool looked_up = false;
      if (!is_dot_or_dotdot(name)) {
        if (!dir_fd) {
          auto r = table_.path_fd(dir);
          if (!r) {
            err = r.error().code;
            break;
          }
          dir_fd.emplace(std::move(*r));
        }
        looked_up = lookup_entry(dir, dir_fd->get(), name, &e) == 0;
      }
      if (!looked_up) {  // ".", "..", or vanished: a name without an inode for the kernel
        e = fuse_entry_param{};
        e.attr.st_ino = d.entry->d_ino;
        e.attr.st_mode = static_cast<mode_t>(d.entry->d_type) << 12;
      }
      entsize = fuse_add_direntry_plus(req, p, rem, name, &e, next);
      if (entsize > rem) {
        if (looked_up) table_.forget(e.ino, 1);
        break;
      }
    } else {
      struct stat st {};
      st.st_ino = d.entry->d_ino;
      st.st_mode = static_cast<mode_t>(d.entry->d_type) << 12;
      entsize = fuse_add_direntry(req, p, rem, name, &st, next);
      if (entsize > rem) break;
    }
    p += entsize;
    rem -= entsize;
    d.entry = nullptr;
    d.offset = next;
  }
  // An error can only be reported if nothing was added: the lookups counted for entries
  // already in the buffer must reach the kernel.
  if (err != 0 && rem == size) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_buf(req, buf.get(), size - rem);
  }
}

void Fs::releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) noexcept {
  if (auto local = files_.release(fi->fh)) delete reinterpret_cast<DirHandle*>(*local);
  fuse_reply_err(req, 0);
}

void Fs::fsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) noexcept {
  auto handle = dir_handle(fi);
  if (!handle) return (void)fuse_reply_err(req, handle.error().code);
  int fd = ::dirfd((*handle)->dp);
  int res = datasync ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, res < 0 ? errno : 0);
}

}  // namespace bkp::fs
