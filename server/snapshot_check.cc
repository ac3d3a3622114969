// Reading a snapshot back for a verify (see snapshot_check.h), in one pass over its bytes:
// libarchive reads them through a callback that also feeds the part digests, and whatever it
// leaves unread (an archive that stops making sense early) is digested after it. One pass
// matters when the archive is in a bucket: every byte read is a byte fetched.
#include "server/snapshot_check.h"

#include <archive.h>
#include <archive_entry.h>

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "common/part_digests.h"
#include "server/archive_reader.h"

namespace bkp::server {
namespace {

// Reads every header and data block; returns the entries read, or libarchive's complaint
// (EBADMSG; the reader's own error when reading the source failed).
Result<uint64_t> read_through(SourceReader& reader) {
  auto a = BKP_TRY(reader.open());
  uint64_t entries = 0;
  archive_entry* entry = nullptr;
  while (true) {
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return tl::unexpected(reader.complaint(
          fmt::format("after {} entries: {}", entries, archive_error_string(a.get()))));
    }
    ++entries;
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while ((r = archive_read_data_block(a.get(), &block, &size, &offset)) == ARCHIVE_OK) {
    }
    if (r != ARCHIVE_EOF) {
      return tl::unexpected(reader.complaint(fmt::format(
          "entry {} ({}): {}", entries, archive_entry_pathname(entry), archive_error_string(a.get()))));
    }
  }
  return entries;
}

}  // namespace

Result<SnapshotCheck> check_snapshot(ByteSource& source, const SnapshotRecord& record) {
  SnapshotCheck out;
  out.bytes = source.size();
  const std::string name = record.id + ".tgz";
  PartHasher hasher(record.part_size == 0 ? kPartSize : record.part_size);
  SourceReader reader(source, [&hasher](std::span<const char> bytes) { hasher.feed(bytes); });
  auto entries = read_through(reader);
  if (!entries && entries.error().code != EBADMSG) return tl::unexpected(entries.error());
  BKP_TRY_VOID(reader.drain());
  if (!entries) {
    out.differences.push_back({name, "archive", "does not read back: " + entries.error().message});
  } else {
    out.entries = *entries;
  }
  if (record.part_size != 0) {
    const auto& digests = hasher.finish();
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
  return out;
}

}  // namespace bkp::server
