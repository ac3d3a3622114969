// The application side of the integration tests (see workload.h).
#include "tests/integration/workload.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "common/unique_fd.h"
#include "tests/testutil/files.h"

namespace bkp::it {
namespace {

[[noreturn]] void fail_call(const std::string& what, const std::string& path) {
  throw std::system_error(errno, std::generic_category(), what + " " + path);
}

void check(int rc, const std::string& what, const std::string& path) {
  if (rc != 0) fail_call(what, path);
}

UniqueFd open_or_throw(const std::string& path, int flags, mode_t mode = 0644) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
  if (!fd) fail_call("open", path);
  return fd;
}

void pwrite_all(int fd, std::string_view data, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_call("pwrite", path);
    done += static_cast<size_t>(n);
  }
}

void close_or_throw(UniqueFd& fd, const std::string& path) {
  // close() reports a failed flush on FUSE; do not lose that error in a destructor.
  check(::close(fd.release()), "close", path);
}

}  // namespace

void must(int rc, const std::string& what) {
  if (rc != 0) throw std::system_error(errno, std::generic_category(), what);
}

void put(const std::string& path, std::string_view data, mode_t mode) {
  UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  pwrite_all(fd.get(), data, 0, path);
  close_or_throw(fd, path);
}

void write_at(const std::string& path, uint64_t offset, std::string_view data) {
  UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT);
  pwrite_all(fd.get(), data, offset, path);
  close_or_throw(fd, path);
}

void append(const std::string& path, std::string_view data) {
  UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT | O_APPEND);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_call("write", path);
    done += static_cast<size_t>(n);
  }
  close_or_throw(fd, path);
}

void truncate_to(const std::string& path, uint64_t size) {
  check(::truncate(path.c_str(), static_cast<off_t>(size)), "truncate", path);
}

void mkdirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw std::system_error(ec, "mkdir -p " + path);
}

void set_mtime(const std::string& path, int64_t sec, long nsec) {
  timespec ts[2] = {{static_cast<time_t>(sec), nsec}, {static_cast<time_t>(sec), nsec}};
  check(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), "utimensat", path);
}

std::string slurp(const std::string& path) {
  auto s = testutil::read_file(path);
  if (!s) fail_call("read", path);
  return *s;
}

void set_xattr(const std::string& path, const std::string& name, const std::string& value) {
  check(::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0), "lsetxattr " + name,
        path);
}

void remove_xattr(const std::string& path, const std::string& name) {
  check(::lremovexattr(path.c_str(), name.c_str()), "lremovexattr " + name, path);
}

std::string random_string(size_t size, uint64_t seed) {
  auto b = testutil::random_bytes(size, seed);
  return std::string(b.begin(), b.end());
}

void write_big_file(const std::string& path, uint64_t size, uint64_t seed) {
  UniqueFd fd = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC);
  for (uint64_t off = 0, i = 0; off < size; off += kMiB, ++i) {
    std::string chunk = random_string(std::min<uint64_t>(kMiB, size - off), seed + i);
    pwrite_all(fd.get(), chunk, off, path);
  }
  close_or_throw(fd, path);
}

void make_preexisting_tree(const std::string& root) {
  mkdirs(root + "/pre/sub");
  put(root + "/pre/a.txt", "there before the mount\n");
  put(root + "/pre/sub/data.bin", random_string(3 * kMiB + 123, 500));
  check(::link((root + "/pre/a.txt").c_str(), (root + "/pre/sub/a-link").c_str()), "link",
        root + "/pre/sub/a-link");
  check(::symlink("../a.txt", (root + "/pre/sub/a-sym").c_str()), "symlink",
        root + "/pre/sub/a-sym");
  UniqueFd sparse = open_or_throw(root + "/pre/sparse", O_WRONLY | O_CREAT);
  check(::ftruncate(sparse.get(), 16 * kMiB), "ftruncate", root + "/pre/sparse");
  pwrite_all(sparse.get(), "middle", 8 * kMiB, root + "/pre/sparse");
  close_or_throw(sparse, root + "/pre/sparse");
  check(::chmod((root + "/pre/sub").c_str(), 0700), "chmod", root + "/pre/sub");
  set_mtime(root + "/pre/a.txt", 1234567890, 111111111);
}

void apply_mix(const std::string& root, int small_files) {
  auto p = [&](const std::string& rel) { return root + "/" + rel; };
  mkdirs(p("data"));

  // Writes at offsets, leaving holes between them.
  write_at(p("data/offsets.bin"), 0, std::string(4096, 'A'));
  write_at(p("data/offsets.bin"), 10000, std::string(4096, 'B'));
  write_at(p("data/offsets.bin"), kMiB + 3, "tail");

  // Overwrite inside an existing file.
  put(p("data/overwrite.txt"), random_string(64 * 1024, 1));
  write_at(p("data/overwrite.txt"), 30000, std::string(1000, 'x'));

  // Append, many small writes.
  for (int i = 0; i < 100; ++i) append(p("data/log.txt"), "line " + std::to_string(i) + "\n");

  // Truncate down, then up (the new range must read as zeros), then write past the end.
  put(p("data/trunc.bin"), random_string(kMiB, 2));
  truncate_to(p("data/trunc.bin"), 100000);
  truncate_to(p("data/trunc.bin"), 300000);
  write_at(p("data/trunc.bin"), 400000, "after the hole");
  put(p("data/emptied.txt"), "will be emptied");
  truncate_to(p("data/emptied.txt"), 0);

  // A sparse file: 64 MiB with three small islands of data.
  {
    std::string f = p("data/sparse.bin");
    UniqueFd fd = open_or_throw(f, O_WRONLY | O_CREAT | O_TRUNC);
    check(::ftruncate(fd.get(), 64 * kMiB), "ftruncate", f);
    pwrite_all(fd.get(), std::string(4096, 's'), 0, f);
    pwrite_all(fd.get(), std::string(4096, 'm'), 32 * kMiB, f);
    pwrite_all(fd.get(), "e", 64 * kMiB - 1, f);
    close_or_throw(fd, f);
  }

  // Rename over an existing file.
  mkdirs(p("ren"));
  put(p("ren/a"), "the new content of b");
  put(p("ren/b"), "the old content, to be replaced");
  check(::rename(p("ren/a").c_str(), p("ren/b").c_str()), "rename", p("ren/a"));

  // Rename a directory with contents; a file open across the rename keeps receiving writes.
  mkdirs(p("dir1/sub/subsub"));
  put(p("dir1/top.txt"), "top");
  put(p("dir1/sub/mid.txt"), "mid");
  put(p("dir1/sub/subsub/low.bin"), random_string(200000, 3));
  {
    std::string f = p("dir1/sub/open.bin");
    UniqueFd fd = open_or_throw(f, O_WRONLY | O_CREAT | O_TRUNC);
    pwrite_all(fd.get(), random_string(100000, 4), 0, f);
    check(::rename(p("dir1").c_str(), p("dir2").c_str()), "rename", p("dir1"));
    pwrite_all(fd.get(), random_string(100000, 5), 50000, f);
    close_or_throw(fd, f);
  }
  write_at(p("dir2/sub/mid.txt"), 3, " and more");

  // Hard links, in the same and another directory; a write through one name.
  mkdirs(p("links"));
  put(p("links/orig"), "shared by three names\n");
  check(::link(p("links/orig").c_str(), p("links/hard").c_str()), "link", p("links/hard"));
  check(::link(p("links/orig").c_str(), p("data/hard2").c_str()), "link", p("data/hard2"));
  append(p("links/hard"), "appended through the second name\n");

  // Symlinks: relative, dangling, absolute.
  check(::symlink("../data/log.txt", p("links/sym").c_str()), "symlink", p("links/sym"));
  check(::symlink("nowhere/at/all", p("links/dangling").c_str()), "symlink", p("links/dangling"));
  check(::symlink("/etc/hostname", p("links/absolute").c_str()), "symlink", p("links/absolute"));

  // chmod, chown (to nobody), on files, a directory and a symlink.
  check(::chmod(p("data/log.txt").c_str(), 0600), "chmod", p("data/log.txt"));
  check(::chmod(p("data/overwrite.txt").c_str(), 0640), "chmod", p("data/overwrite.txt"));
  check(::chmod(p("dir2").c_str(), 0750), "chmod", p("dir2"));
  check(::chown(p("data/overwrite.txt").c_str(), 65534, 65534), "chown", p("data/overwrite.txt"));
  check(::chown(p("ren").c_str(), 65534, 65534), "chown", p("ren"));
  check(::lchown(p("links/sym").c_str(), 65534, 65534), "lchown", p("links/sym"));

  // A file capability, set as `install` then `setcap` would: after the data and the owner. The
  // kernel drops one at every write and chown, so every copy must keep it by design.
  put(p("data/capable"), "#!/bin/true\n", 0755);
  check(::chown(p("data/capable").c_str(), 65534, 65534), "chown", p("data/capable"));
  set_xattr(p("data/capable"), "security.capability",  // VFS_CAP_REVISION_2: net_bind_service
            std::string("\x01\x00\x00\x02\x00\x04\x00\x00", 8) + std::string(12, '\0'));

  // A POSIX ACL (what setfacl -m u:nobody:r writes): user::rwx, user:65534:r--, group::r-x,
  // mask::r-x, other::r-x, as the kernel's xattr format (version 2, then tag, perm, id each).
  {
    std::string acl("\x02\x00\x00\x00", 4);
    auto entry = [&](uint16_t tag, uint16_t perm, uint32_t id) {
      acl.append(reinterpret_cast<const char*>(&tag), 2);
      acl.append(reinterpret_cast<const char*>(&perm), 2);
      acl.append(reinterpret_cast<const char*>(&id), 4);
    };
    entry(0x01, 7, 0xffffffff);  // ACL_USER_OBJ
    entry(0x02, 4, 65534);       // ACL_USER
    entry(0x04, 5, 0xffffffff);  // ACL_GROUP_OBJ
    entry(0x10, 5, 0xffffffff);  // ACL_MASK
    entry(0x20, 5, 0xffffffff);  // ACL_OTHER
    put(p("data/acl.txt"), "readable by nobody too\n", 0700);
    set_xattr(p("data/acl.txt"), "system.posix_acl_access", acl);
    // The same as a directory's default ACL (setfacl -d).
    mkdirs(p("acl-dir"));
    set_xattr(p("acl-dir"), "system.posix_acl_default", acl);
  }

  // mkdir -p twenty deep, with a file at the bottom.
  std::string deep = "deep";
  for (int i = 1; i <= 20; ++i) deep += "/level" + std::to_string(i);
  mkdirs(p(deep));
  put(p(deep + "/bottom.txt"), "at the bottom");

  // rmdir and unlink.
  mkdirs(p("gone/inner"));
  check(::rmdir(p("gone/inner").c_str()), "rmdir", p("gone/inner"));
  check(::rmdir(p("gone").c_str()), "rmdir", p("gone"));
  put(p("data/tmp.txt"), "short-lived");
  check(::unlink(p("data/tmp.txt").c_str()), "unlink", p("data/tmp.txt"));

  // Many small files, 50 per directory, sizes 0..4095.
  for (int i = 0; i < small_files; ++i) {
    std::string dir = p("many/d" + std::to_string(i / 50));
    if (i % 50 == 0) mkdirs(dir);
    put(dir + "/f" + std::to_string(i),
        random_string(static_cast<size_t>(i * 37) % 4096, 1000 + i));
  }

  // Explicit times last, once nothing changes these entries any more.
  set_mtime(p("data/offsets.bin"), 981173106, 123456789);  // 2001-02-03
  set_mtime(p("links/sym"), 1000000000, 7);
  set_mtime(p(deep + "/bottom.txt"), 1600000000, 999999999);
  set_mtime(p("deep"), 1500000000, 1);
  set_mtime(p("ren"), 1400000000, 500);
}

void make_past_path_max(const std::string& root, const std::string& top) {
  mkdirs(root + "/" + top);
  UniqueFd dir(::open((root + "/" + top).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  must(dir ? 0 : -1, "open " + top);
  for (int i = 0; i < 22; ++i) {
    const std::string name =
        std::string(196, static_cast<char>('a' + i)) + std::to_string(1000 + i);
    constexpr mode_t kModes[] = {0755, 0700, 0750, 0711};
    must(::mkdirat(dir.get(), name.c_str(), kModes[i % 4]), "mkdirat " + name);
    dir.reset(::openat(dir.get(), name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    must(dir ? 0 : -1, "openat " + name);
  }
  UniqueFd file(::openat(dir.get(), "bottom.txt", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640));
  must(file ? 0 : -1, "create bottom.txt in " + top);
  const std::string text = "more than PATH_MAX bytes below the root\n";
  must(::write(file.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) ? 0 : -1,
       "write bottom.txt in " + top);
  must(::fsetxattr(file.get(), "user.deep", "yes", 3, 0), "set user.deep in " + top);
}

}  // namespace bkp::it
