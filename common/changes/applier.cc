// Applier (see applier.h): plays operations and data into a tree without ever leaving it.
//
// Every peer-named path is validated, its parent is opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS) and the last component is handled with *at() calls that do not follow
// symlinks, so neither ".." nor a symlink planted in the tree can redirect a write. Regular
// files also live in ids/ under their FileId; an in-memory inode -> id map (rebuilt from ids/
// at open) tells which id a tree name holds, so removing the last tree name of a file also
// removes its id link. Operations tolerate their own earlier effect, because an unacknowledged
// batch is replayed in full after a reconnect. A baseline (kSyncBegin .. kSyncEnd) records
// every path it names and then prunes whatever else the tree holds, restoring the mtime of each
// directory it pruned so directory times still converge.
//
// Thread-safety beyond the header: open_id() only reads the constant ids/ descriptor and
// source_ctime() takes its own lock, so both may run concurrently with the other methods
// (backupd ships replica data while a node applies).
#include "common/changes/applier.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <list>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/files.h"
#include "common/log.h"
#include "common/path.h"

namespace bkp::changes {
namespace {

using wire::OpKind;

constexpr size_t kMaxWriteFds = 16;
constexpr size_t kEarlyWriteback = 128u << 10;  // writes this large start their writeback at once
// A run of large sequential writes leaves the pages this far behind its end written back and
// out of the page cache, in steps of the same size (applier.h, Durability).
constexpr uint64_t kDropLag = 8u << 20;
constexpr const char* kCtimes = "ctimes";  // in ids/: not a 16-hex-digit name, so never an id
constexpr const char* kCapability = "security.capability";

struct CtimeRecord {
  uint64_t id = 0;
  int64_t ctime_ns = 0;  // 0: forget
};
constexpr int kNoFollow = AT_SYMLINK_NOFOLLOW;

tl::unexpected<Error> sys_error(int e, std::string_view detail = {}) {
  if (detail.empty()) return fail(e, std::strerror(e));
  return fail(e, fmt::format("{}: {}", detail, std::strerror(e)));
}

std::string hex_id(uint64_t id) { return fmt::format("{:016x}", id); }

std::optional<uint64_t> parse_hex_id(std::string_view name) {
  if (name.size() != 16) return std::nullopt;
  uint64_t id = 0;
  for (char c : name) {
    int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (v < 0) return std::nullopt;
    id = (id << 4) | static_cast<uint64_t>(v);
  }
  return id;
}

timespec to_timespec(int64_t ns) {
  int64_t sec = ns / 1000000000, rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    --sec;
  }
  return timespec{static_cast<time_t>(sec), static_cast<long>(rem)};
}

bool uses_path(OpKind k) {
  return k != OpKind::kTruncate && k != OpKind::kPunch && k != OpKind::kAllocate;
}

// The file's security.capability, if it has one.
std::optional<std::string> capability_of(int fd) {
  char value[64];  // VFS_CAP_REVISION_3 is 24 bytes
  ssize_t n = fgetxattr(fd, kCapability, value, sizeof value);
  if (n < 0) return std::nullopt;
  return std::string(value, static_cast<size_t>(n));
}

// Puts back a capability the kernel dropped when this process wrote or chowned the file. Every
// removal the source made arrives as its own kRemoveXattr; the kernel's drop on the receiver's
// own write or chown (it drops file capabilities even for root) is not one.
void restore_capability(int fd, const std::string& value, uint64_t id) {
  if (fsetxattr(fd, kCapability, value.data(), value.size(), 0) != 0) {
    log::warn("id {:016x}: cannot put its file capability back: {}", id, std::strerror(errno));
  }
}

// Writes length zero bytes at offset: what a filesystem that cannot punch or zero a range gets.
Result<void> write_zeros(int fd, uint64_t offset, uint64_t length) {
  std::vector<char> zeros(static_cast<size_t>(std::min<uint64_t>(length, 1 << 20)), 0);
  for (uint64_t done = 0; done < length;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(length - done, zeros.size()));
    ssize_t w = pwrite(fd, zeros.data(), n, static_cast<off_t>(offset + done));
    if (w < 0) return sys_error(errno, "write zeros");
    done += static_cast<uint64_t>(w);
  }
  return {};
}

}  // namespace

struct Applier::Impl {
  UniqueFd tree;  // O_RDONLY directory: readable for scans, usable for syncfs and futimens
  UniqueFd ids;
  std::unordered_map<ino_t, uint64_t> id_by_ino;  // every regular file linked in ids/
  bool syncing = false;                           // between kSyncBegin and kSyncEnd
  std::unordered_set<std::string> named;          // paths (with ancestors) named since kSyncBegin
  std::unordered_set<std::string> kept_subtrees;  // directories kept whole since kSyncBegin
  struct WriteFd {
    uint64_t id = 0;
    UniqueFd fd;
    // The file's capability (as opened, then as kSetXattr / kRemoveXattr change it): our
    // writes drop it, so it is put back when the descriptor closes, before any commit.
    std::optional<std::string> capability;
    // The current run of large sequential writes: [run_from, run_to) is still in the page cache.
    uint64_t run_from = 0, run_to = 0;

    WriteFd(uint64_t i, UniqueFd f, std::optional<std::string> cap)
        : id(i), fd(std::move(f)), capability(std::move(cap)) {}
    WriteFd(const WriteFd&) = delete;
    WriteFd& operator=(const WriteFd&) = delete;
    // A large write [offset, offset + length) was made. Once the run it continues holds two
    // lags, everything but the last lag is waited for on disk and dropped from the page cache.
    // Advice only, like the early writeback: the commit's syncfs still decides durability and
    // reports any write error (it is recorded for the filesystem too), and only pages known
    // written are dropped.
    void drop_behind(uint64_t offset, uint64_t length) {
      if (offset != run_to) run_from = offset;
      run_to = offset + length;
      if (run_to - run_from < 2 * kDropLag) return;
      uint64_t upto = run_to - kDropLag;
      auto from = static_cast<off_t>(run_from), len = static_cast<off_t>(upto - run_from);
      run_from = upto;
      if (sync_file_range(fd.get(), from, len,
                          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                              SYNC_FILE_RANGE_WAIT_AFTER) == 0) {
        (void)posix_fadvise(fd.get(), from, len, POSIX_FADV_DONTNEED);
      }
    }
    // Closing puts back the capability our writes dropped.
    ~WriteFd() {
      if (fd && capability && !capability_of(fd.get())) restore_capability(fd.get(), *capability, id);
    }
  };
  // Ids opened for writing, newest last, at most one entry per id. A list: entries never move,
  // so a WriteFd* stays valid until its own entry goes.
  std::list<WriteFd> write_fds;
  // id -> source ctime (applier.h). Guarded by ctimes_mu: source_ctime() may be asked from
  // another thread (backupd's replica sessions) while frames are applied.
  mutable std::mutex ctimes_mu;
  std::unordered_map<uint64_t, int64_t> ctimes;
  UniqueFd ctimes_fd;                            // ids/ctimes, O_APPEND
  ApplyObserver* observer = nullptr;             // told before a file's bytes or id link go
  DevicePlaceholders devices;                    // device nodes this process may not make

  struct Where {
    UniqueFd dir;      // O_PATH parent directory
    std::string name;  // final component
  };

  // ---- resolution -------------------------------------------------------------------------
  Result<Where> locate(std::string_view rel) {
    const std::string_view parent = parent_of(rel);
    UniqueFd fd = open_beneath(tree.get(), parent.empty() ? "." : parent, O_PATH | O_DIRECTORY);
    if (!fd) return sys_error(errno, fmt::format("parent '{}'", parent));
    return Where{std::move(fd), std::string(base_of(rel))};
  }

  void note(std::string_view rel) {
    while (!rel.empty() && named.emplace(rel).second) rel = parent_of(rel);
  }

  // ---- ids ---------------------------------------------------------------------------------
  // Every removal of an id link goes through here, so an observer hears of each one.
  int unlink_id(const std::string& hex) {
    if (observer != nullptr) observer->before_unlink_id(ids.get(), hex);
    return unlinkat(ids.get(), hex.c_str(), 0);
  }

  void before_change(int fd, uint64_t offset, uint64_t length) {
    if (observer != nullptr) observer->before_change(fd, offset, length);
  }

  void forget_write_fd(uint64_t id) {
    std::erase_if(write_fds, [id](const auto& e) { return e.id == id; });
  }

  // Drops the id link of a tree inode once no tree name holds it any more. Not during a
  // baseline: a reconcile may still link the file under a new name by id (a rename made while
  // the sender was down); sync_end's prune_ids drops what stayed nameless.
  Result<void> release_inode(ino_t ino) {
    if (syncing) return {};
    BKP_TRY_VOID(devices.release(ino));
    auto it = id_by_ino.find(ino);
    if (it == id_by_ino.end()) return {};
    std::string hex = hex_id(it->second);
    struct stat st{};
    if (fstatat(ids.get(), hex.c_str(), &st, kNoFollow) == 0 && st.st_ino == ino &&
        st.st_nlink > 1) {
      return {};
    }
    if (unlink_id(hex) != 0 && errno != ENOENT) {
      return sys_error(errno, "unlink ids/" + hex);
    }
    forget_write_fd(it->second);
    BKP_TRY_VOID(forget_ctime(it->second));
    id_by_ino.erase(it);
    return {};
  }

  // ---- source ctimes -----------------------------------------------------------------------
  Result<void> append_ctime(uint64_t id, int64_t ctime_ns) {
    CtimeRecord rec{id, ctime_ns};
    if (::write(ctimes_fd.get(), &rec, sizeof rec) != static_cast<ssize_t>(sizeof rec)) {
      return sys_error(errno ? errno : EIO, "append ids/ctimes");
    }
    return {};
  }

  // The content of id is about to change (or the file is gone): its known ctime no longer holds.
  Result<void> forget_ctime(uint64_t id) {
    std::lock_guard lock(ctimes_mu);
    if (ctimes.erase(id) == 0) return {};
    return append_ctime(id, 0);
  }

  Result<void> note_ctime(uint64_t id, int64_t ctime_ns) {
    std::lock_guard lock(ctimes_mu);
    auto [it, added] = ctimes.try_emplace(id, ctime_ns);
    if (!added && it->second == ctime_ns) return {};
    it->second = ctime_ns;
    return append_ctime(id, ctime_ns);
  }

  // Folds ids/ctimes into `ctimes` for the ids that exist, and rewrites the file when mostly
  // superseded records fill it.
  Result<void> load_ctimes() {
    UniqueFd fd(openat(ids.get(), kCtimes, O_RDONLY | O_CLOEXEC));
    size_t records = 0;
    if (fd) {
      std::vector<CtimeRecord> buf(4096);
      while (true) {
        ssize_t n = ::read(fd.get(), buf.data(), buf.size() * sizeof(CtimeRecord));
        if (n < 0) return sys_error(errno, "read ids/ctimes");
        size_t count = static_cast<size_t>(n) / sizeof(CtimeRecord);
        for (size_t i = 0; i < count; ++i) {
          if (buf[i].ctime_ns == 0) {
            ctimes.erase(buf[i].id);
          } else {
            ctimes[buf[i].id] = buf[i].ctime_ns;
          }
        }
        records += count;
        if (count < buf.size()) break;  // a torn last record (crash mid-append) is ignored
      }
    } else if (errno != ENOENT) {
      return sys_error(errno, "open ids/ctimes");
    }
    std::unordered_set<uint64_t> live;
    for (const auto& [ino, id] : id_by_ino) live.insert(id);
    std::erase_if(ctimes, [&](const auto& e) { return !live.contains(e.first); });
    if (fd && records * sizeof(CtimeRecord) != file_size(fd.get())) {
      // A torn last record (a crash mid-append): cut it off, so appends stay on record
      // boundaries.
      UniqueFd w(openat(ids.get(), kCtimes, O_WRONLY | O_CLOEXEC));
      if (!w || ftruncate(w.get(), static_cast<off_t>(records * sizeof(CtimeRecord))) != 0) {
        return sys_error(errno, "truncate ids/ctimes");
      }
    }
    if (fd && records > 2 * ctimes.size() + 1024) {
      // Compaction is an optimisation: on a full disk the old list keeps serving.
      if (auto r = rewrite_ctimes(); !r) log::warn("ids/ctimes not compacted: {}", r.error().message);
    } else if (!fd) {
      BKP_TRY_VOID(rewrite_ctimes());
    }
    ctimes_fd.reset(openat(ids.get(), kCtimes, O_WRONLY | O_APPEND | O_CLOEXEC));
    if (!ctimes_fd) return sys_error(errno, "open ids/ctimes");
    return {};
  }

  // Writes the live records to ids/ctimes.new, synced, and renames it over ids/ctimes.
  Result<void> rewrite_ctimes() {
    std::string tmp = std::string(kCtimes) + ".new";
    UniqueFd out(openat(ids.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) return sys_error(errno, "create ids/" + tmp);
    std::vector<CtimeRecord> all;
    all.reserve(ctimes.size());
    for (const auto& [id, ctime] : ctimes) all.push_back(CtimeRecord{id, ctime});
    const char* p = reinterpret_cast<const char*>(all.data());
    size_t left = all.size() * sizeof(CtimeRecord);
    auto failed = [&](const char* what) {
      int e = errno;
      unlinkat(ids.get(), tmp.c_str(), 0);
      return sys_error(e, std::string(what) + " ids/" + tmp);
    };
    while (left > 0) {
      ssize_t n = ::write(out.get(), p, left);
      if (n < 0) return failed("write");
      p += n;
      left -= static_cast<size_t>(n);
    }
    if (fdatasync(out.get()) != 0) return failed("sync");
    if (renameat(ids.get(), tmp.c_str(), ids.get(), kCtimes) != 0) return failed("rename");
    return {};
  }

  static uint64_t file_size(int fd) {
    struct stat st{};
    return fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  }

  // Links the file at dir/name into ids/ as id, replacing a stale link of another inode.
  Result<void> link_id(int dir, const std::string& name, ino_t ino, uint64_t id) {
    std::string hex = hex_id(id);
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (linkat(dir, name.c_str(), ids.get(), hex.c_str(), 0) == 0) break;
      if (errno != EEXIST || attempt == 1) return sys_error(errno, "link ids/" + hex);
      struct stat st{};
      if (fstatat(ids.get(), hex.c_str(), &st, kNoFollow) == 0 && st.st_ino == ino) break;
      id_by_ino.erase(st.st_ino);
      if (unlink_id(hex) != 0) return sys_error(errno, "unlink ids/" + hex);
    }
    forget_write_fd(id);
    id_by_ino[ino] = id;
    return {};
  }

  WriteFd* cached_write_fd(uint64_t id) {
    for (auto& e : write_fds) {
      if (e.id == id) return &e;
    }
    return nullptr;
  }
  // Keeps fd, open for writing, as id's descriptor until the commit. capability: the file's.
  void keep_write_fd(uint64_t id, UniqueFd fd, std::optional<std::string> capability) {
    if (write_fds.size() >= kMaxWriteFds) write_fds.pop_front();
    write_fds.emplace_back(id, std::move(fd), std::move(capability));
  }
  // The cached O_WRONLY descriptor of ids/<id>; nullptr when the id does not exist. Valid until
  // it is forgotten, evicted by later opens, or the commit.
  Result<WriteFd*> open_write(uint64_t id) {
    if (WriteFd* e = cached_write_fd(id)) return e;
    std::string hex = hex_id(id);
    UniqueFd fd(openat(ids.get(), hex.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT) return nullptr;
      return sys_error(errno, "open ids/" + hex);
    }
    auto capability = capability_of(fd.get());
    keep_write_fd(id, std::move(fd), std::move(capability));
    return &write_fds.back();
  }
  // Its descriptor; -1 when the id does not exist.
  Result<int> write_fd(uint64_t id) {
    WriteFd* e = BKP_TRY(open_write(id));
    return e != nullptr ? e->fd.get() : -1;
  }

  // ---- removal -----------------------------------------------------------------------------
  // Removes dir/name whatever it is (a directory with all its contents), keeping ids/ in step.
  Result<void> remove_entry(int dir, const std::string& name) {
    struct stat st{};
    if (fstatat(dir, name.c_str(), &st, kNoFollow) != 0) {
      return errno == ENOENT ? Result<void>{} : sys_error(errno, "stat '" + name + "'");
    }
    if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) return sys_error(errno, "open directory '" + name + "'");
      for (const auto& child : BKP_TRY(list_names(sub.get(), name))) {
        BKP_TRY_VOID(remove_entry(sub.get(), child));
      }
      if (unlinkat(dir, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return sys_error(errno, "remove directory '" + name + "'");
      }
      return {};
    }
    if (unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) {
      return sys_error(errno, "remove '" + name + "'");
    }
    if (S_ISREG(st.st_mode)) return release_inode(st.st_ino);
    return {};
  }

  // ---- attributes --------------------------------------------------------------------------
  // Owner and mode only when they differ: a chown, even to the same owner, makes the kernel drop
  // security.capability (and set-id bits), which a file keeps on the source. ino: where to put
  // the file's inode number, if wanted.
  Result<void> set_attrs_fd(int fd, const wire::Op& op, ino_t* ino = nullptr) {
    struct stat st{};
    if (fstat(fd, &st) != 0) return sys_error(errno, "stat");
    if (ino != nullptr) *ino = st.st_ino;
    if (st.st_uid != op.uid || st.st_gid != op.gid) {
      auto capability = S_ISREG(st.st_mode) ? capability_of(fd) : std::nullopt;
      if (fchown(fd, op.uid, op.gid) != 0) return sys_error(errno, "chown");
      if (capability) restore_capability(fd, *capability, op.id);  // see restore_capability
    }
    if ((st.st_mode & 07777) != (op.mode & 07777) && fchmod(fd, op.mode & 07777) != 0) {
      return sys_error(errno, "chmod");
    }
    if (op.kind == OpKind::kAttr) {
      timespec times[2] = {to_timespec(op.atime_ns), to_timespec(op.mtime_ns)};
      if (futimens(fd, times) != 0) return sys_error(errno, "set times");
    }
    return {};
  }

  Result<void> set_attrs_at(int dir, const std::string& name, const wire::Op& op, bool times) {
    struct stat st{};
    if (fstatat(dir, name.c_str(), &st, kNoFollow) != 0) return sys_error(errno);
    if ((st.st_uid != op.uid || st.st_gid != op.gid) &&
        fchownat(dir, name.c_str(), op.uid, op.gid, kNoFollow) != 0) {
      return sys_error(errno, "chown");
    }
    // fchmodat cannot refuse to follow a symlink, and a symlink's mode means nothing anyway.
    if (!S_ISLNK(st.st_mode) && (st.st_mode & 07777) != (op.mode & 07777) &&
        fchmodat(dir, name.c_str(), op.mode & 07777, 0) != 0) {
      return sys_error(errno, "chmod");
    }
    if (times) {
      timespec ts[2] = {to_timespec(op.atime_ns), to_timespec(op.mtime_ns)};
      if (utimensat(dir, name.c_str(), ts, kNoFollow) != 0) return sys_error(errno, "set times");
    }
    return {};
  }

  // ---- operations --------------------------------------------------------------------------
  Result<void> create(const wire::Op& op) {
    if (op.id == 0) return fail(EINVAL, "file id 0 is reserved");
    if (op.path.empty()) return fail(EINVAL, "cannot create the volume root");
    Where w = BKP_TRY(locate(op.path));
    const char* name = w.name.c_str();
    UniqueFd fd;
    for (int attempt = 0; attempt < 2 && !fd; ++attempt) {
      fd.reset(openat(w.dir.get(), name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (fd) break;
      if (errno != EEXIST || attempt == 1) return sys_error(errno);
      struct stat st{};
      if (fstatat(w.dir.get(), name, &st, kNoFollow) == 0 && S_ISREG(st.st_mode) &&
          id_of(st.st_ino) == op.id) {  // replay: the path already is this file
        fd.reset(openat(w.dir.get(), name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) return sys_error(errno);
        before_change(fd.get(), 0, ApplyObserver::kToEnd);
        if (ftruncate(fd.get(), 0) != 0) return sys_error(errno, "truncate");
      } else {
        BKP_TRY_VOID(remove_entry(w.dir.get(), w.name));
      }
    }
    BKP_TRY_VOID(forget_ctime(op.id));
    ino_t ino = 0;
    BKP_TRY_VOID(set_attrs_fd(fd.get(), op, &ino));
    BKP_TRY_VOID(link_id(w.dir.get(), w.name, ino, op.id));
    // The file's data and closing Attr usually follow in the same batch: they use this
    // descriptor. A created file has no capability (one set later comes as kSetXattr).
    keep_write_fd(op.id, std::move(fd), std::nullopt);
    return {};
  }

  Result<void> mkdir(const wire::Op& op) {
    if (op.path.empty()) return set_attrs_fd(tree.get(), op);
    Where w = BKP_TRY(locate(op.path));
    const char* name = w.name.c_str();
    if (mkdirat(w.dir.get(), name, op.mode & 07777) != 0) {
      if (errno != EEXIST) return sys_error(errno);
      struct stat st{};
      if (fstatat(w.dir.get(), name, &st, kNoFollow) != 0) return sys_error(errno);
      if (!S_ISDIR(st.st_mode)) {
        BKP_TRY_VOID(remove_entry(w.dir.get(), w.name));
        if (mkdirat(w.dir.get(), name, op.mode & 07777) != 0) return sys_error(errno);
      }
    }
    UniqueFd fd(openat(w.dir.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return sys_error(errno, "open");
    return set_attrs_fd(fd.get(), op);
  }

  Result<void> mknod(const wire::Op& op) {
    mode_t type = op.mode & S_IFMT;
    if (type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR && type != S_IFBLK) {
      return fail(EINVAL, fmt::format("mknod of unsupported file type {:o}", type));
    }
    if (op.path.empty()) return fail(EINVAL, "cannot replace the volume root");
    Where w = BKP_TRY(locate(op.path));
    // Without CAP_MKNOD (backupd's unit), a device node becomes a placeholder.
    auto make = [&]() -> Result<void> {
      if (mknodat(w.dir.get(), w.name.c_str(), op.mode & (S_IFMT | 07777), op.rdev) == 0) return {};
      if (errno != EPERM || (type != S_IFCHR && type != S_IFBLK)) return sys_error(errno);
      return devices.create(w.dir.get(), w.name, type, op.rdev);
    };
    if (auto made = make(); !made) {
      if (made.error().code != EEXIST) return made;
      BKP_TRY_VOID(remove_entry(w.dir.get(), w.name));
      BKP_TRY_VOID(make());
    }
    return set_attrs_at(w.dir.get(), w.name, op, false);
  }

  Result<void> symlink(const wire::Op& op) {
    if (op.path.empty()) return fail(EINVAL, "cannot replace the volume root");
    if (op.target.find('\0') != std::string::npos) return fail(EINVAL, "symlink target has a NUL");
    // Checked before the name is replaced: symlink(2) would refuse it only after EEXIST.
    if (op.target.empty()) return sys_error(ENOENT);
    if (op.target.size() >= PATH_MAX) return sys_error(ENAMETOOLONG);
    Where w = BKP_TRY(locate(op.path));
    const char* name = w.name.c_str();
    if (symlinkat(op.target.c_str(), w.dir.get(), name) != 0) {
      if (errno != EEXIST) return sys_error(errno);
      std::string cur(op.target.size() + 1, '\0');
      ssize_t n = readlinkat(w.dir.get(), name, cur.data(), cur.size());
      if (n != static_cast<ssize_t>(op.target.size()) || cur.compare(0, n, op.target) != 0) {
        BKP_TRY_VOID(remove_entry(w.dir.get(), w.name));
        if (symlinkat(op.target.c_str(), w.dir.get(), name) != 0) return sys_error(errno);
      }
    }
    if (fchownat(w.dir.get(), name, op.uid, op.gid, kNoFollow) != 0) return sys_error(errno, "chown");
    timespec ts[2] = {to_timespec(op.atime_ns), to_timespec(op.mtime_ns)};
    if (utimensat(w.dir.get(), name, ts, kNoFollow) != 0) return sys_error(errno, "set times");
    return {};
  }

  Result<void> link(const wire::Op& op) {
    if (op.path.empty()) return fail(EINVAL, "cannot replace the volume root");
    Where to = BKP_TRY(locate(op.path));
    UniqueFd src_dir_owned;
    int src_dir = ids.get();
    std::string src_name = hex_id(op.id);
    struct stat src{};
    if (op.id == 0 || fstatat(ids.get(), src_name.c_str(), &src, kNoFollow) != 0) {
      BKP_TRY_VOID(validate_rel_path(op.target));
      auto from = locate(op.target);
      if (!from || op.target.empty() ||
          fstatat(from->dir.get(), from->name.c_str(), &src, kNoFollow) != 0) {
        log::debug("apply link {} -> {}: source is gone, skipped (replay)", op.path, op.target);
        return {};
      }
      src_dir_owned = std::move(from->dir);
      src_dir = src_dir_owned.get();
      src_name = from->name;
    }
    // link(2) refuses directories, but only after EEXIST when the new name exists: refused
    // here first, so the fallback below never removes an entry for a link that cannot be made.
    if (S_ISDIR(src.st_mode)) return sys_error(EPERM);
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (linkat(src_dir, src_name.c_str(), to.dir.get(), to.name.c_str(), 0) == 0) return {};
      if (errno != EEXIST || attempt == 1) return sys_error(errno);
      struct stat cur{};
      if (fstatat(to.dir.get(), to.name.c_str(), &cur, kNoFollow) == 0 && cur.st_ino == src.st_ino) {
        return {};  // replay: the name already is this file
      }
      BKP_TRY_VOID(remove_entry(to.dir.get(), to.name));
    }
    return {};
  }

  // kUnlink (dir == false) and kRmdir (dir == true). A missing entry is a replay.
  Result<void> remove(const wire::Op& op, bool dir) {
    if (op.path.empty()) return fail(EINVAL, "cannot remove the volume root");
    auto w = locate(op.path);
    if (!w) return w.error().code == ENOENT ? Result<void>{} : tl::unexpected(w.error());
    struct stat st{};
    if (fstatat(w->dir.get(), w->name.c_str(), &st, kNoFollow) != 0) {
      return errno == ENOENT ? Result<void>{} : sys_error(errno);
    }
    if (static_cast<bool>(S_ISDIR(st.st_mode)) != dir) return sys_error(dir ? ENOTDIR : EISDIR);
    if (unlinkat(w->dir.get(), w->name.c_str(), dir ? AT_REMOVEDIR : 0) != 0) {
      // The stream says the directory is gone: whatever this side still holds in it is stale.
      if (dir && (errno == ENOTEMPTY || errno == EEXIST)) return remove_entry(w->dir.get(), w->name);
      return sys_error(errno);
    }
    return S_ISREG(st.st_mode) ? release_inode(st.st_ino) : Result<void>{};
  }

  Result<void> rename(const wire::Op& op) {
    BKP_TRY_VOID(validate_rel_path(op.target));
    if (op.path.empty() || op.target.empty()) return fail(EINVAL, "cannot rename the volume root");
    auto from = locate(op.path);
    struct stat src{};
    if (!from || fstatat(from->dir.get(), from->name.c_str(), &src, kNoFollow) != 0) {
      int e = from ? errno : from.error().code;
      if (e != ENOENT) return from ? sys_error(e) : tl::unexpected(from.error());
      log::debug("apply rename {} -> {}: source is gone, skipped (replay)", op.path, op.target);
      return {};
    }
    // Onto its own name: nothing to do, whatever the flags (the fallback below would remove
    // the entry it is moving). Into its own subtree: refused as rename(2) refuses it, before
    // the fallback removes anything.
    if (op.path == op.target) return {};
    if (op.target.starts_with(op.path + "/")) {
      return fail(EINVAL, "apply rename " + op.path + " -> " + op.target + ": into itself");
    }
    Where to = BKP_TRY(locate(op.target));
    struct stat dst{};
    bool replaced = fstatat(to.dir.get(), to.name.c_str(), &dst, kNoFollow) == 0;
    unsigned flags = op.flags & (RENAME_NOREPLACE | RENAME_EXCHANGE);
    auto do_rename = [&](unsigned f) {
      return renameat2(from->dir.get(), from->name.c_str(), to.dir.get(), to.name.c_str(), f);
    };
    if (do_rename(flags) != 0) {
      int e = errno;
      if (flags & RENAME_EXCHANGE) {
        if (e == ENOENT) return {};  // the other side is gone: a replay
        return sys_error(e);
      }
      // The stream says the target now is the source; whatever this side has there is stale.
      if (e != EEXIST && e != ENOTEMPTY && e != EISDIR && e != ENOTDIR) return sys_error(e);
      if (e != EEXIST || !S_ISREG(dst.st_mode)) BKP_TRY_VOID(remove_entry(to.dir.get(), to.name));
      if (do_rename(0) != 0) return sys_error(errno);
    }
    if (replaced && !(flags & RENAME_EXCHANGE) && S_ISREG(dst.st_mode) && dst.st_ino != src.st_ino) {
      return release_inode(dst.st_ino);
    }
    return {};
  }

  Result<void> truncate(const wire::Op& op) {
    int fd = BKP_TRY(write_fd(op.id));
    if (fd < 0) return {};  // removed later in the stream
    BKP_TRY_VOID(forget_ctime(op.id));
    before_change(fd, op.size, ApplyObserver::kToEnd);
    if (ftruncate(fd, static_cast<off_t>(op.size)) != 0) return sys_error(errno);
    return {};
  }

  // A hole where the source has one. A filesystem that cannot punch gets zeros written.
  Result<void> punch(const wire::Op& op) {
    int fd = BKP_TRY(write_fd(op.id));
    if (fd < 0) return {};  // removed later in the stream
    BKP_TRY_VOID(forget_ctime(op.id));
    auto offset = static_cast<off_t>(op.offset), length = static_cast<off_t>(op.size);
    before_change(fd, op.offset, op.size);
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) return {};
    if (errno != EOPNOTSUPP) return sys_error(errno, "punch a hole");
    return write_zeros(fd, op.offset, op.size);
  }

  // Whether reserving `bytes` leaves this filesystem 2% of its size for everything else.
  static bool leaves_room(int fd, uint64_t bytes) {
    struct statvfs fs {};
    if (fstatvfs(fd, &fs) != 0) return true;  // let fallocate itself answer
    uint64_t avail = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    uint64_t reserve = static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize / 50;
    return bytes <= avail && avail - bytes >= reserve;
  }

  // fallocate as the source did it: a preallocation (the size grows unless KEEP_SIZE) or a zero
  // range. A filesystem that cannot gets what the range reads as: zeros written for a zero
  // range, the new size for a growing allocation. A reservation this disk cannot spare (a node
  // preallocating more than the receiver has, or a hostile one) is not made: it would fill the
  // disk for every volume on it and fail this one for good, while what it reserves reads as
  // zeros anyway. The range then gets those zeros as a hole (punched for a zero range) and the
  // new size, so the copy's content stays the source's; only its allocation differs (logged).
  Result<void> allocate(const wire::Op& op) {
    if ((op.flags & ~(wire::kAllocateKeepSize | wire::kAllocateZeroRange)) != 0 ||
        op.size == 0 || op.size > UINT64_MAX - op.offset ||
        op.offset + op.size > static_cast<uint64_t>(INT64_MAX)) {
      return fail(EINVAL, "allocate: bad flags or range");
    }
    int fd = BKP_TRY(write_fd(op.id));
    if (fd < 0) return {};  // removed later in the stream
    BKP_TRY_VOID(forget_ctime(op.id));
    const bool zero = op.flags & wire::kAllocateZeroRange;
    const bool keep_size = op.flags & wire::kAllocateKeepSize;
    if (zero) before_change(fd, op.offset, op.size);
    const int mode = (keep_size ? FALLOC_FL_KEEP_SIZE : 0) | (zero ? FALLOC_FL_ZERO_RANGE : 0);
    const bool room = leaves_room(fd, op.size);
    if (room &&
        fallocate(fd, mode, static_cast<off_t>(op.offset), static_cast<off_t>(op.size)) == 0) {
      return {};
    }
    if (room && errno != EOPNOTSUPP) return sys_error(errno, zero ? "zero a range" : "allocate");
    struct stat st;
    if (fstat(fd, &st) != 0) return sys_error(errno);
    const uint64_t size = static_cast<uint64_t>(st.st_size), end = op.offset + op.size;
    const uint64_t zero_end = keep_size ? std::min(end, size) : end;
    if (!room) {
      log::warn("id {:016x}: {} of {} bytes at {} applied without reserving the space, which "
                "this disk cannot spare (the content is the same: zeros)",
                op.id, zero ? "zero range" : "preallocation", op.size, op.offset);
      const uint64_t within = std::min(end, size);
      if (zero && within > op.offset &&
          fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(op.offset),
                    static_cast<off_t>(within - op.offset)) != 0) {
        if (errno != EOPNOTSUPP) return sys_error(errno, "zero a range (as a hole)");
        BKP_TRY_VOID(write_zeros(fd, op.offset, within - op.offset));
      }
    } else if (zero && zero_end > op.offset) {
      return write_zeros(fd, op.offset, zero_end - op.offset);
    }
    if (!keep_size && end > size && ftruncate(fd, static_cast<off_t>(end)) != 0) {
      return sys_error(errno);
    }
    return {};
  }

  Result<void> attr(const wire::Op& op) {
    if (op.id != 0) {
      UniqueFd opened;
      int fd = -1;
      if (WriteFd* e = cached_write_fd(op.id)) {
        fd = e->fd.get();
      } else {
        opened.reset(openat(ids.get(), hex_id(op.id).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!opened) return errno == ENOENT ? Result<void>{} : sys_error(errno, "open");
        fd = opened.get();
      }
      BKP_TRY_VOID(set_attrs_fd(fd, op));
      return op.ctime_ns != 0 ? note_ctime(op.id, op.ctime_ns) : Result<void>{};
    }
    if (op.path.empty()) return set_attrs_fd(tree.get(), op);
    auto w = locate(op.path);
    if (!w) return w.error().code == ENOENT ? Result<void>{} : tl::unexpected(w.error());
    auto r = set_attrs_at(w->dir.get(), w->name, op, true);
    if (!r && r.error().code == ENOENT) return {};  // removed later in the stream
    return r;
  }

  // Opens what an xattr op names. Files and directories get a real descriptor; symlinks and
  // special files (a FIFO would block on open) an O_PATH one, used through /proc/self/fd.
  Result<std::pair<UniqueFd, bool>> open_for_xattr(const wire::Op& op) {
    if (op.id != 0) {
      UniqueFd fd(openat(ids.get(), hex_id(op.id).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return sys_error(errno, "open");
      return std::pair{std::move(fd), false};
    }
    if (op.path.empty()) return std::pair{UniqueFd(dup(tree.get())), false};
    Where w = BKP_TRY(locate(op.path));
    struct stat st{};
    if (fstatat(w.dir.get(), w.name.c_str(), &st, kNoFollow) != 0) return sys_error(errno);
    bool via_proc = !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
    int flags = via_proc ? O_PATH | O_NOFOLLOW | O_CLOEXEC
                         : O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
    UniqueFd fd(openat(w.dir.get(), w.name.c_str(), flags));
    if (!fd) return sys_error(errno, "open");
    return std::pair{std::move(fd), via_proc};
  }

  Result<void> xattr(const wire::Op& op) {
    if (WriteFd* e = op.id != 0 && op.name == kCapability ? cached_write_fd(op.id) : nullptr) {
      if (op.kind == OpKind::kSetXattr) {
        e->capability = op.value;
      } else {
        e->capability.reset();
      }
    }
    auto target = open_for_xattr(op);
    if (!target) return target.error().code == ENOENT ? Result<void>{} : tl::unexpected(target.error());
    auto& [fd, via_proc] = *target;
    std::string proc = fmt::format("/proc/self/fd/{}", fd.get());
    int rc;
    if (op.kind == OpKind::kSetXattr) {
      rc = via_proc ? setxattr(proc.c_str(), op.name.c_str(), op.value.data(), op.value.size(), 0)
                    : fsetxattr(fd.get(), op.name.c_str(), op.value.data(), op.value.size(), 0);
    } else {
      rc = via_proc ? removexattr(proc.c_str(), op.name.c_str())
                    : fremovexattr(fd.get(), op.name.c_str());
      if (rc != 0 && errno == ENODATA) rc = 0;  // replay
    }
    if (rc == 0) return {};
    if (errno == EOPNOTSUPP) {  // this filesystem cannot hold it; stalling the stream won't help
      log::warn("apply {} {} '{}': not supported here, skipped", wire::op_name(op.kind), op.path, op.name);
      return {};
    }
    if (errno == EPERM && op.name.starts_with("trusted.")) {
      // trusted.* needs CAP_SYS_ADMIN, which a receiver running as its own user (the units)
      // does not have; without it the whole stream would stop at this one attribute.
      log::warn("apply {} {} '{}': trusted.* attributes need CAP_SYS_ADMIN, which this process "
                "lacks; skipped", wire::op_name(op.kind), op.path, op.name);
      return {};
    }
    return sys_error(errno);
  }

  // Removes every entry under dir (at rel) that the baseline did not name.
  Result<void> prune(int dir, const std::string& rel) {
    struct stat before{};
    if (fstat(dir, &before) != 0) return sys_error(errno, "stat '" + rel + "'");
    bool removed = false;
    for (const auto& name : BKP_TRY(list_names(dir, rel.empty() ? "." : rel))) {
      std::string child = join_rel(rel, name);
      if (!named.contains(child)) {
        BKP_TRY_VOID(remove_entry(dir, name).map_error([&](Error e) { return e.wrap(child); }));
        removed = true;
        continue;
      }
      if (kept_subtrees.contains(child)) continue;  // held whole: nothing under it to prune
      UniqueFd sub(openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub) BKP_TRY_VOID(prune(sub.get(), child));
    }
    if (removed) {  // the baseline set this directory's times before we removed anything
      timespec ts[2] = {before.st_atim, before.st_mtim};
      if (futimens(dir, ts) != 0) return sys_error(errno, "set times of '" + rel + "'");
    }
    return {};
  }

  // Drops ids/ links whose file has no tree name (nlink 1) and rebuilds the inode map.
  Result<void> prune_ids() {
    id_by_ino.clear();
    write_fds.clear();
    for (const auto& name : BKP_TRY(list_names(ids.get(), "ids"))) {
      auto id = parse_hex_id(name);
      struct stat st{};
      if (!id || fstatat(ids.get(), name.c_str(), &st, kNoFollow) != 0 || !S_ISREG(st.st_mode)) {
        continue;
      }
      if (st.st_nlink > 1) {
        id_by_ino[st.st_ino] = *id;
        continue;
      }
      if (unlink_id(name) != 0 && errno != ENOENT) {
        return sys_error(errno, "unlink ids/" + name);
      }
      if (ctimes_fd) BKP_TRY_VOID(forget_ctime(*id));
    }
    return {};
  }

  Result<void> sync_end() {
    if (!syncing) {
      log::warn("apply sync-end without sync-begin: nothing pruned");
      return {};
    }
    BKP_TRY_VOID(prune(tree.get(), ""));
    BKP_TRY_VOID(prune_ids());
    BKP_TRY_VOID(devices.prune());
    syncing = false;
    named = {};
    kept_subtrees = {};
    return {};
  }

  // A reconcile says this entry is already as the source has it (a directory: with everything
  // under it, which prune then leaves alone); apply() noted its path. One that is missing means
  // this tree changed behind the stream's back: say so, the entry stays missing until its next
  // change (a verify finds it).
  Result<void> keep(const wire::Op& op) {
    if (op.path.empty()) return {};
    struct stat st{};
    auto w = locate(op.path);
    if (!w || fstatat(w->dir.get(), w->name.c_str(), &st, kNoFollow) != 0) {
      log::warn("apply keep {}: not in this tree", op.path);
      return {};
    }
    if (syncing && S_ISDIR(op.mode) && S_ISDIR(st.st_mode)) kept_subtrees.insert(op.path);
    return {};
  }

  std::optional<uint64_t> id_of(ino_t ino) const {
    auto it = id_by_ino.find(ino);
    if (it == id_by_ino.end()) return std::nullopt;
    return it->second;
  }

  Result<void> dispatch(const wire::Op& op) {
    switch (op.kind) {
      case OpKind::kMkdir: return mkdir(op);
      case OpKind::kCreate: return create(op);
      case OpKind::kMknod: return mknod(op);
      case OpKind::kSymlink: return symlink(op);
      case OpKind::kLink: return link(op);
      case OpKind::kUnlink: return remove(op, false);
      case OpKind::kRmdir: return remove(op, true);
      case OpKind::kRename: return rename(op);
      case OpKind::kTruncate: return truncate(op);
      case OpKind::kAttr: return attr(op);
      case OpKind::kSetXattr:
      case OpKind::kRemoveXattr: return xattr(op);
      case OpKind::kSyncBegin:
        syncing = true;
        named.clear();
        kept_subtrees.clear();
        return {};
      case OpKind::kSyncEnd: return sync_end();
      case OpKind::kKeep: return keep(op);
      case OpKind::kPunch: return punch(op);
      case OpKind::kAllocate: return allocate(op);
    }
    return fail(EINVAL, "unknown operation");
  }
};

Result<std::unique_ptr<Applier>> Applier::open(const std::string& base, const std::string& tree_rel,
                                               const std::string& ids_rel) {
  std::string tree_dir = base + "/" + tree_rel, ids_dir = base + "/" + ids_rel;
  BKP_TRY_VOID(make_dirs(base));
  UniqueFd base_fd(::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!base_fd) return fail_errno("open " + base);
  std::unique_ptr<Applier> a(new Applier());
  a->impl_ = std::make_unique<Impl>();
  Impl& impl = *a->impl_;
  impl.tree = BKP_TRY(open_dir_beneath(base_fd.get(), tree_rel).map_error([&](Error e) {
    return e.wrap(base);
  }));
  impl.ids = BKP_TRY(open_dir_beneath(base_fd.get(), ids_rel).map_error([&](Error e) {
    return e.wrap(base);
  }));
  struct stat t{}, i{};
  if (fstat(impl.tree.get(), &t) != 0 || fstat(impl.ids.get(), &i) != 0) {
    return fail_errno("stat " + tree_dir);
  }
  if (t.st_dev != i.st_dev) {
    return fail(EXDEV, fmt::format("{} and {} must be on one filesystem", tree_dir, ids_dir));
  }
  // Also drops id links a crash left without a tree name.
  BKP_TRY_VOID(impl.prune_ids().map_error([&](Error e) { return e.wrap("index " + ids_dir); }));
  BKP_TRY_VOID(impl.load_ctimes().map_error([&](Error e) { return e.wrap(ids_dir); }));
  BKP_TRY_VOID(impl.devices.open(impl.ids.get()).map_error([&](Error e) { return e.wrap(ids_dir); }));
  return a;
}

Applier::~Applier() = default;

Result<void> Applier::apply(const wire::Op& op) {
  std::string what = op.kind == OpKind::kRename || op.kind == OpKind::kLink
                         ? fmt::format("{} -> {}", op.path, op.target)
                     : op.id != 0 && (!uses_path(op.kind) || op.kind == OpKind::kAttr ||
                                      op.path.empty())
                         ? fmt::format("id {}", hex_id(op.id))
                         : op.path;
  auto context = [&] { return fmt::format("apply {} {}", wire::op_name(op.kind), what); };
  if (uses_path(op.kind)) {
    auto valid = validate_rel_path(op.path);
    if (!valid) return tl::unexpected(valid.error().wrap(context()));
  }
  if (impl_->syncing) {
    if (op.kind == OpKind::kRename) {
      impl_->note(op.target);
    } else if (op.kind != OpKind::kUnlink && op.kind != OpKind::kRmdir && uses_path(op.kind) &&
               !(op.kind == OpKind::kAttr && op.id != 0)) {
      impl_->note(op.path);
    }
  }
  auto r = impl_->dispatch(op);
  if (!r) return tl::unexpected(r.error().wrap(context()));
  return {};
}

Result<void> Applier::write(const wire::Write& w) {
  auto context = [&] { return fmt::format("apply write {} at {}", hex_id(w.id), w.offset); };
  auto* file = BKP_TRY(impl_->open_write(w.id).map_error([&](Error e) { return e.wrap(context()); }));
  if (file == nullptr) return {};  // removed later in the stream
  int fd = file->fd.get();
  BKP_TRY_VOID(impl_->forget_ctime(w.id).map_error([&](Error e) { return e.wrap(context()); }));
  impl_->before_change(fd, w.offset, w.data.size());
  size_t done = 0;
  while (done < w.data.size()) {
    ssize_t n = pwrite(fd, w.data.data() + done, w.data.size() - done,
                       static_cast<off_t>(w.offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(context());
    }
    done += static_cast<size_t>(n);
  }
  // Start writing large pieces back now, while the stream goes on, so the commit's sync finds
  // little left to flush and the sender's wait for its ack stays short. Advice only: the sync
  // still decides durability, so a failure here changes nothing.
  if (w.data.size() >= kEarlyWriteback) {
    (void)sync_file_range(fd, static_cast<off_t>(w.offset), static_cast<off_t>(w.data.size()),
                          SYNC_FILE_RANGE_WRITE);
    file->drop_behind(w.offset, w.data.size());
  }
  return {};
}

Result<void> Applier::commit() {
  impl_->write_fds.clear();
  if (syncfs(impl_->tree.get()) != 0) return fail_errno("commit: syncfs");
  return {};
}

Result<UniqueFd> Applier::open_id(uint64_t id) const {
  std::string hex = hex_id(id);
  UniqueFd fd(openat(impl_->ids.get(), hex.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("open ids/" + hex);
  return fd;
}

std::optional<uint64_t> Applier::id_of_inode(ino_t ino) const { return impl_->id_of(ino); }

ino_t Applier::inode_at(const std::string& rel) const {
  auto w = impl_->locate(rel);
  struct stat st{};
  if (!w || fstatat(w->dir.get(), w->name.c_str(), &st, kNoFollow) != 0) return 0;
  return st.st_ino;
}

int64_t Applier::source_ctime(uint64_t id) const {
  std::lock_guard lock(impl_->ctimes_mu);
  auto it = impl_->ctimes.find(id);
  return it == impl_->ctimes.end() ? 0 : it->second;
}

Result<void> Applier::forget_source_ctimes() {
  std::lock_guard lock(impl_->ctimes_mu);
  impl_->ctimes.clear();
  if (ftruncate(impl_->ctimes_fd.get(), 0) != 0 || fdatasync(impl_->ctimes_fd.get()) != 0) {
    return fail_errno("forget ids/ctimes");
  }
  return {};
}

int Applier::tree_fd() const { return impl_->tree.get(); }

int Applier::ids_fd() const { return impl_->ids.get(); }

const DevicePlaceholders& Applier::placeholders() const { return impl_->devices; }

void Applier::set_observer(ApplyObserver* observer) { impl_->observer = observer; }

bool Applier::syncing() const { return impl_->syncing; }

}  // namespace bkp::changes
