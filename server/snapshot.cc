// Writing, listing and rotating tgz snapshots (see snapshot.h).
//
// The walk is openat/fdopendir based and never follows a symlink, like every other tree walk
// in backupd. The archive starts with the volume root as "./" so a restore also gets the root's
// mode, owner and times, and is full pax (not restricted): restricted pax drops sub-second
// mtimes, and a restore must reproduce mtimes exactly (DESIGN.md invariant 3). Hard links are
// resolved by libarchive's link resolver (the second name of an inode becomes a hardlink entry
// without data). File data is streamed in 1 MiB blocks, so memory does not depend on file sizes.
#include "server/snapshot.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fmt/format.h>
#include <memory>

#include "common/changes/scan.h"
#include "common/log.h"
#include "common/path.h"
#include "common/unique_fd.h"

namespace bkp::server {
namespace {

constexpr size_t kBlock = 1u << 20;
constexpr std::string_view kTmpPrefix = ".tmp-";
constexpr std::string_view kSuffix = ".tgz";

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ResolverDeleter {
  void operator()(archive_entry_linkresolver* r) const { archive_entry_linkresolver_free(r); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<archive_entry, EntryDeleter>;

class Writer {
 public:
  Writer(archive* a, archive_entry_linkresolver* resolver, const std::atomic<bool>* cancel)
      : a_(a), resolver_(resolver), cancel_(cancel) {}

  // A "." entry carries the volume root's own mode, owner, times and xattrs, so a restore
  // gives the target directory the root's attributes too.
  Result<void> root(int fd) {
    struct stat st{};
    if (fstat(fd, &st) != 0) return fail_errno("stat of the volume root");
    EntryPtr e(archive_entry_new());
    archive_entry_copy_stat(e.get(), &st);
    archive_entry_set_pathname(e.get(), ".");
    UniqueFd rd(openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (rd) add_xattrs(rd.get(), e.get());
    BKP_TRY(header(e.get()));
    return {};
  }

  Result<void> dir(int fd, const std::string& rel) {
    int rd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR* d = rd < 0 ? nullptr : fdopendir(rd);
    if (d == nullptr) {
      if (rd >= 0) close(rd);
      return fail_errno("list " + (rel.empty() ? std::string(".") : rel));
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      std::string_view n = e->d_name;
      if (n != "." && n != "..") names.emplace_back(n);
    }
    closedir(d);
    std::sort(names.begin(), names.end());  // deterministic archives
    for (const auto& name : names) BKP_TRY_VOID(entry(fd, rel, name));
    return {};
  }

  Result<void> finish() {
    // Entries the resolver held back (hard links still waiting for more names) go out now.
    archive_entry* spare = nullptr;
    archive_entry* held = nullptr;
    archive_entry_linkify(resolver_, &held, &spare);
    while (held != nullptr) {
      BKP_TRY(header(held));
      archive_entry_free(held);
      held = nullptr;
      archive_entry_linkify(resolver_, &held, &spare);
    }
    return {};
  }

  // SnapshotFile::warnings.
  std::string warnings() const {
    constexpr size_t kNamed = 5;
    std::vector<std::string> parts;
    auto list = [&](const std::vector<std::string>& names) {
      std::string s;
      for (size_t i = 0; i < names.size() && i < kNamed; ++i) s += (i ? ", " : "") + names[i];
      if (names.size() > kNamed) s += fmt::format(" and {} more", names.size() - kNamed);
      return s;
    };
    if (!sockets_.empty()) {
      parts.push_back(fmt::format("{} socket{} not archived (no archive format holds one): {}",
                                  sockets_.size(), sockets_.size() == 1 ? "" : "s", list(sockets_)));
    }
    if (!refused_.empty()) {
      parts.push_back(fmt::format("{} entr{} refused by the archive format: {}", refused_.size(),
                                  refused_.size() == 1 ? "y" : "ies", list(refused_)));
    }
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
    return out;
  }

  uint64_t files = 0;
  uint64_t data_bytes = 0;

 private:
  // False if the format refused this entry (noted in warnings, the archive goes on); an error
  // if the archive itself failed.
  Result<bool> header(archive_entry* e) {
    int r = archive_write_header(a_, e);
    if (r == ARCHIVE_FAILED) {
      refused_.push_back(fmt::format("{} ({})", archive_entry_pathname(e), archive_error_string(a_)));
      return false;
    }
    if (r < ARCHIVE_WARN) {
      return fail(EIO, fmt::format("archive {}: {}", archive_entry_pathname(e),
                                   archive_error_string(a_)));
    }
    return true;
  }


  Result<void> entry(int dir_fd, const std::string& parent, const std::string& name) {
    BKP_TRY_VOID(check_cancel());
    struct stat st{};
    std::string rel = join_rel(parent, name);
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return fail_errno("stat " + rel);
    if (S_ISSOCK(st.st_mode)) {
      sockets_.push_back(rel);
      return {};
    }
    EntryPtr e(archive_entry_new());
    archive_entry_copy_stat(e.get(), &st);
    archive_entry_set_pathname(e.get(), rel.c_str());
    UniqueFd fd;
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = readlinkat(dir_fd, name.c_str(), target.data(), target.size());
      if (n < 0) return fail_errno("readlink " + rel);
      target.resize(static_cast<size_t>(n));
      archive_entry_set_symlink(e.get(), target.c_str());
    } else if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
      int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
      fd.reset(openat(dir_fd, name.c_str(), flags));
      if (!fd) return fail_errno("open " + rel);
      add_xattrs(fd.get(), e.get());
    }
    if (S_ISREG(st.st_mode)) {
      changes::ExtentMap regions;
      changes::data_regions(fd.get(), static_cast<uint64_t>(st.st_size), regions);
      sparse_map(regions, e.get());
      return file(std::move(e), fd.get(), regions, rel);
    }
    // A directory the format refused still has entries it can hold.
    BKP_TRY(header(e.get()));
    if (S_ISDIR(st.st_mode)) BKP_TRY_VOID(dir(fd.get(), rel));
    return {};
  }

  Result<void> file(EntryPtr e, int fd, const changes::ExtentMap& regions, const std::string& rel) {
    archive_entry* spare = nullptr;
    archive_entry* entry = e.release();
    archive_entry_linkify(resolver_, &entry, &spare);
    // entry: what to write now (may be null: held back as a possible hard link); spare: an
    // earlier entry released by this one.
    if (entry != nullptr) {
      EntryPtr owned(entry);
      bool written = BKP_TRY(header(entry));
      if (written && archive_entry_size(entry) > 0) {
        BKP_TRY_VOID(data(fd, regions, static_cast<uint64_t>(archive_entry_size(entry)), rel));
      }
    }
    if (spare != nullptr) {
      EntryPtr owned(spare);
      BKP_TRY(header(spare));
    }
    return {};
  }

  // A file with holes gets a sparse map (pax's GNU.sparse 1.0): only its data regions are
  // stored, and a restore (ARCHIVE_EXTRACT reads blocks with their offsets) leaves the holes.
  static void sparse_map(const changes::ExtentMap& data, archive_entry* e) {
    auto size = static_cast<uint64_t>(archive_entry_size(e));
    if (data.total_bytes() == size) return;  // no hole
    for (const auto& [start, end] : data.ranges()) {
      archive_entry_sparse_add_entry(e, static_cast<la_int64_t>(start),
                                     static_cast<la_int64_t>(end - start));
    }
    if (data.ranges().empty() || data.ranges().rbegin()->second < size) {
      archive_entry_sparse_add_entry(e, static_cast<la_int64_t>(size), 0);  // the trailing hole
    }
  }

  // The file's `size` bytes as its entry announced them: its data `regions` (those of the
  // entry's sparse map) read from the file, its holes fed as zeros from memory, which the pax
  // writer skips for a sparse entry (nothing is read, nothing compressed).
  Result<void> data(int fd, const changes::ExtentMap& regions, uint64_t size,
                    const std::string& rel) {
    buf_.resize(kBlock);
    ++files;
    uint64_t at = 0;
    auto put = [&](const char* bytes, size_t n) -> Result<void> {
      if (archive_write_data(a_, bytes, n) < 0) {
        return fail(EIO, fmt::format("archive {}: {}", rel, archive_error_string(a_)));
      }
      at += n;
      return {};
    };
    auto zeros_to = [&](uint64_t end) -> Result<void> {
      static const std::vector<char> zeros(kBlock, 0);
      while (at < end) {
        BKP_TRY_VOID(check_cancel());
        BKP_TRY_VOID(put(zeros.data(), static_cast<size_t>(std::min<uint64_t>(kBlock, end - at))));
      }
      return {};
    };
    for (const auto& [start, end] : regions.ranges()) {
      BKP_TRY_VOID(zeros_to(start));
      while (at < end) {
        BKP_TRY_VOID(check_cancel());
        size_t want = static_cast<size_t>(std::min<uint64_t>(kBlock, end - at));
        ssize_t n = pread(fd, buf_.data(), want, static_cast<off_t>(at));
        if (n < 0) return fail_errno("read " + rel);
        if (n == 0) break;  // shorter than it was: the archive pads the entry
        BKP_TRY_VOID(put(buf_.data(), static_cast<size_t>(n)));
        data_bytes += static_cast<uint64_t>(n);
      }
    }
    return zeros_to(size);
  }

  static void add_xattrs(int fd, archive_entry* e) {
    char names[4096];
    ssize_t len = flistxattr(fd, names, sizeof names);
    for (ssize_t i = 0; i < len;) {
      const char* name = names + i;
      i += static_cast<ssize_t>(std::strlen(name)) + 1;
      if (std::strncmp(name, "user.", 5) != 0) continue;
      char value[65536];
      ssize_t vlen = fgetxattr(fd, name, value, sizeof value);
      if (vlen >= 0) archive_entry_xattr_add_entry(e, name, value, static_cast<size_t>(vlen));
    }
  }

  Result<void> check_cancel() const {
    if (cancel_ != nullptr && cancel_->load(std::memory_order_relaxed)) {
      return fail(ECANCELED, "cancelled");
    }
    return {};
  }

  archive* a_;
  std::vector<std::string> sockets_;  // skipped, by volume-relative path
  std::vector<std::string> refused_;  // "path (why)"
  archive_entry_linkresolver* resolver_;
  const std::atomic<bool>* cancel_;
  std::vector<char> buf_;
};

bool is_snapshot_name(std::string_view n) {
  return n.size() > kSuffix.size() && n.substr(n.size() - kSuffix.size()) == kSuffix &&
         n.substr(0, kTmpPrefix.size()) != kTmpPrefix;
}

Result<void> fsync_dir(const std::string& dir) {
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || fsync(fd.get()) != 0) return fail_errno("fsync " + dir);
  return {};
}

}  // namespace

std::string snapshot_id_for(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  return fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, unix_ms % 1000);
}

Result<SnapshotFile> write_snapshot(int tree_fd, const std::string& snapshots_dir,
                                    const std::string& id, int gzip_level,
                                    const std::atomic<bool>* cancel) {
  if (mkdir(snapshots_dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return fail_errno("create " + snapshots_dir);
  }
  SnapshotFile out;
  out.id = id;
  out.name = id + std::string(kSuffix);
  std::string tmp = snapshots_dir + "/" + std::string(kTmpPrefix) + out.name;
  std::string final_path = snapshots_dir + "/" + out.name;
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd) return fail_errno("create " + tmp);
  auto cleanup_tmp = [&](Error e) {
    unlink(tmp.c_str());
    return tl::unexpected(e.wrap("snapshot " + out.name));
  };

  std::unique_ptr<archive, ArchiveDeleter> a(archive_write_new());
  std::unique_ptr<archive_entry_linkresolver, ResolverDeleter> resolver(
      archive_entry_linkresolver_new());
  archive_entry_linkresolver_set_strategy(resolver.get(), ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE);
  std::string level = std::to_string(std::clamp(gzip_level, 1, 9));
  if (archive_write_add_filter_gzip(a.get()) != ARCHIVE_OK ||
      archive_write_set_filter_option(a.get(), "gzip", "compression-level", level.c_str()) !=
          ARCHIVE_OK ||
      archive_write_set_format_pax(a.get()) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a.get(), 1) != ARCHIVE_OK ||
      archive_write_open_fd(a.get(), fd.get()) != ARCHIVE_OK) {
    return cleanup_tmp(Error{EIO, std::string("libarchive setup: ") + archive_error_string(a.get())});
  }
  Writer writer(a.get(), resolver.get(), cancel);
  auto walked = writer.root(tree_fd);
  if (walked) walked = writer.dir(tree_fd, "");
  if (walked) walked = writer.finish();
  if (!walked) {
    // Without this, freeing the archive closes it, which pads the unfinished entry to its
    // announced size: a cancelled run over a 64 GiB sparse file wrote 64 GiB of zeros first.
    archive_write_fail(a.get());
    return cleanup_tmp(walked.error());
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    return cleanup_tmp(Error{EIO, std::string("finish archive: ") + archive_error_string(a.get())});
  }
  if (fsync(fd.get()) != 0) return cleanup_tmp(Error{errno, std::string("fsync: ") + std::strerror(errno)});
  struct stat st{};
  fstat(fd.get(), &st);
  fd.reset();
  if (rename(tmp.c_str(), final_path.c_str()) != 0) {
    return cleanup_tmp(Error{errno, std::string("rename: ") + std::strerror(errno)});
  }
  BKP_TRY_VOID(fsync_dir(snapshots_dir));
  out.bytes = static_cast<uint64_t>(st.st_size);
  out.files = writer.files;
  out.data_bytes = writer.data_bytes;
  out.warnings = writer.warnings();
  return out;
}

Result<std::vector<SnapshotFile>> list_snapshots(const std::string& snapshots_dir) {
  std::vector<SnapshotFile> out;
  DIR* d = opendir(snapshots_dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return fail_errno("list " + snapshots_dir);
  }
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (!is_snapshot_name(name)) continue;
    struct stat st{};
    if (fstatat(dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    SnapshotFile f;
    f.name = name;
    f.id = name.substr(0, name.size() - kSuffix.size());
    f.bytes = static_cast<uint64_t>(st.st_size);
    out.push_back(std::move(f));
  }
  closedir(d);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name > b.name; });
  return out;
}

Result<std::vector<std::string>> rotate_snapshots(const std::string& snapshots_dir, size_t keep) {
  auto all = BKP_TRY(list_snapshots(snapshots_dir));
  std::vector<std::string> removed;
  for (size_t i = keep; i < all.size(); ++i) {
    std::string path = snapshots_dir + "/" + all[i].name;
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return fail_errno("delete " + path);
    removed.push_back(all[i].id);
  }
  if (!removed.empty()) BKP_TRY_VOID(fsync_dir(snapshots_dir));
  return removed;
}

size_t remove_partial_snapshots(const std::string& snapshots_dir) {
  size_t n = 0;
  DIR* d = opendir(snapshots_dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name.substr(0, kTmpPrefix.size()) == kTmpPrefix && unlinkat(dirfd(d), e->d_name, 0) == 0) {
      log::warn("removed partial snapshot {}/{} (an earlier run was interrupted)", snapshots_dir, name);
      ++n;
    }
  }
  closedir(d);
  return n;
}

}  // namespace bkp::server
