// Baseline scan (see scan.h). A depth-first walk with openat/fdopendir so no path is ever
// re-resolved from the root and no symlink is followed. Regular files are described by their
// data regions (SEEK_DATA/SEEK_HOLE) so a sparse file stays sparse on the other side. Any
// non-directory seen again under another name (same dev/ino) becomes a kLink, so hard links stay
// one inode whatever the type: by id for regular files, by the first name for symlinks, fifos,
// sockets and devices (they have no id).
//
// Extended attributes are read by name through the directory's /proc/self/fd magic link
// ("/proc/self/fd/DIR/NAME" with the l*xattr calls): the directory descriptor pins where the
// name is looked up, the magic link is only crossed as an intermediate component, and the final
// component is never followed. This reaches symlinks and special files too (a FIFO would block
// on open) without an open per entry. Every namespace the process can list comes along (user.,
// trusted., security., system.posix_acl_*). Each inode's attributes are sent once, right after
// the op that creates it, except a directory's: they come after its contents, so a default ACL
// cannot leak into entries the receiver creates meanwhile. Setting an xattr changes no mtime.
// A file's security.capability goes out with the ops, before the file's data and its Attr, and
// the kernel strips file capabilities on every write and chown: the receiver puts it back
// (Applier, common/changes/applier.cc).
//
// Reconcile (scan.h): each entry is looked up in the receiver's manifest by path; equality is
// decided here, from what the scan already has in hand (the stat, the xattrs it reads anyway).
#include "common/changes/scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>
#include <utility>

#include "common/changes/xattrs.h"
#include "common/log.h"
#include "common/path.h"
#include "common/unique_fd.h"

namespace bkp::changes {
namespace {

class Scanner {
 public:
  Scanner(const Identify& identify, const ScanOptions& options)
      : identify_(identify), options_(options) {
    if (options.have == nullptr) return;
    for (const auto& [path, e] : *options.have) {
      if (S_ISREG(e.mode) && e.id != 0) had_id_.emplace(e.id, &e);
      if (!path.empty()) ++had_children_[std::string(parent_of(path))];
    }
  }

  void dir(int fd, const std::string& rel) {
    // Re-open for reading: the caller's fd may be O_PATH, which readdir cannot use.
    int rd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR* d = rd < 0 ? nullptr : fdopendir(rd);
    if (d == nullptr) {
      if (rd >= 0) close(rd);
      log::warn("baseline: cannot list '{}': {}", rel, std::strerror(errno));
      return;
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      std::string_view n = e->d_name;
      if (n != "." && n != "..") names.emplace_back(n);
    }
    closedir(d);
    for (const auto& name : names) entry(fd, rel, name);
  }

  // True if every op since `first` is one kKeep per entry of the directory rel, no file changed
  // since `files`, and the receiver lists exactly that many entries in it: then it holds the
  // whole subtree as we do, its own attributes aside.
  bool all_kept(const std::string& rel, size_t first, size_t files) const {
    if (options_.have == nullptr || batch_.files.size() != files) return false;
    size_t kept = batch_.ops.size() - first;
    for (size_t i = first; i < batch_.ops.size(); ++i) {
      if (batch_.ops[i].kind != wire::OpKind::kKeep) return false;
    }
    auto it = had_children_.find(rel);
    return kept == (it == had_children_.end() ? 0 : it->second);
  }

  // What the receiver holds at rel (nullptr: nothing, or no manifest).
  const wire::ManifestEntry* had(const std::string& rel) const {
    if (options_.have == nullptr) return nullptr;
    auto it = options_.have->find(rel);
    return it == options_.have->end() ? nullptr : &it->second;
  }

  // Ops making the xattrs of the inode (by id when it has one, else by rel) equal to `mine`.
  // `same` is the receiver's entry when the ops leave that very inode in place: attributes it
  // already has in full are not sent again, and names it has beyond ours are removed.
  void xattr_ops(const Xattrs& mine, const std::string& rel, uint64_t id,
                 const wire::ManifestEntry* same) {
    auto op_for = [&](wire::OpKind kind, const std::string& name) {
      wire::Op op;
      op.kind = kind;
      op.id = id;
      if (id == 0) op.path = rel;
      op.name = name;
      return op;
    };
    if (same != nullptr) {
      if (same->xattr_digest == xattr_digest(mine)) return;
      const std::string& names = same->xattr_names;
      for (size_t pos = 0; pos < names.size();) {
        std::string n(names.c_str() + pos);
        pos += n.size() + 1;
        bool kept = std::any_of(mine.begin(), mine.end(), [&](const auto& x) { return x.first == n; });
        if (!kept && !n.empty()) batch_.ops.push_back(op_for(wire::OpKind::kRemoveXattr, n));
      }
    }
    for (const auto& [name, value] : mine) {
      wire::Op op = op_for(wire::OpKind::kSetXattr, name);
      op.value = value;
      batch_.ops.push_back(std::move(op));
    }
  }

  void xattrs(int dir_fd, const std::string& name, const std::string& rel, uint64_t id,
              const wire::ManifestEntry* same) {
    xattr_ops(read_xattrs(dir_fd, name, rel), rel, id, same);
  }

  Batch take() { return std::move(batch_); }

 private:
  static bool same_owner_and_mtime(const wire::ManifestEntry& h, const struct stat& st) {
    return h.uid == st.st_uid && h.gid == st.st_gid && h.mtime_ns == wire::to_ns(st.st_mtim);
  }

  // mode: the directory's, for a kept subtree (only the type matters); 0 for anything else.
  void keep(const std::string& rel, uint64_t id, uint32_t mode = 0) {
    wire::Op op;
    op.kind = wire::OpKind::kKeep;
    op.path = rel;
    op.id = id;
    op.mode = mode;
    batch_.ops.push_back(std::move(op));
  }

  void entry(int dir_fd, const std::string& parent, const std::string& name) {
    struct stat st{};
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;  // vanished
    if (options_.placeholders != nullptr) options_.placeholders->as_source(st);
    std::string rel = join_rel(parent, name);
    if (!S_ISDIR(st.st_mode) && link_to_seen(st, rel)) return;
    const wire::ManifestEntry* h = had(rel);
    if (h != nullptr && (h->mode & S_IFMT) != (st.st_mode & S_IFMT)) h = nullptr;
    wire::Op op;
    op.path = rel;
    op.mode = st.st_mode & 07777;
    op.uid = st.st_uid;
    op.gid = st.st_gid;
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR: {
        op.kind = wire::OpKind::kMkdir;
        batch_.ops.push_back(op);
        size_t first = batch_.ops.size(), files = batch_.files.size();
        UniqueFd sub(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub) dir(sub.get(), rel);
        Xattrs mine = read_xattrs(dir_fd, name, rel);
        if (sub && h != nullptr && h->mode == st.st_mode && same_owner_and_mtime(*h, st) &&
            h->xattr_digest == xattr_digest(mine) && all_kept(rel, first, files)) {
          batch_.ops.resize(first - 1);  // the kMkdir and the children's keeps
          return keep(rel, 0, st.st_mode);
        }
        xattr_ops(mine, rel, 0, h);
        batch_.ops.push_back(wire::attr_from_stat(rel, 0, st));
        return;
      }
      case S_IFREG:
        file(dir_fd, name, rel, st, op, h);
        return;
      case S_IFLNK: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        ssize_t n = readlinkat(dir_fd, name.c_str(), target.data(), target.size());
        if (n < 0) return;
        target.resize(static_cast<size_t>(n));
        seen(st, 0, rel);
        Xattrs mine = read_xattrs(dir_fd, name, rel);
        if (h != nullptr && h->target == target && same_owner_and_mtime(*h, st) &&
            h->xattr_digest == xattr_digest(mine)) {
          return keep(rel, 0);
        }
        bool same_inode = h != nullptr && h->target == target;
        op.kind = wire::OpKind::kSymlink;
        op.target = std::move(target);
        op.atime_ns = wire::to_ns(st.st_atim);
        op.mtime_ns = wire::to_ns(st.st_mtim);
        batch_.ops.push_back(std::move(op));
        xattr_ops(mine, rel, 0, same_inode ? h : nullptr);
        return;
      }
      default: {
        seen(st, 0, rel);
        Xattrs mine = read_xattrs(dir_fd, name, rel);
        if (h != nullptr && h->mode == st.st_mode && h->rdev == st.st_rdev &&
            same_owner_and_mtime(*h, st) && h->xattr_digest == xattr_digest(mine)) {
          return keep(rel, 0);
        }
        op.kind = wire::OpKind::kMknod;  // replaces whatever the receiver has there
        op.mode = st.st_mode;
        op.rdev = st.st_rdev;
        batch_.ops.push_back(std::move(op));
        xattr_ops(mine, rel, 0, nullptr);
        batch_.ops.push_back(wire::attr_from_stat(rel, 0, st));
        return;
      }
    }
  }

  // Remembers the first name (and id, 0 for non-regular files) of a non-directory inode.
  void seen(const struct stat& st, uint64_t id, const std::string& rel) {
    seen_.emplace(std::make_pair(st.st_dev, st.st_ino), std::make_pair(id, rel));
  }

  // If this inode was emitted under another name: a kLink to it (by id when it has one, else by
  // that first name), and true.
  bool link_to_seen(const struct stat& st, const std::string& rel) {
    auto it = seen_.find(std::make_pair(st.st_dev, st.st_ino));
    if (it == seen_.end()) return false;
    wire::Op link;
    link.kind = wire::OpKind::kLink;
    link.path = rel;
    link.id = it->second.first;
    link.target = it->second.second;
    batch_.ops.push_back(std::move(link));
    return true;
  }

  int64_t ctime_of(uint64_t id, const struct stat& st) const {
    return options_.ctime ? options_.ctime(id, st) : wire::to_ns(st.st_ctim);
  }

  // The receiver's copy h is this very file as it is now (scan.h: same source ctime).
  bool exactly(const wire::ManifestEntry& h, uint64_t id, const struct stat& st,
               const Xattrs& mine) const {
    int64_t ctime = ctime_of(id, st);
    return ctime != 0 && h.ctime_ns == ctime && h.mode == st.st_mode &&
           h.size == static_cast<uint64_t>(st.st_size) && same_owner_and_mtime(h, st) &&
           h.xattr_digest == xattr_digest(mine);
  }

  void file(int dir_fd, const std::string& name, const std::string& rel, const struct stat& st,
            wire::Op& op, const wire::ManifestEntry* h) {
    auto ref = identify_(dir_fd, name.c_str(), st);
    if (!ref) return;
    seen(st, ref->id, rel);
    if (h != nullptr && h->id != ref->id) h = nullptr;  // another file: replaced
    if (h == nullptr) {  // renamed (or linked) while we were apart: give the receiver's copy this name
      auto it = had_id_.find(ref->id);
      if (it != had_id_.end()) {
        h = it->second;
        wire::Op link;
        link.kind = wire::OpKind::kLink;
        link.path = rel;
        link.id = ref->id;
        link.target = h->path;
        batch_.ops.push_back(std::move(link));
      }
    }
    Xattrs mine = read_xattrs(dir_fd, name, rel);
    if (h != nullptr && exactly(*h, ref->id, st, mine)) return keep(rel, ref->id);
    auto size = static_cast<uint64_t>(st.st_size);
    bool in_place = h != nullptr && h->size > 0 && size >= kVerifyMin;
    if (in_place) {
      keep(rel, ref->id);
    } else {
      op.kind = wire::OpKind::kCreate;  // on the receiver's own file of this id: emptied in place
      op.id = ref->id;
      batch_.ops.push_back(op);
    }
    wire::Op truncate;
    truncate.kind = wire::OpKind::kTruncate;
    truncate.id = ref->id;
    truncate.size = size;
    batch_.ops.push_back(std::move(truncate));
    xattr_ops(mine, rel, ref->id, h);
    FileChange change;
    change.ref = *ref;
    change.attrs = true;
    change.verify = in_place;
    if (in_place) {
      change.extents.add(0, size);  // the receiver's bytes may sit where we have holes
    } else {
      data_regions(dir_fd, name, st, change.extents);
    }
    batch_.files.push_back(std::move(change));
  }
  static void data_regions(int dir_fd, const std::string& name, const struct stat& st,
                           ExtentMap& out) {
    auto size = static_cast<uint64_t>(st.st_size);
    if (size == 0) return;
    UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      out.add(0, size);
      return;
    }
    changes::data_regions(fd.get(), size, out);
  }

  const Identify& identify_;
  const ScanOptions& options_;
  Batch batch_;
  // First name of every non-directory inode emitted so far, with its id (0 if not a regular
  // file): a later name of it becomes a kLink.
  std::map<std::pair<dev_t, ino_t>, std::pair<uint64_t, std::string>> seen_;
  // The receiver's regular files by FileId (a reconcile), to find renamed ones.
  std::unordered_map<uint64_t, const wire::ManifestEntry*> had_id_;
  // How many entries the receiver lists in each directory (a reconcile), by directory path.
  std::unordered_map<std::string, size_t> had_children_;
};

}  // namespace

// Not guessed from st_blocks: an xattr block, preallocated or unwritten extents and extent-tree
// blocks all count there too, so a file with holes can look fully allocated.
void data_regions(int fd, uint64_t size, ExtentMap& out) {
  off_t pos = 0;
  while (static_cast<uint64_t>(pos) < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) out.add(static_cast<uint64_t>(pos), size - static_cast<uint64_t>(pos));
      return;  // ENXIO: only a hole remains
    }
    if (static_cast<uint64_t>(data) >= size) return;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0 || static_cast<uint64_t>(hole) > size) hole = static_cast<off_t>(size);
    out.add(static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data));
    pos = hole;
  }
}

Result<Batch> scan_tree(int root_fd, const Identify& identify, const ScanOptions& options) {
  struct stat root{};
  if (fstat(root_fd, &root) != 0) return fail_errno("baseline: stat of the tree root");
  // Without /proc every xattr lookup would fail like a vanished entry: refuse rather than ship a
  // baseline that silently lacks them.
  struct stat via_proc{};
  if (stat(fmt::format("/proc/self/fd/{}/.", root_fd).c_str(), &via_proc) != 0) {
    return fail_errno("baseline: the tree root through /proc/self/fd (is /proc mounted?)");
  }
  Scanner scanner(identify, options);
  wire::Op op;
  op.kind = wire::OpKind::kSyncBegin;
  Batch out;
  out.ops.push_back(op);
  scanner.dir(root_fd, "");
  scanner.xattrs(root_fd, ".", "", 0, scanner.had(""));
  Batch body = scanner.take();
  for (auto& o : body.ops) out.ops.push_back(std::move(o));
  out.files = std::move(body.files);
  out.ops.push_back(wire::attr_from_stat("", 0, root));
  op.kind = wire::OpKind::kSyncEnd;
  out.ops.push_back(op);
  return out;
}

TreeWarmer::TreeWarmer(int root_fd, unsigned threads) {
  UniqueFd root(fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (!root) return;
  queue_.push_back(Pending{std::move(root), 0});
  for (unsigned i = 0; i < std::max(threads, 1u); ++i) threads_.emplace_back([this] { work(); });
}

TreeWarmer::~TreeWarmer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

// Takes directories off the queue until it is empty and no thread can add to it any more.
void TreeWarmer::work() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty() || busy_ == 0; });
    if (stop_ || queue_.empty()) break;  // empty and nobody busy: the walk is complete
    Pending next = std::move(queue_.front());
    queue_.pop_front();
    ++busy_;
    lock.unlock();
    walk(next.dir.get(), next.depth);
    next.dir.reset();
    lock.lock();
    --busy_;
    cv_.notify_all();
  }
}

// Lists one directory and stats its entries; subdirectories go to the queue while it is short
// and are walked here, depth first, otherwise, so the descriptors held stay bounded (the queue's
// plus two per level of each thread's path); deeper than kMaxDepth is left cold.
void TreeWarmer::walk(int dir_fd, int depth) {
  constexpr int kMaxDepth = 128;
  constexpr size_t kMaxQueued = 256;
  int rd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = rd < 0 ? nullptr : fdopendir(rd);
  if (d == nullptr) {
    if (rd >= 0) close(rd);
    return;
  }
  while (dirent* e = readdir(d)) {
    if (stop_) break;
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st {};
    if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    ++visited_;
    if (!S_ISDIR(st.st_mode) || depth >= kMaxDepth) continue;
    UniqueFd sub(openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) continue;
    {
      std::lock_guard lock(mu_);
      if (queue_.size() < kMaxQueued) {
        queue_.push_back(Pending{std::move(sub), depth + 1});
        cv_.notify_one();
        continue;
      }
    }
    walk(sub.get(), depth + 1);
  }
  closedir(d);
}

}  // namespace bkp::changes
