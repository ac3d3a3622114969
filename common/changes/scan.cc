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
// A known loss: a file's security.capability goes out with the ops, before the file's data and
// its Attr, and the kernel strips file capabilities on every write and chown; keeping it needs
// the shipper to send a file's xattrs after its Attr.
#include "common/changes/scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "common/log.h"
#include "common/path.h"
#include "common/unique_fd.h"

namespace bkp::changes {
namespace {

// Calls read(buf, size) (a listxattr/getxattr) until the whole value fits: the value may grow
// between the size query and the read. nullopt with errno set on failure.
template <class Read>
std::optional<std::string> read_sized(const Read& read) {
  while (true) {
    ssize_t n = read(nullptr, 0);
    if (n < 0) return std::nullopt;
    std::string buf(static_cast<size_t>(n), '\0');
    if (n == 0) return buf;
    n = read(buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    if (errno != ERANGE) return std::nullopt;
  }
}

class Scanner {
 public:
  explicit Scanner(const Identify& identify) : identify_(identify) {}

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

  // SetXattr ops for every extended attribute of dir_fd/name ("." for dir_fd itself), naming
  // the inode by id when it has one, else by rel.
  void xattrs(int dir_fd, const std::string& name, const std::string& rel, uint64_t id) {
    std::string at = fmt::format("/proc/self/fd/{}/{}", dir_fd, name);
    auto list = read_sized([&](char* buf, size_t size) { return llistxattr(at.c_str(), buf, size); });
    if (!list) {
      if (errno != ENOTSUP && errno != ENOENT) {
        log::warn("baseline: cannot list the xattrs of '{}': {}", rel, std::strerror(errno));
      }
      return;
    }
    std::vector<std::string> names;
    for (size_t pos = 0; pos < list->size();) {
      std::string n(list->c_str() + pos);
      pos += n.size() + 1;
      if (!n.empty()) names.push_back(std::move(n));
    }
    std::sort(names.begin(), names.end());
    for (auto& n : names) {
      auto value = read_sized(
          [&](char* buf, size_t size) { return lgetxattr(at.c_str(), n.c_str(), buf, size); });
      if (!value) {
        if (errno != ENODATA) {  // ENODATA: removed since the listing
          log::warn("baseline: cannot read xattr {} of '{}': {}", n, rel, std::strerror(errno));
        }
        continue;
      }
      wire::Op op;
      op.kind = wire::OpKind::kSetXattr;
      op.id = id;
      if (id == 0) op.path = rel;
      op.name = std::move(n);
      op.value = std::move(*value);
      batch_.ops.push_back(std::move(op));
    }
  }

  Batch take() { return std::move(batch_); }

 private:
  void entry(int dir_fd, const std::string& parent, const std::string& name) {
    struct stat st{};
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;  // vanished
    std::string rel = join_rel(parent, name);
    if (!S_ISDIR(st.st_mode) && link_to_seen(st, rel)) return;
    wire::Op op;
    op.path = rel;
    op.mode = st.st_mode & 07777;
    op.uid = st.st_uid;
    op.gid = st.st_gid;
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR: {
        op.kind = wire::OpKind::kMkdir;
        batch_.ops.push_back(op);
        UniqueFd sub(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub) dir(sub.get(), rel);
        xattrs(dir_fd, name, rel, 0);
        batch_.ops.push_back(wire::attr_from_stat(rel, 0, st));
        return;
      }
      case S_IFREG:
        file(dir_fd, name, rel, st, op);
        return;
      case S_IFLNK: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        ssize_t n = readlinkat(dir_fd, name.c_str(), target.data(), target.size());
        if (n < 0) return;
        target.resize(static_cast<size_t>(n));
        op.kind = wire::OpKind::kSymlink;
        op.target = std::move(target);
        op.atime_ns = wire::to_ns(st.st_atim);
        op.mtime_ns = wire::to_ns(st.st_mtim);
        batch_.ops.push_back(std::move(op));
        seen(st, 0, rel);
        xattrs(dir_fd, name, rel, 0);
        return;
      }
      default:
        op.kind = wire::OpKind::kMknod;
        op.mode = st.st_mode;
        op.rdev = st.st_rdev;
        batch_.ops.push_back(std::move(op));
        seen(st, 0, rel);
        xattrs(dir_fd, name, rel, 0);
        batch_.ops.push_back(wire::attr_from_stat(rel, 0, st));
        return;
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

  void file(int dir_fd, const std::string& name, const std::string& rel, const struct stat& st,
            wire::Op& op) {
    auto ref = identify_(dir_fd, name.c_str(), st);
    if (!ref) return;
    seen(st, ref->id, rel);
    op.kind = wire::OpKind::kCreate;
    op.id = ref->id;
    batch_.ops.push_back(op);
    wire::Op size;
    size.kind = wire::OpKind::kTruncate;
    size.id = ref->id;
    size.size = static_cast<uint64_t>(st.st_size);
    batch_.ops.push_back(std::move(size));
    xattrs(dir_fd, name, rel, ref->id);
    FileChange change;
    change.ref = *ref;
    change.attrs = true;
    data_regions(dir_fd, name, st, change.extents);
    batch_.files.push_back(std::move(change));
  }

  // The data regions as SEEK_DATA/SEEK_HOLE report them. Not guessed from st_blocks: an xattr
  // block, preallocated or unwritten extents and extent-tree blocks all count there too, so a
  // file with holes can look fully allocated.
  static void data_regions(int dir_fd, const std::string& name, const struct stat& st,
                           ExtentMap& out) {
    auto size = static_cast<uint64_t>(st.st_size);
    if (size == 0) return;
    UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      out.add(0, size);
      return;
    }
    off_t pos = 0;
    while (static_cast<uint64_t>(pos) < size) {
      off_t data = lseek(fd.get(), pos, SEEK_DATA);
      if (data < 0) {
        if (errno != ENXIO) out.add(static_cast<uint64_t>(pos), size - static_cast<uint64_t>(pos));
        return;  // ENXIO: only a hole remains
      }
      if (static_cast<uint64_t>(data) >= size) return;
      off_t hole = lseek(fd.get(), data, SEEK_HOLE);
      if (hole < 0 || static_cast<uint64_t>(hole) > size) hole = static_cast<off_t>(size);
      out.add(static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data));
      pos = hole;
    }
  }

  const Identify& identify_;
  Batch batch_;
  // First name of every non-directory inode emitted so far, with its id (0 if not a regular
  // file): a later name of it becomes a kLink.
  std::map<std::pair<dev_t, ino_t>, std::pair<uint64_t, std::string>> seen_;
};

}  // namespace

Result<Batch> scan_tree(int root_fd, const Identify& identify) {
  struct stat root{};
  if (fstat(root_fd, &root) != 0) return fail_errno("baseline: stat of the tree root");
  // Without /proc every xattr lookup would fail like a vanished entry: refuse rather than ship a
  // baseline that silently lacks them.
  struct stat via_proc{};
  if (stat(fmt::format("/proc/self/fd/{}/.", root_fd).c_str(), &via_proc) != 0) {
    return fail_errno("baseline: the tree root through /proc/self/fd (is /proc mounted?)");
  }
  Scanner scanner(identify);
  wire::Op op;
  op.kind = wire::OpKind::kSyncBegin;
  Batch out;
  out.ops.push_back(op);
  scanner.dir(root_fd, "");
  scanner.xattrs(root_fd, ".", "", 0);
  Batch body = scanner.take();
  for (auto& o : body.ops) out.ops.push_back(std::move(o));
  out.files = std::move(body.files);
  out.ops.push_back(wire::attr_from_stat("", 0, root));
  op.kind = wire::OpKind::kSyncEnd;
  out.ops.push_back(op);
  return out;
}

}  // namespace bkp::changes
