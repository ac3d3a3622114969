// What the "application" does in integration tests: plain POSIX calls on paths under a root.
// Every helper throws std::system_error naming the call and path, so a failing operation fails
// the test with a readable reason. The same sequence run on the mount and on a plain reference
// directory must leave both looking the same (except automatic timestamps).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace bkp::it {

constexpr uint64_t kMiB = 1 << 20;

// Throws std::system_error(errno, what) unless rc == 0: for direct syscalls in test code that
// may run off the test's main thread (where ASSERT_* cannot stop the test).
void must(int rc, const std::string& what);

// Creates or truncates, then writes everything.
void put(const std::string& path, std::string_view data, mode_t mode = 0644);
// Writes data at offset (creating the file if needed, never truncating).
void write_at(const std::string& path, uint64_t offset, std::string_view data);
void append(const std::string& path, std::string_view data);
void truncate_to(const std::string& path, uint64_t size);
void mkdirs(const std::string& path);                             // mkdir -p, mode 0755
void set_mtime(const std::string& path, int64_t sec, long nsec);  // and atime; no follow
std::string slurp(const std::string& path);
// lsetxattr / lremovexattr (never following a symlink).
void set_xattr(const std::string& path, const std::string& name, const std::string& value);
void remove_xattr(const std::string& path, const std::string& name);

// Deterministic incompressible bytes: the same (seed, size) always gives the same string.
std::string random_string(size_t size, uint64_t seed);
// A file of size bytes written with 1 MiB writes; chunk i is random_string(1 MiB, seed + i).
void write_big_file(const std::string& path, uint64_t size, uint64_t seed);

// The full mix of the convergence test, on root (a mount or a reference directory): writes at
// offsets, overwrite, append, truncate down and up, a sparse file, rename over an existing
// file, rename of a directory with contents (with a file written through an fd across it), hard
// links, symlinks, chmod, chown to 65534, utimensat with explicit times, mkdir -p 20 deep, rmdir,
// unlink, and small_files small files. The big file is separate: write_big_file().
void apply_mix(const std::string& root, int small_files);

// root/top/ and, below it, 22 directories of 200-byte names (modes 0755, 0700, 0750, 0711) with a file
// at the bottom (content, mode 0640, an xattr): a path longer than PATH_MAX, made one level at a
// time through descriptors, as any application may. No single call can name what is below.
void make_past_path_max(const std::string& root, const std::string& top);

// A tree present before backupfs is mounted, so the baseline has something to ship.
void make_preexisting_tree(const std::string& root);

}  // namespace bkp::it
