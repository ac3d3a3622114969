// Reading a snapshot back for a verify (see snapshot_check.h). Both reads go through one
// descriptor opened first, so a rotation that unlinks the file meanwhile changes nothing.
#include "server/snapshot_check.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "common/part_digests.h"
#include "common/unique_fd.h"

namespace bkp::server {
namespace {

struct ReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};

// Reads every header and data block; returns the entries read, or libarchive's complaint.
Result<uint64_t> read_through(int fd) {
  if (::lseek(fd, 0, SEEK_SET) != 0) return fail_errno("seek");
  std::unique_ptr<archive, ReadFree> a(archive_read_new());
  if (!a) return fail(ENOMEM, "libarchive: out of memory");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_fd(a.get(), fd, 1 << 20) != ARCHIVE_OK) {
    return fail(EBADMSG, archive_error_string(a.get()));
  }
  uint64_t entries = 0;
  archive_entry* entry = nullptr;
  while (true) {
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return fail(EBADMSG,
                  fmt::format("after {} entries: {}", entries, archive_error_string(a.get())));
    }
    ++entries;
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while ((r = archive_read_data_block(a.get(), &block, &size, &offset)) == ARCHIVE_OK) {
    }
    if (r != ARCHIVE_EOF) {
      return fail(EBADMSG, fmt::format("entry {} ({}): {}", entries, archive_entry_pathname(entry),
                                       archive_error_string(a.get())));
    }
  }
  return entries;
}

}  // namespace

Result<SnapshotCheck> check_snapshot(const std::string& file, const SnapshotRecord& record) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("open " + file);
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat " + file);
  SnapshotCheck out;
  out.bytes = static_cast<uint64_t>(st.st_size);
  const std::string name = record.id + ".tgz";
  if (record.part_size != 0) {
    auto digests = BKP_TRY(digest_file(fd.get(), record.part_size).map_error([&](Error e) {
      return e.wrap("digest " + file);
    }));
    std::vector<uint64_t> bad;
    for (size_t i = 0; i < std::min(digests.size(), record.digests.size()); ++i) {
      if (digests[i] != record.digests[i]) bad.push_back(i);
    }
    if (digests.size() != record.digests.size()) {
      out.differences.push_back(
          {name, "parts",
           fmt::format("{} parts of {} bytes in the file ({} bytes), {} in the catalog",
                       digests.size(), record.part_size, out.bytes, record.digests.size())});
    }
    if (!bad.empty()) {
      out.differences.push_back(
          {name, "digest",
           fmt::format("{} of {} parts differ from their catalog digest (first: part {})",
                       bad.size(), record.digests.size(), bad.front())});
    }
  }
  auto entries = read_through(fd.get());
  if (!entries) {
    if (entries.error().code != EBADMSG) return tl::unexpected(entries.error().wrap(file));
    out.differences.push_back({name, "archive", "does not read back: " + entries.error().message});
  } else {
    out.entries = *entries;
  }
  return out;
}

}  // namespace bkp::server
