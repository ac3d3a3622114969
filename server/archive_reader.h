// Reading a stored tgz with libarchive from a ByteSource (server/archive_store.h), in order and
// each byte once, for the readers of whole archives in backupd: a verify (snapshot_check.h) and
// the seeding of a mirror (seed.h). libarchive pulls the bytes through a callback; `seen`, if
// given, is told of every piece it got (a verify digests them).
#pragma once

#include <archive.h>

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/archive_ptr.h"
#include "common/byte_source.h"
#include "common/result.h"

namespace bkp::server {

class SourceReader {
 public:
  using Seen = std::function<void(std::span<const char>)>;
  explicit SourceReader(ByteSource& source, Seen seen = {});

  // A gzip'd tar reader over this one (which must outlive it). Errors as complaint() makes them.
  Result<ReadArchivePtr> open();
  // Reads (and shows `seen`) what libarchive left unread.
  Result<void> drain();
  // libarchive's failure `what` as an error: the source's own error when reading it failed,
  // else EBADMSG (the bytes are no archive, or a damaged one).
  Error complaint(std::string what) const;

 private:
  // libarchive's read callback (archive_read_open), self being a SourceReader.
  static la_ssize_t read(archive* a, void* self, const void** out) noexcept;
  Result<size_t> next();

  ByteSource& source_;
  Seen seen_;
  std::vector<char> buf_;
  uint64_t at_ = 0;
  std::optional<Error> error_;
};

}  // namespace bkp::server
