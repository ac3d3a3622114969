// File helpers every process needs: small state files that are either wholly old or wholly new
// after a crash (written to a temporary name, optionally synced, renamed over the old one), the
// "key value" line format such files use, and mkdir -p.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/result.h"

namespace bkp {

enum class Durability { kSync, kNoSync };

// Writes content to path.tmp, fdatasyncs it (kSync), renames it to path. The directory is not
// synced: a crash may bring back the previous file, never a partial one.
Result<void> write_file_atomic(const std::string& path, const std::string& content,
                               Durability durability);

// Reads "key value" lines (value: unsigned decimal). A missing file is an empty map; a line
// that does not parse is EINVAL naming the file.
Result<std::map<std::string, uint64_t>> read_key_values(const std::string& path);
// The inverse: one "key value\n" line per entry, in key order.
std::string format_key_values(const std::map<std::string, uint64_t>& values);

// mkdir -p dir (mode 0755 before umask). ENOTDIR if dir exists and is not a directory.
Result<void> make_dirs(const std::string& dir);

}  // namespace bkp
