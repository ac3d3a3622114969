// Owning pointers for libarchive's handles, so every reader and writer of archives frees them
// the same way: backupd's snapshot writer and archive readers, bkptool's extractor.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <memory>

namespace bkp {

struct ArchiveReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ArchiveEntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

using ReadArchivePtr = std::unique_ptr<archive, ArchiveReadFree>;    // archive_read_new()
using WriteArchivePtr = std::unique_ptr<archive, ArchiveWriteFree>;  // archive_write_*new()
using ArchiveEntryPtr = std::unique_ptr<archive_entry, ArchiveEntryFree>;

}  // namespace bkp
