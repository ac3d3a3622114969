// Namespace operations: mkdir, mknod, symlink, link, unlink, rmdir, rename.
//
// Each one is the same story: take the log's namespace lock shared, perform the real syscall
// on the parent's descriptor, stat the parent (and the new node), then under the inode table's
// lock compute the volume-relative paths, record the operation followed by the parent's kAttr
// (so directory mtimes converge), and update the known names. Only then are the locks dropped
// and the kernel answered. A failed syscall records nothing.
//
// Resent requests (a takeover, kernel_channel.h): the predecessor may have carried one out and
// died before answering. When the syscall then finds its own effect already there (EEXIST of
// the same kind of node, ENOENT of a removed name, a rename whose source is gone and target
// exists), the request is answered as the first attempt would have been. The successor's first
// attach reconciles by manifest, so what the predecessor recorded and lost is shipped once.
// BACKUPFS_FAILPOINT=die-after:NAME[,NAME...] makes a worker kill itself right after carrying
// out a namespace operation on NAME, before answering (never for a resent request): the tests'
// way to make exactly that happen (for xattr operations NAME is the xattr's name). The name
// @init stands for reading the kernel's INIT.
//
// Ownership: the syscalls run as root, so new nodes are chowned to the caller afterwards
// (setfsuid would also drop our capabilities and use root's supplementary groups, refusing
// what the kernel's default_permissions check had just allowed). In a set-group-id directory
// the group stays the directory's, as the kernel decided.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <cstdlib>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>

#include "common/log.h"
#include "common/path.h"
#include "fs/file_handle.h"
#include "fs/fs.h"

namespace bkp::fs {
namespace {

void reply_entry(fuse_req_t req, int err, const fuse_entry_param& e) {
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_entry(req, &e);
  }
}

int dir_stat(int fd, struct stat* st) {
  return ::fstatat(fd, "", st, AT_EMPTY_PATH) < 0 ? errno : 0;
}

std::set<std::string> failpoint_names() {
  std::set<std::string> names;
  const char* spec = std::getenv("BACKUPFS_FAILPOINT");
  constexpr std::string_view kPrefix = "die-after:";
  if (spec == nullptr || std::string_view(spec).substr(0, kPrefix.size()) != kPrefix) return names;
  std::string_view rest = std::string_view(spec).substr(kPrefix.size());
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    names.emplace(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return names;
}

// Whether (dir_fd, name) is the file fd names (a resent link).
bool same_file(int fd, int dir_fd, const char* name) {
  struct stat a, b;
  return ::fstatat(fd, "", &a, AT_EMPTY_PATH) == 0 &&
         ::fstatat(dir_fd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

// Whether the node at (fd, name) is what a resent make_node would have made.
bool made_already(int fd, const char* name, mode_t mode, const char* link) {
  struct stat st;
  if (::fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return false;
  if ((st.st_mode & S_IFMT) != (mode & S_IFMT)) return false;
  if (!S_ISLNK(mode)) return true;
  std::string target(link);
  std::string buf(target.size() + 1, '\0');
  return ::readlinkat(fd, name, buf.data(), buf.size()) == static_cast<ssize_t>(target.size()) &&
         buf.compare(0, target.size(), target) == 0;
}

}  // namespace

void Fs::die_after_if_asked(const char* name) {
  static const std::set<std::string> kNames = failpoint_names();
  if (kNames.empty() || KernelChannel::current().resent || !kNames.contains(name)) return;
  log::warn("BACKUPFS_FAILPOINT: dying after the operation on '{}', before answering", name);
  ::raise(SIGKILL);
}

bool Fs::resent_and_done(int err, int expected) const {
  if (err != expected || !KernelChannel::current().resent) return false;
  log::info("a resent request found its effect already there ({}): answering success",
            std::strerror(err));
  return true;
}

int Fs::give_to_caller(int fd, const char* name, int at_flags, const fuse_ctx& ctx,
                       const struct stat& dir_st, struct stat& st) {
  uid_t uid = ctx.uid;
  gid_t gid = (dir_st.st_mode & S_ISGID) ? st.st_gid : ctx.gid;
  if (st.st_uid == uid && st.st_gid == gid) return 0;
  if (::fchownat(fd, name, uid, gid, at_flags | AT_SYMLINK_NOFOLLOW) < 0) return errno;
  st.st_uid = uid;
  st.st_gid = gid;
  // A directory keeps its bits through a chown (a set-group-id one inherited from its parent
  // among them). Any other entry lost its set-id bits to the chown, and the creator asked for
  // what it had: the kernel (vfs_prepare_mode, Linux 6.0 and later) already dropped
  // set-group-id where the creator may not have it (a group it is not in, with no CAP_FSETID,
  // judged with every credential we cannot see), so a regular file gets them back; other types
  // report what the chown left.
  if (S_ISDIR(st.st_mode) || (st.st_mode & (S_ISUID | S_ISGID)) == 0) return 0;
  if (S_ISREG(st.st_mode)) {
    int res = (at_flags & AT_EMPTY_PATH) ? ::fchmod(fd, st.st_mode & 07777)
                                         : ::fchmodat(fd, name, st.st_mode & 07777, 0);
    return res < 0 ? errno : 0;
  }
  return ::fstatat(fd, name, &st, at_flags | AT_SYMLINK_NOFOLLOW) < 0 ? errno : 0;
}

int Fs::make_node(fuse_req_t req, Inode& dir, const char* name, mode_t mode, dev_t rdev,
                  const char* link, fuse_entry_param* e) {
  const fuse_ctx& ctx = *fuse_req_ctx(req);
  std::shared_lock ns(log_.namespace_lock());
  auto dfd = table_.path_fd(dir);
  if (!dfd) return dfd.error().code;
  const int d = dfd->get();
  int res;
  if (S_ISDIR(mode)) {
    res = ::mkdirat(d, name, mode & 07777);
  } else if (S_ISLNK(mode)) {
    res = ::symlinkat(link, d, name);
  } else {
    res = ::mknodat(d, name, mode, rdev);
  }
  if (res < 0) {
    const int err = errno;
    if (!resent_and_done(err, EEXIST) || !made_already(d, name, mode, link)) return err;
  }
  die_after_if_asked(name);

  struct stat dst, st;
  if (int err = dir_stat(d, &dst)) return err;
  if (::fstatat(d, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return errno;
  int err = give_to_caller(d, name, 0, ctx, dst, st);
  auto handle = handle_at(d, name, 0);
  if (!handle && !err) err = handle.error().code;
  {
    InodeTable::Lock lock(table_);
    auto dir_path = table_.path_locked(dir);
    if (!dir_path) {
      log::warn("internal: created '{}' in a directory without a known path", name);
    } else {
      wire::Op op;
      op.path = join_rel(*dir_path, name);
      op.uid = st.st_uid;
      op.gid = st.st_gid;
      op.mode = st.st_mode & 07777;
      if (S_ISDIR(st.st_mode)) {
        op.kind = wire::OpKind::kMkdir;
      } else if (S_ISLNK(st.st_mode)) {
        op.kind = wire::OpKind::kSymlink;
        op.target = link;
        op.mtime_ns = wire::to_ns(st.st_mtim);
      } else if (S_ISREG(st.st_mode)) {
        op.kind = wire::OpKind::kCreate;
        op.id = handle ? file_id_of(*handle) : 0;
      } else {
        op.kind = wire::OpKind::kMknod;
        op.mode = st.st_mode;
        op.rdev = st.st_rdev;
      }
      std::string path = op.path;
      const wire::OpKind kind = op.kind;
      const uint64_t id = op.id;
      if (kind != wire::OpKind::kCreate || id != 0) record(std::move(op));
      record_attr_locked(*dir_path, dst);
      // Creation ops carry no times: the node's own kAttr follows (by id for a regular file, so
      // the shipper sends its times even if no data is ever written).
      if (kind == wire::OpKind::kMkdir || kind == wire::OpKind::kMknod) {
        record_attr_locked(path, st);
      } else if (kind == wire::OpKind::kCreate && id != 0) {
        log_.attrs(changes::FileRef{id, *handle});
      }
    }
  }
  if (err != 0) return err;
  Inode& inode = table_.remember(std::move(*handle), st, dir, name);
  inode.no_capability.store(true);  // made here (or by a predecessor, for a resent request)
  fill_entry(inode, st, e);
  return 0;
}

void Fs::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept {
  fuse_entry_param e{};
  int err = make_node(req, table_.get(parent), name, S_IFDIR | (mode & 07777), 0, nullptr, &e);
  reply_entry(req, err, e);
}

void Fs::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               dev_t rdev) noexcept {
  fuse_entry_param e{};
  int err = S_ISDIR(mode) || S_ISLNK(mode)
                ? EINVAL
                : make_node(req, table_.get(parent), name, mode, rdev, nullptr, &e);
  reply_entry(req, err, e);
}

void Fs::symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept {
  fuse_entry_param e{};
  int err = make_node(req, table_.get(parent), name, S_IFLNK | 0777, 0, link, &e);
  reply_entry(req, err, e);
}

int Fs::link_entry(int fd, int dir_fd, const char* name) const {
  if (::linkat(fd, "", dir_fd, name, AT_EMPTY_PATH) == 0) return 0;
  const int err = errno;
  return resent_and_done(err, EEXIST) && same_file(fd, dir_fd, name) ? 0 : err;
}

void Fs::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept {
  Inode& inode = table_.get(ino);
  Inode& dir = table_.get(newparent);
  fuse_entry_param e{};
  int err = 0;
  {
    std::shared_lock ns(log_.namespace_lock());
    auto ifd = table_.path_fd(inode);
    auto dfd = table_.path_fd(dir);
    struct stat st, dst;
    if (!ifd || !dfd) {
      err = !ifd ? ifd.error().code : dfd.error().code;
    } else if ((err = link_entry(ifd->get(), dfd->get(), newname)) != 0) {
    } else if (die_after_if_asked(newname);
               ::fstatat(ifd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
      err = errno;
    } else if ((err = dir_stat(dfd->get(), &dst)) == 0) {
      InodeTable::Lock lock(table_);
      auto dir_path = table_.path_locked(dir);
      auto target = table_.path_locked(inode);
      if (dir_path && (target || inode.is_reg())) {
        wire::Op op;
        op.kind = wire::OpKind::kLink;
        op.path = join_rel(*dir_path, newname);
        op.target = target.value_or("");  // regular files are also named by id
        op.id = inode.is_reg() ? inode.ref.id : 0;
        record(std::move(op));
        record_attr_locked(*dir_path, dst);
        if (inode.is_reg()) record_attrs(inode);  // a new link moves its ctime
      } else {
        log::warn("link '{}': no known name for the linked inode; not recorded", newname);
      }
    }
    if (err == 0) {
      Inode& same = table_.remember(inode.ref.handle, st, dir, newname);
      fill_entry(same, st, &e);
    }
  }
  reply_entry(req, err, e);
}

namespace {

bool valid_rename_flags(unsigned int flags) {
  return (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) == 0 &&
         flags != (RENAME_NOREPLACE | RENAME_EXCHANGE);
}

}  // namespace

void Fs::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  fuse_reply_err(req, remove_entry(parent, name, 0, wire::OpKind::kUnlink));
}

void Fs::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  fuse_reply_err(req, remove_entry(parent, name, AT_REMOVEDIR, wire::OpKind::kRmdir));
}

std::optional<std::pair<uint64_t, UniqueFd>> Fs::grab_if_open(Inode& dir, int dir_fd,
                                                                 const char* name) {
  uint64_t node;
  ino_t ino;
  {
    InodeTable::Lock lock(table_);
    const Inode* child = table_.child_locked(dir, name);
    if (child == nullptr || !child->is_reg()) return std::nullopt;
    node = child->id;
    ino = child->ino;
  }
  if (!orphans_.is_open(node)) return std::nullopt;
  UniqueFd fd(::openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) < 0 || st.st_ino != ino) return std::nullopt;
  return std::pair{node, std::move(fd)};
}

// unlink and rmdir: unlinkat with flags, then record kind and the parent's new attributes.
// Returns the errno for the reply (0 on success).
int Fs::remove_entry(fuse_ino_t parent, const char* name, int flags, wire::OpKind kind) noexcept {
  Inode& dir = table_.get(parent);
  std::shared_lock ns(log_.namespace_lock());
  auto dfd = table_.path_fd(dir);
  if (!dfd) return dfd.error().code;
  auto open_file = flags == 0 ? grab_if_open(dir, dfd->get(), name) : std::nullopt;
  std::optional<InodeTable::RemovalHold> removing;
  if (flags == AT_REMOVEDIR) removing.emplace(table_, dir, name);
  if (::unlinkat(dfd->get(), name, flags) < 0) {
    const int err = errno;
    if (!resent_and_done(err, ENOENT)) return err;
    InodeTable::Lock lock(table_);
    table_.remove_name_locked(dir, name);
    return 0;
  }
  if (open_file) orphans_.hold_if_nameless(open_file->first, std::move(open_file->second));
  if (removing) removing->removed();
  die_after_if_asked(name);
  struct stat dst;
  int stat_err = dir_stat(dfd->get(), &dst);
  InodeTable::Lock lock(table_);
  if (auto dir_path = table_.path_locked(dir)) {
    record(wire::Op{.kind = kind, .path = join_rel(*dir_path, name)});
    if (stat_err == 0) record_attr_locked(*dir_path, dst);
  }
  table_.remove_name_locked(dir, name);
  return 0;
}

void Fs::rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                const char* newname, unsigned int flags) noexcept {
  if (!valid_rename_flags(flags)) return (void)fuse_reply_err(req, EINVAL);
  // An exchange done twice is undone: a resent one the predecessor carried out is answered as
  // it was (the predecessor noted it before replying; the rest tell from the tree).
  if ((flags & RENAME_EXCHANGE) && channel_.done_before()) {
    log::info("a resent RENAME_EXCHANGE was carried out already: answering success");
    return (void)fuse_reply_err(req, 0);
  }
  Inode& from_dir = table_.get(parent);
  Inode& to_dir = table_.get(newparent);
  const bool same_dir = &from_dir == &to_dir;
  int err = 0;
  {
    std::shared_lock ns(log_.namespace_lock());
    auto ffd = table_.path_fd(from_dir);
    auto tfd = same_dir ? table_.path_fd(from_dir) : table_.path_fd(to_dir);
    struct stat fst, tst;
    std::optional<std::pair<uint64_t, UniqueFd>> replaced;
    if (!(flags & RENAME_EXCHANGE)) {
      table_.keep_reachable(to_dir, newname);
      if (tfd) replaced = grab_if_open(to_dir, tfd->get(), newname);
    }
    if (!ffd || !tfd) {
      err = !ffd ? ffd.error().code : tfd.error().code;
    } else if (::renameat2(ffd->get(), name, tfd->get(), newname, flags) < 0) {
      err = errno;
      // Done already: the source is gone (ENOENT, which renameat2 finds before it looks at the
      // target, RENAME_NOREPLACE or not) and the target exists.
      struct stat target, source;
      if (resent_and_done(err, ENOENT) &&
          ::fstatat(ffd->get(), name, &source, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT &&
          ::fstatat(tfd->get(), newname, &target, AT_SYMLINK_NOFOLLOW) == 0) {
        err = 0;
        InodeTable::Lock lock(table_);
        table_.rename_locked(from_dir, name, to_dir, newname, flags & RENAME_EXCHANGE);
      }
    } else {
      if (flags & RENAME_EXCHANGE) channel_.note_done();
      if (replaced) orphans_.hold_if_nameless(replaced->first, std::move(replaced->second));
      die_after_if_asked(newname);
      int from_err = dir_stat(ffd->get(), &fst);
      int to_err = same_dir ? EBADF : dir_stat(tfd->get(), &tst);
      // The moved entries' own attributes, re-recorded under their new paths: the log lets a
      // later kAttr of a path supersede an earlier one, and after a rename the old path may name
      // another entry. Regular files are named by id and need nothing.
      struct stat moved_st, other_st;
      bool moved_attr = ::fstatat(tfd->get(), newname, &moved_st, AT_SYMLINK_NOFOLLOW) == 0 &&
                        !S_ISREG(moved_st.st_mode);
      bool other_attr = (flags & RENAME_EXCHANGE) &&
                        ::fstatat(ffd->get(), name, &other_st, AT_SYMLINK_NOFOLLOW) == 0 &&
                        !S_ISREG(other_st.st_mode);
      InodeTable::Lock lock(table_);
      auto from_path = table_.path_locked(from_dir);
      auto to_path = table_.path_locked(to_dir);
      if (from_path && to_path) {
        record(wire::Op{.kind = wire::OpKind::kRename,
                        .path = join_rel(*from_path, name),
                        .target = join_rel(*to_path, newname),
                        .flags = flags});
        if (from_err == 0) record_attr_locked(*from_path, fst);
        if (to_err == 0) record_attr_locked(*to_path, tst);
        if (moved_attr) record_attr_locked(join_rel(*to_path, newname), moved_st);
        if (other_attr) record_attr_locked(join_rel(*from_path, name), other_st);
      } else {
        log::warn("internal: rename '{}' -> '{}' between directories without known paths", name,
                  newname);
      }
      table_.rename_locked(from_dir, name, to_dir, newname, flags & RENAME_EXCHANGE);
    }
  }
  fuse_reply_err(req, err);
}

}  // namespace bkp::fs
