// Baseline scan (see scan.h). A depth-first walk with openat/fdopendir so no path is ever
// re-resolved from the root and no symlink is followed. Regular files are described by their
// data regions (SEEK_DATA/SEEK_HOLE) so a sparse file stays sparse on the other side; a file
// seen again under another name (same dev/ino) becomes a kLink, so hard links stay one file.
#include "common/changes/scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <utility>

#include "common/log.h"
#include "common/path.h"
#include "common/unique_fd.h"

namespace bkp::changes {
namespace {

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

  Batch take() { return std::move(batch_); }

 private:
  void entry(int dir_fd, const std::string& parent, const std::string& name) {
    struct stat st{};
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;  // vanished
    std::string rel = join_rel(parent, name);
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
        return;
      }
      default:
        op.kind = wire::OpKind::kMknod;
        op.mode = st.st_mode;
        op.rdev = st.st_rdev;
        batch_.ops.push_back(std::move(op));
        batch_.ops.push_back(wire::attr_from_stat(rel, 0, st));
        return;
    }
  }

  void file(int dir_fd, const std::string& name, const std::string& rel, const struct stat& st,
            wire::Op& op) {
    auto key = std::make_pair(st.st_dev, st.st_ino);
    if (auto seen = seen_.find(key); seen != seen_.end()) {
      wire::Op link;
      link.kind = wire::OpKind::kLink;
      link.path = rel;
      link.target = seen->second.second;
      link.id = seen->second.first;
      batch_.ops.push_back(std::move(link));
      return;
    }
    auto ref = identify_(dir_fd, name.c_str(), st);
    if (!ref) return;
    seen_.emplace(key, std::make_pair(ref->id, rel));
    op.kind = wire::OpKind::kCreate;
    op.id = ref->id;
    batch_.ops.push_back(op);
    wire::Op size;
    size.kind = wire::OpKind::kTruncate;
    size.id = ref->id;
    size.size = static_cast<uint64_t>(st.st_size);
    batch_.ops.push_back(std::move(size));
    FileChange change;
    change.ref = *ref;
    change.attrs = true;
    data_regions(dir_fd, name, st, change.extents);
    batch_.files.push_back(std::move(change));
  }

  static void data_regions(int dir_fd, const std::string& name, const struct stat& st,
                           ExtentMap& out) {
    auto size = static_cast<uint64_t>(st.st_size);
    if (size == 0) return;
    if (static_cast<uint64_t>(st.st_blocks) * 512 >= size) {  // fully allocated: no holes
      out.add(0, size);
      return;
    }
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
      off_t hole = lseek(fd.get(), data, SEEK_HOLE);
      if (hole < 0) hole = static_cast<off_t>(size);
      out.add(static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data));
      pos = hole;
    }
  }

  const Identify& identify_;
  Batch batch_;
  std::map<std::pair<dev_t, ino_t>, std::pair<uint64_t, std::string>> seen_;
};

}  // namespace

Result<Batch> scan_tree(int root_fd, const Identify& identify) {
  struct stat root{};
  if (fstat(root_fd, &root) != 0) return fail_errno("baseline: stat of the tree root");
  Scanner scanner(identify);
  wire::Op op;
  op.kind = wire::OpKind::kSyncBegin;
  Batch out;
  out.ops.push_back(op);
  scanner.dir(root_fd, "");
  Batch body = scanner.take();
  for (auto& o : body.ops) out.ops.push_back(std::move(o));
  out.files = std::move(body.files);
  out.ops.push_back(wire::attr_from_stat("", 0, root));
  op.kind = wire::OpKind::kSyncEnd;
  out.ops.push_back(op);
  return out;
}

}  // namespace bkp::changes
