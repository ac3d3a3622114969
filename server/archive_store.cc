// rotate_archives and LocalArchiveStore (see archive_store.h).
#include "server/archive_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/files.h"
#include "common/log.h"
#include "common/unique_fd.h"

namespace bkp::server {
namespace {

constexpr std::string_view kTmpPrefix = ".tmp-";

// ".tmp-<id>.tgz" until commit renames it to "<id>.tgz" (".ids" alike).
class LocalSink final : public ArchiveSink {
 public:
  LocalSink(UniqueFd fd, std::string dir, std::string tmp, std::string final_path)
      : fd_(std::move(fd)), dir_(std::move(dir)), tmp_(std::move(tmp)), final_(std::move(final_path)) {}
  ~LocalSink() override {
    if (fd_) unlink(tmp_.c_str());
  }

  Result<void> write(std::span<const char> bytes) override { return write_all(fd_.get(), bytes, tmp_); }

  Result<uint64_t> commit() override {
    if (fsync(fd_.get()) != 0) return fail_errno("fsync " + tmp_);
    struct stat st{};
    if (fstat(fd_.get(), &st) != 0) return fail_errno("stat " + tmp_);
    if (rename(tmp_.c_str(), final_.c_str()) != 0) return fail_errno("rename " + tmp_);
    fd_.reset();  // committed: nothing to discard any more
    BKP_TRY_VOID(fsync_dir(dir_));
    return static_cast<uint64_t>(st.st_size);
  }

 private:
  UniqueFd fd_;  // open until committed
  std::string dir_, tmp_, final_;
};

}  // namespace

std::string_view part_suffix(ArchivePart part) {
  return part == ArchivePart::kFileIds ? ".ids" : ".tgz";
}

Result<std::vector<std::string>> rotate_archives(ArchiveStore& store, size_t keep) {
  auto all = BKP_TRY(store.list());
  std::vector<std::string> removed;
  for (size_t i = keep; i < all.size(); ++i) {
    BKP_TRY_VOID(store.remove(all[i].id));
    removed.push_back(all[i].id);
  }
  return removed;
}

std::string LocalArchiveStore::path_of(const std::string& id, ArchivePart part) const {
  return dir_ + "/" + id + std::string(part_suffix(part));
}

Result<std::unique_ptr<ArchiveSink>> LocalArchiveStore::create(const std::string& id,
                                                               ArchivePart part) {
  if (mkdir(dir_.c_str(), 0750) != 0 && errno != EEXIST) return fail_errno("create " + dir_);
  std::string tmp = dir_ + "/" + std::string(kTmpPrefix) + id + std::string(part_suffix(part));
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd) return fail_errno("create " + tmp);
  return std::make_unique<LocalSink>(std::move(fd), dir_, std::move(tmp), path_of(id, part));
}

Result<std::unique_ptr<ByteSource>> LocalArchiveStore::open(const std::string& id,
                                                            ArchivePart part) {
  auto source = BKP_TRY(FileSource::open(path_of(id, part)));
  return std::make_unique<FileSource>(std::move(source));
}

Result<std::vector<StoredArchive>> LocalArchiveStore::list() {
  std::vector<StoredArchive> out;
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return fail_errno("list " + dir_);
  }
  const std::string_view suffix = part_suffix(ArchivePart::kArchive);
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name.size() <= suffix.size() || !name.ends_with(suffix) || name.starts_with(kTmpPrefix)) {
      continue;
    }
    struct stat st{};
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    out.push_back(StoredArchive{std::string(name.substr(0, name.size() - suffix.size())),
                                static_cast<uint64_t>(st.st_size)});
  }
  closedir(d);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id > b.id; });
  return out;
}

Result<void> LocalArchiveStore::remove(const std::string& id) {
  // The ids first: cut short in between, an archive without ids is only one a mirror cannot be
  // seeded from (archive_store.h), while ids without their archive would stay forever.
  bool removed = false;
  for (auto part : {ArchivePart::kFileIds, ArchivePart::kArchive}) {
    const std::string path = path_of(id, part);
    if (unlink(path.c_str()) == 0) {
      removed = true;
    } else if (errno != ENOENT) {
      return fail_errno("delete " + path);
    }
  }
  return removed ? fsync_dir(dir_) : Result<void>{};
}

size_t LocalArchiveStore::remove_partial() {
  size_t n = 0;
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name.starts_with(kTmpPrefix) && unlinkat(dirfd(d), e->d_name, 0) == 0) {
      log::warn("removed partial snapshot {}/{} (an earlier run was interrupted)", dir_, name);
      ++n;
    }
  }
  closedir(d);
  return n;
}

}  // namespace bkp::server
