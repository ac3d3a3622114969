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

namespace bkp::server {
namespace {

struct ReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};

// The source in order, each byte handed out once to libarchive (or to drain()) and digested.
class DigestingReader {
 public:
  DigestingReader(ByteSource& source, uint64_t part_size)
      : source_(source), hasher_(part_size == 0 ? kPartSize : part_size), buf_(1 << 20) {}

  // libarchive's read callback (archive_read_open), self being a DigestingReader.
  static la_ssize_t read(archive* a, void* self, const void** out) noexcept {
    auto* r = static_cast<DigestingReader*>(self);
    auto n = r->next();
    if (!n) {
      archive_set_error(a, n.error().code, "%s", n.error().message.c_str());
      return -1;
    }
    *out = r->buf_.data();
    return static_cast<la_ssize_t>(*n);
  }

  // Digests what libarchive did not read.
  Result<void> drain() {
    while (BKP_TRY(next()) > 0) {
    }
    return {};
  }

  const std::vector<PartDigest>& digests() { return hasher_.finish(); }
  // Why reading failed, if it was the source's fault (not the archive's).
  const std::optional<Error>& error() const { return error_; }

 private:
  Result<size_t> next() {
    if (at_ >= source_.size()) return size_t{0};
    auto n = source_.read_at(at_, buf_);
    if (!n) {
      error_ = n.error();
      return tl::unexpected(n.error());
    }
    if (*n == 0) {
      error_ = Error{EIO, source_.where() + ": shorter than its size"};
      return tl::unexpected(*error_);
    }
    hasher_.feed(std::span<const char>(buf_.data(), *n));
    at_ += *n;
    return *n;
  }

  ByteSource& source_;
  PartHasher hasher_;
  std::vector<char> buf_;
  uint64_t at_ = 0;
  std::optional<Error> error_;
};

// Reads every header and data block; returns the entries read, or libarchive's complaint
// (EBADMSG; the reader's own error when reading the source failed).
Result<uint64_t> read_through(DigestingReader& reader) {
  std::unique_ptr<archive, ReadFree> a(archive_read_new());
  if (!a) return fail(ENOMEM, "libarchive: out of memory");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  auto complaint = [&](std::string what) -> tl::unexpected<Error> {
    if (reader.error()) return tl::unexpected(*reader.error());
    return fail(EBADMSG, std::move(what));
  };
  if (archive_read_open(a.get(), &reader, nullptr, &DigestingReader::read, nullptr) != ARCHIVE_OK) {
    return complaint(archive_error_string(a.get()));
  }
  uint64_t entries = 0;
  archive_entry* entry = nullptr;
  while (true) {
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return complaint(fmt::format("after {} entries: {}", entries, archive_error_string(a.get())));
    }
    ++entries;
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while ((r = archive_read_data_block(a.get(), &block, &size, &offset)) == ARCHIVE_OK) {
    }
    if (r != ARCHIVE_EOF) {
      return complaint(fmt::format("entry {} ({}): {}", entries, archive_entry_pathname(entry),
                                   archive_error_string(a.get())));
    }
  }
  return entries;
}

}  // namespace

Result<SnapshotCheck> check_snapshot(ByteSource& source, const SnapshotRecord& record) {
  SnapshotCheck out;
  out.bytes = source.size();
  const std::string name = record.id + ".tgz";
  DigestingReader reader(source, record.part_size);
  auto entries = read_through(reader);
  if (!entries && entries.error().code != EBADMSG) return tl::unexpected(entries.error());
  BKP_TRY_VOID(reader.drain());
  if (!entries) {
    out.differences.push_back({name, "archive", "does not read back: " + entries.error().message});
  } else {
    out.entries = *entries;
  }
  if (record.part_size != 0) {
    const auto& digests = reader.digests();
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
