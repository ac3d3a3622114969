// Restore extraction with libarchive: a read archive fed by a callback that pulls chunks
// from a ByteSource (the Data frames), piped entry by entry into archive_write_disk.
//
// archive_write_disk does the security work (SECURE_NODOTDOT, SECURE_NOABSOLUTEPATHS,
// SECURE_SYMLINKS refuse entries that would land outside the target or write through a
// symlink an earlier entry planted) and the fidelity work (hard links, deferred directory
// times and modes applied at close). It resolves every name - hard link targets included -
// against the working directory, so we chdir into the target for the duration: prefixing
// names with the target path would need absolute names, which SECURE_NOABSOLUTEPATHS rejects.
//
// Nothing throws across libarchive's callbacks: the read callback stores a source error in
// its context and reports -1, and the caller turns that context back into a Result.
#include "tools/extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "common/archive_ptr.h"
#include "common/files.h"
#include "common/unique_fd.h"

namespace bkp::tools {
namespace {

constexpr size_t kMaxWarningsKept = 10;
constexpr int kDiskFlags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_XATTR |
                           ARCHIVE_EXTRACT_ACL |
                           ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                           ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;


// Returns to the original working directory when it goes out of scope.
class CwdGuard {
 public:
  static Result<CwdGuard> enter(const std::string& dir) {
    UniqueFd old(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!old) return fail_errno("open the current directory");
    if (::chdir(dir.c_str()) != 0) return fail_errno("enter " + dir);
    return CwdGuard(std::move(old));
  }
  CwdGuard(CwdGuard&&) = default;
  ~CwdGuard() {
    // Failing to go back only matters to later relative paths; bkptool has none after a restore.
    if (old_) (void)!::fchdir(old_.get());
  }

 private:
  explicit CwdGuard(UniqueFd old) : old_(std::move(old)) {}
  UniqueFd old_;
};

struct ReadContext {
  ByteSource* source = nullptr;
  std::optional<Error> error;  // the source failed: report this, not libarchive's text
  bool ended = false;
};

la_ssize_t read_callback(archive* a, void* opaque, const void** buffer) {
  auto* ctx = static_cast<ReadContext*>(opaque);
  if (ctx->ended) return 0;
  auto chunk = ctx->source->next();
  if (!chunk) {
    ctx->error = chunk.error();
    archive_set_error(a, chunk.error().code, "%s", chunk.error().message.c_str());
    return -1;
  }
  if (chunk->empty()) ctx->ended = true;
  *buffer = chunk->data();
  return static_cast<la_ssize_t>(chunk->size());
}

class Extractor {
 public:
  Extractor(archive* in, archive* out, ReadContext& ctx, progress::Meter* meter)
      : in_(in), out_(out), ctx_(ctx), meter_(meter) {}

  Result<ExtractStats> run() {
    for (;;) {
      archive_entry* entry = nullptr;
      int r = archive_read_next_header(in_, &entry);
      if (r == ARCHIVE_EOF) break;
      // ARCHIVE_RETRY is a damaged header (libarchive skipped to the next one it can read):
      // part of the snapshot is lost, so the restore fails rather than restore around the hole.
      if (r == ARCHIVE_RETRY || r < ARCHIVE_WARN) return read_error("read the archive (damaged?)");
      if (archive_entry_pathname(entry) == nullptr) {
        return fail(EIO, "read the archive: an entry without a name (damaged archive)");
      }
      if (r == ARCHIVE_WARN) warn(archive_entry_pathname(entry), archive_error_string(in_));
      if (is_root_entry(archive_entry_pathname(entry))) {
        root_.reset(archive_entry_clone(entry));
        continue;
      }
      if (meter_) meter_->set_file(archive_entry_pathname(entry));
      BKP_TRY_VOID(entry_to_disk(entry));
    }
    if (archive_write_close(out_) < ARCHIVE_WARN) {
      entry_failed("(directory times and modes)", archive_error_string(out_));
    }
    apply_deep_dirs();
    if (root_) apply_root(root_.get());
    if (failed_ > 0) {
      return fail(EIO, fmt::format("{} {} could not be restored; first: {}", failed_,
                                   failed_ == 1 ? "entry" : "entries", first_failure_));
    }
    // libarchive stops at the end-of-archive marker; the source may hold padding after it.
    while (!ctx_.ended) {
      auto chunk = ctx_.source->next();
      if (!chunk) return tl::unexpected(chunk.error());
      ctx_.ended = chunk->empty();
    }
    return stats_;
  }

 private:
  static bool is_root_entry(const char* name) {
    return name != nullptr && (std::string_view(name) == "." || std::string_view(name) == "./");
  }

  // archive_write_disk ignores the metadata of ".", so the volume root's mode, owner, xattrs
  // (its ACLs among them, as raw attributes) and times are given to the target directory (our
  // cwd) here, after close() set its children's. An attribute this process may not set is a
  // warning, as libarchive makes it for every other entry.
  void apply_root(archive_entry* root) {
    const struct stat& st = *archive_entry_stat(root);
    if (::chmod(".", st.st_mode & 07777) != 0) entry_failed(".", std::strerror(errno));
    if (::geteuid() == 0 && ::chown(".", st.st_uid, st.st_gid) != 0) {
      entry_failed(".", std::strerror(errno));
    }
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    archive_entry_xattr_reset(root);
    while (archive_entry_xattr_next(root, &name, &value, &size) == ARCHIVE_OK) {
      if (::setxattr(".", name, value, size, 0) != 0) {
        warn(".", fmt::format("xattr {}: {}", name, std::strerror(errno)).c_str());
      }
    }
    timespec times[2] = {st.st_atim, st.st_mtim};
    if (::utimensat(AT_FDCWD, ".", times, 0) != 0) entry_failed(".", std::strerror(errno));
  }

  Result<void> entry_to_disk(archive_entry* entry) {
    const char* name = archive_entry_pathname(entry);
    if (!BKP_TRY(entry_ok(archive_write_header(out_, entry), name))) return {};
    if (archive_entry_size(entry) > 0) BKP_TRY_VOID(copy_data(name));
    if (!BKP_TRY(entry_ok(archive_write_finish_entry(out_), name))) return {};
    const bool dir = archive_entry_filetype(entry) == AE_IFDIR;
    ++(dir ? stats_.dirs : stats_.files);
    if (dir && std::strlen(name) >= PATH_MAX) {
      const struct stat& st = *archive_entry_stat(entry);
      std::string trimmed(name);
      while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
      deep_dirs_.push_back({std::move(trimmed), st.st_mode & 07777, st.st_atim, st.st_mtim});
    }
    return {};
  }

  // libarchive gives directories their modes and times at close, by their whole names (from
  // our cwd, the target): a directory whose name is PATH_MAX or longer (an application can make
  // one a level at a time) silently keeps the ones it was made with. Given here, resolved in
  // pieces, deepest first (a mode that shuts a directory must not stop the ones below it).
  void apply_deep_dirs() {
    if (deep_dirs_.empty()) return;
    std::sort(deep_dirs_.begin(), deep_dirs_.end(),
              [](const DeepDir& a, const DeepDir& b) { return a.name.size() > b.name.size(); });
    UniqueFd here(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    for (const DeepDir& d : deep_dirs_) {
      UniqueFd fd = here ? open_beneath(here.get(), d.name, O_RDONLY | O_DIRECTORY) : UniqueFd();
      const timespec times[2] = {d.atime, d.mtime};
      if (!fd || ::fchmod(fd.get(), d.mode) != 0 || ::futimens(fd.get(), times) != 0) {
        entry_failed(d.name.c_str(), std::strerror(errno));
      }
    }
  }

  // A libarchive status for one entry: fatal (an error: stop), failed (recorded; skip this
  // entry, go on with the next), or fine (false / true; a warning is kept for the user).
  Result<bool> entry_ok(int r, const char* name) {
    if (r == ARCHIVE_FATAL) {
      return fail(EIO, fmt::format("restore {}: {}", name, archive_error_string(out_)));
    }
    if (r < ARCHIVE_WARN) {
      entry_failed(name, archive_error_string(out_));
      return false;
    }
    if (r == ARCHIVE_WARN) warn(name, archive_error_string(out_));
    return true;
  }

  Result<void> copy_data(const char* name) {
    for (;;) {
      const void* block = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(in_, &block, &size, &offset);
      if (r == ARCHIVE_EOF) return {};
      if (r < ARCHIVE_WARN) return read_error(fmt::format("read {}", name));
      la_ssize_t w = archive_write_data_block(out_, block, size, offset);
      if (w < ARCHIVE_WARN) {
        return fail(EIO, fmt::format("write {}: {}", name, archive_error_string(out_)));
      }
      stats_.bytes += size;
    }
  }

  tl::unexpected<Error> read_error(const std::string& what) {
    if (ctx_.error) return tl::unexpected(*ctx_.error);
    return fail(EIO, fmt::format("{}: {}", what, archive_error_string(in_)));
  }

  void warn(const char* name, const char* text) {
    ++stats_.warnings;
    if (stats_.first_warnings.size() < kMaxWarningsKept) {
      stats_.first_warnings.push_back(
          fmt::format("{}: {}", name ? name : "?", text ? text : "warning"));
    }
  }

  void entry_failed(const char* name, const char* text) {
    if (failed_++ == 0) {
      first_failure_ = fmt::format("{}: {}", name ? name : "?", text ? text : "failed");
    }
  }

  archive* in_;
  archive* out_;
  ReadContext& ctx_;
  progress::Meter* meter_;
  ExtractStats stats_;
  uint64_t failed_ = 0;
  std::string first_failure_;
  ArchiveEntryPtr root_;  // the "." entry, applied after the rest
  struct DeepDir {
    std::string name;
    mode_t mode;
    timespec atime, mtime;
  };
  std::vector<DeepDir> deep_dirs_;  // see apply_deep_dirs()
};

}  // namespace

Result<ExtractStats> extract_archive(ByteSource& source, const std::string& dir,
                                     progress::Meter* meter) {
  CwdGuard cwd = BKP_TRY(CwdGuard::enter(dir));  // outlives both archives: close uses the cwd
  ReadContext ctx;
  ctx.source = &source;
  ReadArchivePtr in(archive_read_new());
  WriteArchivePtr out(archive_write_disk_new());
  if (!in || !out) return fail(ENOMEM, "libarchive: out of memory");
  archive_read_support_filter_all(in.get());
  archive_read_support_format_tar(in.get());
  // Only root can give files away; for anyone else ARCHIVE_EXTRACT_OWNER would just warn once
  // per file owned by someone else, burying real warnings. The caller says so once instead.
  bool owners = ::geteuid() == 0;
  archive_write_disk_set_options(out.get(), kDiskFlags | (owners ? ARCHIVE_EXTRACT_OWNER : 0));
  archive_write_disk_set_standard_lookup(out.get());
  if (archive_read_open(in.get(), &ctx, nullptr, read_callback, nullptr) != ARCHIVE_OK) {
    if (ctx.error) return tl::unexpected(*ctx.error);
    return fail(EIO, fmt::format("open the archive: {}", archive_error_string(in.get())));
  }
  ExtractStats stats = BKP_TRY(Extractor(in.get(), out.get(), ctx, meter).run());
  stats.owners_restored = owners;
  return stats;
}

Result<DirState> inspect_dir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return DirState::kMissing;
    return fail_errno("stat " + dir);
  }
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, fmt::format("{} is not a directory", dir));
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return fail_errno("list " + dir);
  DirState state = DirState::kEmpty;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") {
      state = DirState::kNonEmpty;
      break;
    }
  }
  ::closedir(d);
  return state;
}

}  // namespace bkp::tools
