// Writing tgz snapshots into an ArchiveStore (see snapshot.h).
//
// Entries come from a Cut's names, in the order its walk found them (depth first, sorted), and
// a regular file's bytes through the Cut, which gives them as they were at the cut even while
// the mirror changes. The archive starts with the volume root as "./" so a restore also gets
// the root's mode, owner and times, and is full pax (not restricted): restricted pax drops
// sub-second mtimes, and a restore must reproduce mtimes exactly (DESIGN.md invariant 3). Hard
// links of regular files are resolved by libarchive's link resolver (the second name of an
// inode becomes a hardlink entry without data); those of symlinks, fifos and device nodes
// become hardlink entries here. File data is streamed in 1 MiB blocks, so memory does not
// depend on file sizes.
//
// libarchive writes only the tar stream, into MemberOutput, which compresses it on every core
// as gzip members (server/gzip_members.h) and writes them to the sink; libarchive's own gzip
// filter uses one core, and gzip was the whole cost of a snapshot (docs/ARCHITECTURE.md,
// "Snapshots are gzip members"). The compressing threads run at nice +10 (kCompressNice): a
// snapshot is never urgent, and the node sessions applying the stream must not wait for it.
#include "server/snapshot.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fmt/format.h>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/archive_ptr.h"
#include "common/files.h"
#include "common/log.h"
#include "server/file_ids.h"
#include "server/gzip_members.h"

namespace bkp::server {
namespace {

constexpr size_t kBlock = 1u << 20;
constexpr size_t kMemberBlock = 1u << 20;  // tar bytes per gzip member
constexpr int kCompressNice = 10;
constexpr std::string_view kSuffix = ".tgz";

struct ResolverDeleter {
  void operator()(archive_entry_linkresolver* r) const { archive_entry_linkresolver_free(r); }
};

// A POSIX ACL attribute (system.posix_acl_access or _default, the kernel's format: a version 2
// header, then tag, permissions and id per entry, little-endian) as the archive's own ACL
// entries: pax SCHILY.acl.*, which is how bsdtar and GNU tar carry ACLs and what libarchive
// restores (it skips the raw attributes on extraction). The raw attribute stays in the entry
// too, for our own reader (seed.cc). Anything malformed is left to the raw attribute.
void add_acl(archive_entry* e, const std::string& name, const std::string& value) {
  int type = name == "system.posix_acl_access"    ? ARCHIVE_ENTRY_ACL_TYPE_ACCESS
             : name == "system.posix_acl_default" ? ARCHIVE_ENTRY_ACL_TYPE_DEFAULT
                                                  : 0;
  constexpr size_t kHeader = 4, kEntry = 8;
  if (type == 0 || value.size() < kHeader || (value.size() - kHeader) % kEntry != 0) return;
  uint32_t version = 0;
  std::memcpy(&version, value.data(), sizeof version);
  if (version != 2) return;
  for (size_t at = kHeader; at < value.size(); at += kEntry) {
    uint16_t tag = 0, perm = 0;
    uint32_t id = 0;
    std::memcpy(&tag, value.data() + at, 2);
    std::memcpy(&perm, value.data() + at + 2, 2);
    std::memcpy(&id, value.data() + at + 4, 4);
    int archive_tag = tag == 0x01   ? ARCHIVE_ENTRY_ACL_USER_OBJ
                      : tag == 0x02 ? ARCHIVE_ENTRY_ACL_USER
                      : tag == 0x04 ? ARCHIVE_ENTRY_ACL_GROUP_OBJ
                      : tag == 0x08 ? ARCHIVE_ENTRY_ACL_GROUP
                      : tag == 0x10 ? ARCHIVE_ENTRY_ACL_MASK
                      : tag == 0x20 ? ARCHIVE_ENTRY_ACL_OTHER
                                    : 0;
    if (archive_tag == 0) continue;
    const bool named = archive_tag == ARCHIVE_ENTRY_ACL_USER || archive_tag == ARCHIVE_ENTRY_ACL_GROUP;
    // rwx are the same bits in both (ARCHIVE_ENTRY_ACL_READ 4, WRITE 2, EXECUTE 1).
    archive_entry_acl_add_entry(e, type, perm & 07, archive_tag, named ? static_cast<int>(id) : -1,
                                nullptr);
  }
}

// The tar stream's way out: libarchive's write callback hands it to GzipMembers, whose members
// go to the store's sink in order. A failure to write there (ENOSPC, a store that went away) is
// kept with its errno, so the run's error is "write PATH: No space left on device" whichever
// entry libarchive was at.
class MemberOutput {
 public:
  MemberOutput(ArchiveSink& sink, const ArchiveOptions& options)
      : sink_(sink),
        members_([this](std::span<const char> bytes) { return write_file(bytes); },
                 GzipMembersOptions{.level = options.gzip_level,
                                    .block = kMemberBlock,
                                    .threads = options.gzip_threads,
                                    .nice = kCompressNice}) {}

  // The last members, once libarchive closed the tar stream.
  Result<void> finish() { return members_.finish(); }
  // Why the stream could not be written, if it was the output's fault.
  const std::optional<Error>& error() const { return members_.error(); }
  // The part digests of what was written, once finished.
  std::vector<PartDigest> digests() { return hasher_.finish(); }

  // libarchive's write callback (archive_write_open2), self being a MemberOutput.
  static la_ssize_t write(archive* a, void* self, const void* buf, size_t n) noexcept {
    try {
      auto written = static_cast<MemberOutput*>(self)->members_.write(
          std::span<const char>(static_cast<const char*>(buf), n));
      if (written) return static_cast<la_ssize_t>(n);
      archive_set_error(a, written.error().code, "%s", written.error().message.c_str());
    } catch (const std::exception& e) {
      archive_set_error(a, EIO, "internal error: %s", e.what());
    }
    return -1;
  }

 private:
  Result<void> write_file(std::span<const char> bytes) {
    hasher_.feed(bytes);
    return sink_.write(bytes);
  }

  ArchiveSink& sink_;
  PartHasher hasher_;
  GzipMembers members_;  // last: destroyed first, before what write_file uses
};

class Writer {
 public:
  Writer(archive* a, archive_entry_linkresolver* resolver, Cut& cut, const ArchiveOptions& options)
      : a_(a), resolver_(resolver), cut_(cut), options_(options) {}

  // Every entry of the cut, in the order of its names.
  Result<void> all() {
    BKP_TRY_VOID(check_stop());
    NameReader names = BKP_TRY(cut_.names());
    CutEntry e;
    while (BKP_TRY(names.next(e))) BKP_TRY_VOID(entry(e));
    return finish();
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
  FileIdsWriter file_ids;  // of the regular files with an id (a mirror's: server/file_ids.h)

 private:
  // False if the format refused this entry (noted in warnings, the archive goes on); an error
  // if the archive itself failed.
  Result<bool> header(archive_entry* e) {
    int r = archive_write_header(a_, e);
    if (r == ARCHIVE_FAILED) {
      refused_.push_back(fmt::format("{} ({})", archive_entry_pathname(e), archive_error_string(a_)));
      return false;
    }
    if (r < ARCHIVE_WARN) return tl::unexpected(failure(archive_entry_pathname(e)));
    return true;
  }

  // The root is "." and carries the volume root's own mode, owner, times and xattrs, so a
  // restore gives the target directory the root's attributes too. A directory the format
  // refused still has entries it can hold: they follow as entries of their own.
  Result<void> entry(const CutEntry& c) {
    BKP_TRY_VOID(pause());
    BKP_TRY_VOID(check_stop());
    if (S_ISSOCK(c.st.st_mode)) {
      sockets_.push_back(c.path);
      return {};
    }
    ArchiveEntryPtr e(archive_entry_new());
    archive_entry_copy_stat(e.get(), &c.st);
    archive_entry_set_pathname(e.get(), c.path.empty() ? "." : c.path.c_str());
    if (!S_ISREG(c.st.st_mode) && !S_ISDIR(c.st.st_mode) && c.st.st_nlink > 1) {
      // A later name of a symlink, fifo or device node already archived: a hard link entry, as
      // tar writes one, so a restore makes one inode of them again.
      auto [first, added] = other_names_.try_emplace(c.st.st_ino, c.path);
      if (!added) {
        archive_entry_set_hardlink(e.get(), first->second.c_str());
        BKP_TRY(header(e.get()));
        return {};
      }
    }
    if (S_ISREG(c.st.st_mode) && c.id != 0) file_ids.add(c.path, {c.id, c.source_ctime});
    if (S_ISLNK(c.st.st_mode)) archive_entry_set_symlink(e.get(), c.target.c_str());
    for (const auto& [name, value] : c.xattrs) {
      archive_entry_xattr_add_entry(e.get(), name.c_str(), value.data(), value.size());
      add_acl(e.get(), name, value);
    }
    if (S_ISREG(c.st.st_mode)) return file(std::move(e), c);
    BKP_TRY(header(e.get()));
    return {};
  }

  Result<void> file(ArchiveEntryPtr e, const CutEntry& c) {
    // A mirror's file has one more link, in ids/: without it the link resolver frees an inode's
    // entry once all its names are out, and a file with one name never enters it.
    nlink_t names = c.st.st_nlink - (c.id != 0 && c.st.st_nlink > 1 ? 1 : 0);
    archive_entry_set_nlink(e.get(), names);
    std::optional<Cut::File> f;
    // A later name of an inode already archived becomes a hard link entry without data.
    if (names == 1 || linked_.insert(c.st.st_ino).second) {
      f = BKP_TRY(cut_.open(c));
      sparse_map(f->data, e.get());
    }
    archive_entry* spare = nullptr;
    archive_entry* entry = e.release();
    archive_entry_linkify(resolver_, &entry, &spare);
    // entry: what to write now (may be null: held back as a possible hard link); spare: an
    // earlier entry released by this one.
    if (entry != nullptr) {
      ArchiveEntryPtr owned(entry);
      bool written = BKP_TRY(header(entry));
      if (written && f && archive_entry_size(entry) > 0) {
        BKP_TRY_VOID(data(*f, static_cast<uint64_t>(archive_entry_size(entry)), c.path));
      }
    }
    if (spare != nullptr) {
      ArchiveEntryPtr owned(spare);
      BKP_TRY(header(spare));
    }
    if (f) cut_.archived(f->ino);
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

  // The file's `size` bytes as its entry announced them: its data regions (those of the
  // entry's sparse map) read through the cut, its holes fed as zeros from memory, which the pax
  // writer skips for a sparse entry (nothing is read, nothing compressed).
  Result<void> data(Cut::File& f, uint64_t size, const std::string& rel) {
    buf_.resize(kBlock);
    ++files;
    uint64_t at = 0;
    auto put = [&](const char* bytes, size_t n) -> Result<void> {
      if (archive_write_data(a_, bytes, n) < 0) return tl::unexpected(failure(rel));
      at += n;
      return {};
    };
    auto zeros_to = [&](uint64_t end) -> Result<void> {
      static const std::vector<char> zeros(kBlock, 0);
      while (at < end) {
        BKP_TRY_VOID(check_stop());
        BKP_TRY_VOID(put(zeros.data(), static_cast<size_t>(std::min<uint64_t>(kBlock, end - at))));
      }
      return {};
    };
    for (const auto& [start, end] : f.data.ranges()) {
      BKP_TRY_VOID(zeros_to(start));
      while (at < end) {
        BKP_TRY_VOID(check_stop());
        size_t want = static_cast<size_t>(std::min<uint64_t>(kBlock, end - at));
        size_t n = BKP_TRY(cut_.read(f, buf_.data(), want, at).map_error([&](Error e) {
          return e.wrap("read " + rel);
        }));
        if (n == 0) break;
        BKP_TRY_VOID(put(buf_.data(), n));
        data_bytes += n;
      }
    }
    return zeros_to(size);
  }

  // libarchive's last error, about `what`.
  Error failure(const std::string& what) const {
    int code = archive_errno(a_);
    return Error{code > 0 ? code : EIO, fmt::format("archive {}: {}", what, archive_error_string(a_))};
  }

  // The test seam's pause before an entry, in slices so a cancel is still prompt.
  Result<void> pause() const {
    auto left = options_.entry_delay;
    while (left.count() > 0) {
      BKP_TRY_VOID(check_stop());
      auto slice = std::min(left, std::chrono::milliseconds(20));
      std::this_thread::sleep_for(slice);
      left -= slice;
    }
    return {};
  }

  // Cancelled, or the cut could not keep something: either way this archive cannot finish.
  Result<void> check_stop() const {
    if (options_.cancel != nullptr && options_.cancel->load(std::memory_order_relaxed)) {
      return fail(ECANCELED, "cancelled");
    }
    if (auto failure = cut_.failure()) return tl::unexpected(*failure);
    return {};
  }

  archive* a_;
  std::vector<std::string> sockets_;  // skipped, by volume-relative path
  std::vector<std::string> refused_;  // "path (why)"
  archive_entry_linkresolver* resolver_;
  Cut& cut_;
  const ArchiveOptions& options_;
  std::unordered_set<ino_t> linked_;  // inodes of several names whose data went out
  // First names of the other inodes of several names (symlinks, fifos, device nodes).
  std::unordered_map<ino_t, std::string> other_names_;
  std::vector<char> buf_;
};

}  // namespace

std::string snapshot_id_for(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  return fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, unix_ms % 1000);
}

std::optional<int64_t> snapshot_id_ms(std::string_view id) {
  tm t{};
  unsigned ms = 0;
  char zone = 0;
  int used = 0;
  const std::string text(id);
  if (id.size() != 20 ||
      sscanf(text.c_str(), "%4d%2d%2dT%2d%2d%2d.%3u%c%n", &t.tm_year, &t.tm_mon, &t.tm_mday,
             &t.tm_hour, &t.tm_min, &t.tm_sec, &ms, &zone, &used) != 8 ||
      used != 20 || zone != 'Z') {
    return std::nullopt;
  }
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  const int64_t unix_ms = static_cast<int64_t>(timegm(&t)) * 1000 + ms;
  if (snapshot_id_for(unix_ms) != id) return std::nullopt;  // 20261332T... and the like
  return unix_ms;
}

Result<SnapshotFile> write_snapshot(Cut& cut, ArchiveStore& store, const std::string& id,
                                    const ArchiveOptions& options) {
  SnapshotFile out;
  out.id = id;
  out.name = id + std::string(kSuffix);
  auto failed = [&](Error e) { return tl::unexpected(e.wrap("snapshot " + out.name)); };
  auto sink = store.create(id, ArchivePart::kArchive);
  if (!sink) return failed(sink.error());

  // Before the archive, so that it outlives anything freeing the archive could write.
  MemberOutput output(**sink, options);
  WriteArchivePtr a(archive_write_new());
  std::unique_ptr<archive_entry_linkresolver, ResolverDeleter> resolver(
      archive_entry_linkresolver_new());
  archive_entry_linkresolver_set_strategy(resolver.get(), ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE);
  // No block size: libarchive passes the stream through unbuffered and unpadded (the output
  // buffers it in members).
  if (archive_write_set_format_pax(a.get()) != ARCHIVE_OK ||
      archive_write_set_bytes_per_block(a.get(), 0) != ARCHIVE_OK ||
      archive_write_open2(a.get(), &output, nullptr, &MemberOutput::write, nullptr, nullptr) !=
          ARCHIVE_OK) {
    return failed(Error{EIO, std::string("libarchive setup: ") + archive_error_string(a.get())});
  }
  Writer writer(a.get(), resolver.get(), cut, options);
  auto walked = writer.all();
  if (!walked) {
    // Without this, freeing the archive closes it, which pads the unfinished entry to its
    // announced size: a cancelled run over a 64 GiB sparse file wrote 64 GiB of zeros first.
    archive_write_fail(a.get());
    return failed(output.error().value_or(walked.error()));
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    return failed(output.error().value_or(
        Error{EIO, std::string("finish archive: ") + archive_error_string(a.get())}));
  }
  if (auto finished = output.finish(); !finished) return failed(finished.error());
  auto bytes = (*sink)->commit();
  if (!bytes) return failed(bytes.error());
  if (writer.file_ids.count() > 0) {
    if (auto kept = store_file_ids(store, id, writer.file_ids); !kept) {
      // The snapshot is whole without them; a mirror is only never seeded from it.
      log::warn("snapshot {}: its file ids: {}", out.name, kept.error().message);
    }
  }
  out.bytes = *bytes;
  out.files = writer.files;
  out.data_bytes = writer.data_bytes;
  out.warnings = writer.warnings();
  out.digests = output.digests();
  return out;
}

}  // namespace bkp::server
