// Seeding a mirror from a snapshot (see seed.h).
//
// Each archive entry becomes the operations a node's baseline would send for it: kMkdir,
// kCreate + Writes + kTruncate + kAttr (with the source ctime) by id, kLink for a hard link
// entry, kSymlink, kMknod. A directory's times are set after everything in it (creating an
// entry moves its parent's mtime), so they are kept and played last, deepest first. Commits
// go every kCommitBytes of data, so the final sync does not have a whole volume to flush.
#include "server/seed.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include <string>
#include <vector>

#include <mutex>

#include "common/files.h"
#include "common/wire/messages.h"
#include "server/archive_reader.h"

namespace bkp::server {
namespace {

constexpr uint64_t kCommitBytes = 256ull << 20;

// The archive's name for the volume root is "."; its other names are "dir/name" (a "./"
// prefix, which other writers use, is dropped too).
std::string volume_path(const char* name) {
  std::string p = name == nullptr ? "" : name;
  while (p.starts_with("./")) p.erase(0, 2);
  if (p == ".") p.clear();
  while (!p.empty() && p.back() == '/') p.pop_back();
  return p;
}

class Seeder {
 public:
  Seeder(changes::Applier& applier, const FileIds& ids, const std::atomic<bool>* cancel)
      : applier_(applier), ids_(ids), cancel_(cancel) {}

  Result<Seeded> run(ByteSource& source) {
    SourceReader reader(source);
    auto a = BKP_TRY(reader.open());
    archive_entry* e = nullptr;
    while (true) {
      BKP_TRY_VOID(check_cancel());
      int r = archive_read_next_header(a.get(), &e);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        return tl::unexpected(reader.complaint(fmt::format(
            "after {} entries: {}", out_.entries, archive_error_string(a.get()))));
      }
      ++out_.entries;
      BKP_TRY_VOID(entry(a.get(), e, reader));
    }
    // Deepest first: the archive names a directory before anything in it.
    for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) BKP_TRY_VOID(apply(*it));
    BKP_TRY_VOID(applier_.commit());
    return out_;
  }

 private:
  Result<void> entry(archive* a, archive_entry* e, SourceReader& reader) {
    const std::string path = volume_path(archive_entry_pathname(e));
    const struct stat& st = *archive_entry_stat(e);
    if (const char* hardlink = archive_entry_hardlink(e); hardlink != nullptr) {
      wire::Op op;
      op.kind = wire::OpKind::kLink;
      op.path = path;
      op.target = volume_path(hardlink);
      if (auto it = ids_.find(path); it != ids_.end()) op.id = it->second.id;
      return apply(op);
    }
    const wire::Op attrs = wire::attr_from_stat(path, 0, st);
    wire::Op op = attrs;
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR:
        if (!path.empty()) {
          op.kind = wire::OpKind::kMkdir;
          BKP_TRY_VOID(apply(op));
        }
        BKP_TRY_VOID(xattrs(e, path, 0));
        dir_times_.push_back(attrs);
        return {};
      case S_IFREG:
        return file(a, e, path, st, reader);
      case S_IFLNK:
        op.kind = wire::OpKind::kSymlink;
        op.target = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
        return apply(op);
      case S_IFIFO:
      case S_IFCHR:
      case S_IFBLK:
        op.kind = wire::OpKind::kMknod;
        op.mode = st.st_mode;
        op.rdev = st.st_rdev;
        BKP_TRY_VOID(apply(op));
        return apply(attrs);
      default:
        return {};  // nothing a snapshot writes
    }
  }

  Result<void> file(archive* a, archive_entry* e, const std::string& path, const struct stat& st,
                    SourceReader& reader) {
    auto it = ids_.find(path);
    if (it == ids_.end() || it->second.id == 0) {
      ++out_.skipped;
      return {};  // its data is skipped with the next header
    }
    const FileIdRecord rec = it->second;
    wire::Op op = wire::attr_from_stat(path, rec.id, st);
    op.kind = wire::OpKind::kCreate;
    BKP_TRY_VOID(apply(op));
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int r;
    while ((r = archive_read_data_block(a, &block, &size, &offset)) == ARCHIVE_OK) {
      BKP_TRY_VOID(check_cancel());
      if (size == 0) continue;
      wire::Write w;
      w.id = rec.id;
      w.offset = static_cast<uint64_t>(offset);
      w.data = std::span<const uint8_t>(static_cast<const uint8_t*>(block), size);
      BKP_TRY_VOID(applier_.write(w));
      out_.bytes += size;
      since_commit_ += size;
    }
    if (r != ARCHIVE_EOF) {
      return tl::unexpected(reader.complaint(
          fmt::format("{}: {}", path.empty() ? "." : path, archive_error_string(a))));
    }
    ++out_.files;
    wire::Op truncate;
    truncate.kind = wire::OpKind::kTruncate;
    truncate.id = rec.id;
    truncate.size = static_cast<uint64_t>(st.st_size);  // a trailing hole
    BKP_TRY_VOID(apply(truncate));
    BKP_TRY_VOID(xattrs(e, path, rec.id));
    wire::Op closing = wire::attr_from_stat(path, rec.id, st);
    closing.ctime_ns = rec.source_ctime;  // the content is the source's as of this ctime
    BKP_TRY_VOID(apply(closing));
    if (since_commit_ >= kCommitBytes) {
      BKP_TRY_VOID(applier_.commit());
      since_commit_ = 0;
    }
    return {};
  }

  Result<void> xattrs(archive_entry* e, const std::string& path, uint64_t id) {
    if (archive_entry_xattr_reset(e) == 0) return {};
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
      wire::Op op;
      op.kind = wire::OpKind::kSetXattr;
      op.path = path;
      op.id = id;
      op.name = name;
      op.value.assign(static_cast<const char*>(value), size);
      BKP_TRY_VOID(apply(op));
    }
    return {};
  }

  Result<void> apply(const wire::Op& op) { return applier_.apply(op); }  // errors say which

  Result<void> check_cancel() const {
    if (cancel_ != nullptr && cancel_->load()) return fail(ECANCELED, "cancelled");
    return {};
  }

  changes::Applier& applier_;
  const FileIds& ids_;
  const std::atomic<bool>* cancel_;
  std::vector<wire::Op> dir_times_;
  Seeded out_;
  uint64_t since_commit_ = 0;
};

}  // namespace

Result<Seeded> seed_mirror(changes::Applier& applier, ByteSource& archive, const FileIds& ids,
                           const std::atomic<bool>* cancel) {
  Seeder seeder(applier, ids, cancel);
  return seeder.run(archive);
}

Result<std::optional<SnapshotRecord>> seed_candidate(Volume& v, Catalog& catalog) {
  {
    std::lock_guard lock(v.mu);
    if (v.receiver->instance() != 0) return std::nullopt;
    auto names = list_names(v.applier->tree_fd(), v.name());
    if (!names || !names->empty()) return std::nullopt;
  }
  auto snapshots = BKP_TRY(catalog.snapshots(v.host(), v.path(), /*include_deleted=*/false));
  if (snapshots.empty()) return std::nullopt;
  return std::optional<SnapshotRecord>(std::move(snapshots.front()));
}

Result<std::optional<Seeded>> seed_volume(Volume& v, Hub& hub, const SnapshotRecord& snapshot,
                                          const std::atomic<bool>* cancel) {
  wire::Op sync;
  sync.kind = wire::OpKind::kSyncBegin;
  {
    std::lock_guard lock(v.mu);
    BKP_TRY_VOID(v.receiver->before_outside_change());
    BKP_TRY_VOID(v.applier->apply(sync));
  }
  // Without the mutex: nothing applies to this mirror but us (its node is not dialed yet), and
  // replica streams wait while it is syncing.
  auto seeded = [&]() -> Result<std::optional<Seeded>> {
    const auto ids = BKP_TRY(load_file_ids(v.archives(), snapshot.id));
    if (!ids) return std::nullopt;
    auto archive = BKP_TRY(v.archives().open(snapshot.id, ArchivePart::kArchive));
    return std::optional<Seeded>(BKP_TRY(seed_mirror(*v.applier, *archive, *ids, cancel)));
  }();
  std::lock_guard lock(v.mu);
  sync.kind = wire::OpKind::kSyncEnd;  // removes nothing: all there is was named
  BKP_TRY_VOID(v.applier->apply(sync));
  BKP_TRY_VOID(v.applier->commit());
  BKP_TRY_VOID(hub.rescan_streams(v));
  return seeded;
}

}  // namespace bkp::server
