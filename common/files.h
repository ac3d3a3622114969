// File helpers every process needs: small state files that are either wholly old or wholly new
// after a crash (written to a temporary name, optionally synced, renamed over the old one), the
// "key value" line format such files use, mkdir -p, and opening or deleting directories beneath
// a directory without ever following a symlink (for directories whose names a peer chooses).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp {

enum class Durability { kSync, kNoSync };

// Writes content to path.tmp, fdatasyncs it (kSync), and swaps the two names (RENAME_EXCHANGE),
// so path.tmp then holds the previous version and is overwritten in place next time. The
// directory is not synced: a crash may bring back the previous file, never a partial one.
// Why a swap and not a rename over path: the rename frees the old file's blocks, and on a
// filesystem mounted with `discard` and no journal every freed block waits for a synchronous
// discard; a stream receiver writes its state at every commit.
Result<void> write_file_atomic(const std::string& path, const std::string& content,
                               Durability durability);

// fsyncs the directory dir, so the names created, renamed or removed in it are durable.
Result<void> fsync_dir(const std::string& dir);

// Reads "key value" lines (value: unsigned decimal). A missing file is an empty map; a line
// that does not parse is EINVAL naming the file.
Result<std::map<std::string, uint64_t>> read_key_values(const std::string& path);
// The inverse: one "key value\n" line per entry, in key order.
std::string format_key_values(const std::map<std::string, uint64_t>& values);

// The bytes allocated to dir and everything beneath it (not following symlinks, not leaving
// its filesystem), each inode once however many names it has. Entries that vanish during the
// walk are skipped.
Result<uint64_t> allocated_bytes(const std::string& dir);

// Writes all of bytes at fd's offset (retrying short writes and EINTR); what names the file in
// the error.
Result<void> write_all(int fd, std::span<const char> bytes, const std::string& what);

// mkdir -p dir (mode 0755 before umask). ENOTDIR if dir exists and is not a directory.
Result<void> make_dirs(const std::string& dir);

// For a daemon whose directory holds other hosts' files (backupd's state, a replicator's root):
// the trees in it keep the modes their sources had, device nodes and set-user-id files included,
// so no other user of this machine may reach them. Adds 027 to the process umask (never
// loosening a stricter one, such as a unit's UMask=) and makes dir (mkdir -p) with no access for
// others, removing it if an earlier version or another umask left it. Returns whether dir's mode
// had to be changed.
Result<bool> make_private_dir(const std::string& dir);

// openat2(dir_fd, rel, flags | O_CLOEXEC) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS: no symlink is followed and nothing outside dir_fd is reached. A rel
// longer than one path the kernel takes (PATH_MAX, 4096 bytes with its NUL; an application may
// build deeper trees one directory at a time) is resolved in pieces of whole components, each
// beneath the directory the one before opened. Invalid (errno set) on failure.
UniqueFd open_beneath(int dir_fd, std::string_view rel, uint64_t flags);

// What open_dir_beneath does with a component that does not exist.
enum class Missing { kCreate, kFail };

// Opens (O_RDONLY) the directory rel ("a/b") beneath base_fd, creating missing components (mode
// 0755) or failing with ENOENT (Missing::kFail), resolving each with RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS: a symlink anywhere on the way is ELOOP, never followed. *created tells
// whether the last component was made now.
Result<UniqueFd> open_dir_beneath(int base_fd, const std::string& rel, bool* created = nullptr,
                                  Missing missing = Missing::kCreate);

// The names in the directory open at dir_fd (without "." and ".."), in readdir order, read
// completely before the caller changes the directory. `shown` names it in errors.
Result<std::vector<std::string>> list_names(int dir_fd, const std::string& shown);

// Deletes dir_fd/name and everything under it (nothing to do if it does not exist), never
// following a symlink: symlinks are removed, not entered, and each directory is opened relative
// to its parent's descriptor with O_NOFOLLOW. Directories are made writable on the way (a tree
// may keep a source's read-only modes). `shown` names dir_fd/name in errors.
Result<void> remove_tree_at(int dir_fd, const std::string& name, const std::string& shown);

}  // namespace bkp
