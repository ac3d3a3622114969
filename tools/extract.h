// Extracting a restore stream (a gzip-compressed tar from backupd) into a directory.
//
// The archive is pulled chunk by chunk from a ByteSource, so a restore of any size needs
// memory for one chunk (a Data frame, at most 4 MiB), never the whole archive.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/progress.h"
#include "common/result.h"

namespace bkp::tools {

// Where archive bytes come from. next() returns the next chunk, valid until the following
// call, and an empty span once the stream has ended.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual Result<std::span<const uint8_t>> next() = 0;
};

struct ExtractStats {
  uint64_t files = 0;  // entries restored other than directories (files, links, fifos...)
  uint64_t dirs = 0;
  uint64_t bytes = 0;            // regular file data written
  bool owners_restored = false;  // running as root: files got their archived owners
  uint64_t warnings = 0;
  std::vector<std::string> first_warnings;  // the first few, for the user
};

// Extracts everything into dir, an existing directory, then consumes the rest of the source.
// Keeps permissions, owners (only when running as root; otherwise the files belong to the
// caller), mtimes, xattrs, symlinks and hard links. Refuses entries with "..",
// absolute paths or paths through symlinks. Existing files are replaced.
//
// Errors: a source error is returned as is; an entry that cannot be written does not stop the
// others but makes the result an error naming the first one and the count; a corrupt archive
// stops at once (EIO).
//
// Changes the working directory during the call (restored before returning): not thread-safe.
// meter, if given, is told the name of each entry as it is extracted.
Result<ExtractStats> extract_archive(ByteSource& source, const std::string& dir,
                                     progress::Meter* meter = nullptr);

enum class DirState { kMissing, kEmpty, kNonEmpty };

// What is at dir now. ENOTDIR if it exists and is not a directory.
Result<DirState> inspect_dir(const std::string& dir);

}  // namespace bkp::tools
