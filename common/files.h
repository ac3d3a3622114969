// File helpers every process needs: small state files that are either wholly old or wholly new
// after a crash (written to a temporary name, optionally synced, renamed over the old one), the
// "key value" line format such files use, mkdir -p, and mkdir -p beneath a directory without
// ever following a symlink (for directories whose names a peer chooses).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

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

// The bytes allocated to dir and everything beneath it (not following symlinks, not leaving
// its filesystem), each inode once however many names it has. Entries that vanish during the
// walk are skipped.
Result<uint64_t> allocated_bytes(const std::string& dir);

// mkdir -p dir (mode 0755 before umask). ENOTDIR if dir exists and is not a directory.
Result<void> make_dirs(const std::string& dir);

// Opens (O_RDONLY) the directory rel ("a/b") beneath base_fd, creating missing components (mode
// 0755), resolving each with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: a symlink anywhere on the
// way is ELOOP, never followed. *created tells whether the last component was made now.
Result<UniqueFd> open_dir_beneath(int base_fd, const std::string& rel, bool* created = nullptr);

}  // namespace bkp
