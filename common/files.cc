// write_file_atomic, write_all, the key-value format, make_dirs, open_dir_beneath,
// remove_tree_at and allocated_bytes (see files.h).
#include "common/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "common/unique_fd.h"

namespace bkp {

Result<void> write_file_atomic(const std::string& path, const std::string& content,
                               Durability durability) {
  std::string tmp = path + ".tmp";
  // No O_TRUNC: the tmp file is the previous version (see files.h), overwritten in place and cut
  // to length, so no block is freed.
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) return fail_errno("create " + tmp);
  BKP_TRY_VOID(write_all(fd.get(), content, tmp));
  if (::ftruncate(fd.get(), static_cast<off_t>(content.size())) != 0) {
    return fail_errno("truncate " + tmp);
  }
  if (durability == Durability::kSync && fdatasync(fd.get()) != 0) {
    return fail_errno("fdatasync " + tmp);
  }
  fd.reset();
  // The exchange fails where path does not exist yet (or the filesystem cannot swap names); a
  // plain rename then does.
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_EXCHANGE) != 0 &&
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail_errno("rename " + tmp);
  }
  return {};
}

Result<void> fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) return fail_errno("fsync " + dir);
  return {};
}

Result<std::map<std::string, uint64_t>> read_key_values(const std::string& path) {
  std::map<std::string, uint64_t> out;
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return out;
    return fail_errno("read " + path);
  }
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    size_t space = line.find(' ');
    uint64_t value = 0;
    const char* first = line.data() + (space == std::string::npos ? line.size() : space + 1);
    const char* last = line.data() + line.size();
    auto r = std::from_chars(first, last, value);
    if (space == std::string::npos || r.ec != std::errc() || r.ptr != last) {
      return fail(EINVAL, path + ": not a 'key value' line: " + line);
    }
    out[line.substr(0, space)] = value;
  }
  return out;
}

std::string format_key_values(const std::map<std::string, uint64_t>& values) {
  std::ostringstream out;
  for (const auto& [key, value] : values) out << key << ' ' << value << '\n';
  return out.str();
}

Result<void> make_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return fail_errno("create " + prefix);
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return fail_errno("create " + dir);
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, dir + " is not a directory");
  return {};
}

Result<bool> make_private_dir(const std::string& dir) {
  mode_t mask = ::umask(0);
  ::umask(mask | 027);
  BKP_TRY_VOID(make_dirs(dir));
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return fail_errno("stat " + dir);
  if ((st.st_mode & 0007) == 0) return false;
  if (::chmod(dir.c_str(), st.st_mode & 07770) != 0) return fail_errno("chmod o-rwx " + dir);
  return true;
}

UniqueFd open_beneath(int dir_fd, std::string_view rel, uint64_t flags) {
  open_how how{};
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  auto open_at = [&how](int at, const std::string& path, uint64_t with) {
    how.flags = with | O_CLOEXEC;
    return UniqueFd(static_cast<int>(syscall(SYS_openat2, at, path.c_str(), &how, sizeof how)));
  };
  constexpr size_t kLongest = PATH_MAX - 1;
  UniqueFd reached;  // the directory the pieces so far lead to
  while (rel.size() > kLongest) {
    const size_t slash = rel.rfind('/', kLongest);
    if (slash == std::string_view::npos || slash == 0) {
      errno = ENAMETOOLONG;  // a single name that long (no filesystem takes one)
      return UniqueFd();
    }
    UniqueFd next = open_at(reached ? reached.get() : dir_fd, std::string(rel.substr(0, slash)),
                            O_PATH | O_DIRECTORY);
    if (!next) return next;
    reached = std::move(next);
    rel.remove_prefix(slash + 1);
  }
  return open_at(reached ? reached.get() : dir_fd, std::string(rel), flags);
}

Result<UniqueFd> open_dir_beneath(int base_fd, const std::string& rel, bool* created,
                                  Missing missing) {
  auto open_at = [](int dir, const std::string& name, uint64_t flags) {
    open_how how{};
    how.flags = flags | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return UniqueFd(static_cast<int>(syscall(SYS_openat2, dir, name.c_str(), &how, sizeof how)));
  };
  UniqueFd cur = open_at(base_fd, ".", O_PATH);
  if (!cur) return fail_errno("open the base directory");
  if (created != nullptr) *created = false;
  size_t start = 0;
  while (start < rel.size()) {
    size_t slash = rel.find('/', start);
    std::string name = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    start = slash == std::string::npos ? rel.size() : slash + 1;
    if (name.empty() || name == "." || name == "..") return fail(EINVAL, "bad directory path " + rel);
    bool made = missing == Missing::kCreate && ::mkdirat(cur.get(), name.c_str(), 0755) == 0;
    if (missing == Missing::kCreate && !made && errno != EEXIST) return fail_errno("create " + rel);
    if (created != nullptr) *created = made;
    cur = open_at(cur.get(), name, O_PATH);
    if (!cur) return fail_errno("open " + rel + " (never through a symlink)");
  }
  UniqueFd out = open_at(cur.get(), ".", O_RDONLY);
  if (!out) return fail_errno("open " + rel);
  return out;
}

Result<void> write_all(int fd, std::span<const char> bytes, const std::string& what) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("write " + what);
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return {};
}

namespace {

struct Walk {
  dev_t dev = 0;
  uint64_t bytes = 0;
  std::set<std::pair<dev_t, ino_t>> linked;  // inodes with more than one name, counted once

  void count(const struct stat& st) {
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.emplace(st.st_dev, st.st_ino).second) {
      return;
    }
    bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  }

  // Counts everything beneath the directory fd (already counted itself). Depth-first with one
  // descriptor per level.
  void walk(int fd) {
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      ::close(fd);
      return;
    }
    while (const dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      struct stat st;
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
      count(st);
      if (!S_ISDIR(st.st_mode) || st.st_dev != dev) continue;
      int child = ::openat(::dirfd(d), e->d_name,
                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (child >= 0) walk(child);
    }
    ::closedir(d);
  }
};

}  // namespace

Result<uint64_t> allocated_bytes(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno("open " + dir);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat " + dir);
  Walk w;
  w.dev = st.st_dev;
  w.count(st);
  w.walk(fd.release());
  return w.bytes;
}

Result<std::vector<std::string>> list_names(int dir_fd, const std::string& shown) {
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = fd < 0 ? nullptr : ::fdopendir(fd);
  if (d == nullptr) {
    if (fd >= 0) ::close(fd);
    return fail_errno("list " + shown);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(d);
  return names;
}

Result<void> remove_tree_at(int dir_fd, const std::string& name, const std::string& shown) {
  if (::unlinkat(dir_fd, name.c_str(), 0) == 0 || errno == ENOENT) return {};
  if (errno != EISDIR && errno != EPERM) return fail_errno("delete " + shown);
  UniqueFd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("open " + shown);
  ::fchmod(fd.get(), 0700);
  auto names = BKP_TRY(list_names(fd.get(), shown));
  for (const auto& n : names) BKP_TRY_VOID(remove_tree_at(fd.get(), n, shown + "/" + n));
  if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return fail_errno("delete " + shown);
  }
  return {};
}

}  // namespace bkp
