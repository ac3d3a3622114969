// Tree comparison (see tree_compare.h). Two passes so a poll stays cheap while trees are still
// converging: a metadata walk of both trees (a few thousand fstatat calls), and only when all
// metadata agrees, the byte-for-byte content pass, which for a 200 MiB file is the expensive
// part. Walks use openat/fstatat relative to directory descriptors with O_NOFOLLOW, so a
// symlink in the tree is compared as a link and never entered.
#include "tests/testutil/tree_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "common/unique_fd.h"

namespace bkp::testutil {
namespace {

constexpr int kMaxDepth = 256;
constexpr size_t kChunk = 1 << 20;

struct Entry {
  struct stat st {};
  std::string link;  // symlink target
};

struct Tree {
  std::map<std::string, Entry> entries;  // "." is the root
  std::string error;                     // first problem met while walking
};

std::string child_path(const std::string& prefix, const char* name) {
  return prefix == "." ? std::string(name) : prefix + "/" + name;
}

void note(Tree& t, const std::string& msg) {
  if (t.error.empty()) t.error = msg;
}

void walk_dir(int dfd, const std::string& prefix, int depth, Tree& t) {
  if (depth > kMaxDepth) return note(t, prefix + ": deeper than " + std::to_string(kMaxDepth));
  int dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  DIR* dir = dup_fd >= 0 ? fdopendir(dup_fd) : nullptr;
  if (dir == nullptr) {
    if (dup_fd >= 0) close(dup_fd);
    return note(t, prefix + ": cannot list: " + strerror(errno));
  }
  std::vector<std::string> names;
  while (dirent* de = readdir(dir)) {
    if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) names.push_back(de->d_name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string rel = child_path(prefix, name.c_str());
    Entry e;
    if (fstatat(dfd, name.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) != 0) {
      note(t, rel + ": vanished while walking (" + strerror(errno) + ")");
      continue;
    }
    if (S_ISLNK(e.st.st_mode)) {
      std::string buf(PATH_MAX, '\0');
      ssize_t n = readlinkat(dfd, name.c_str(), buf.data(), buf.size());
      if (n < 0) {
        note(t, rel + ": readlink: " + strerror(errno));
        continue;
      }
      e.link.assign(buf.data(), static_cast<size_t>(n));
    }
    bool is_dir = S_ISDIR(e.st.st_mode);
    t.entries.emplace(rel, std::move(e));
    if (is_dir) {
      UniqueFd sub(openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        note(t, rel + ": cannot open directory: " + strerror(errno));
        continue;
      }
      walk_dir(sub.get(), rel, depth + 1, t);
    }
  }
}

Tree walk(const std::string& root) {
  Tree t;
  UniqueFd fd(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    t.error = "cannot open " + root + ": " + strerror(errno);
    return t;
  }
  Entry e;
  if (fstat(fd.get(), &e.st) != 0) {
    t.error = "cannot stat " + root + ": " + strerror(errno);
    return t;
  }
  t.entries.emplace(".", e);
  walk_dir(fd.get(), ".", 0, t);
  return t;
}

const char* type_name(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "directory";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "char device";
    case S_IFBLK:
      return "block device";
  }
  return "unknown";
}

std::string octal(mode_t m) {
  char buf[32];
  snprintf(buf, sizeof buf, "%o", static_cast<unsigned>(m));
  return buf;
}

std::string time_text(const timespec& ts) {
  char buf[64];
  snprintf(buf, sizeof buf, "%lld.%09ld", static_cast<long long>(ts.tv_sec), ts.tv_nsec);
  return buf;
}

// The first metadata difference of one path, or "".
std::string compare_entry(const std::string& rel, const Entry& x, const Entry& y,
                          const CompareOptions& o) {
  const struct stat& a = x.st;
  const struct stat& b = y.st;
  if ((a.st_mode & S_IFMT) != (b.st_mode & S_IFMT)) {
    return rel + ": type " + type_name(a.st_mode) + " vs " + type_name(b.st_mode);
  }
  bool root = rel == ".";
  if (root && !o.root_attrs) return "";
  if (a.st_mode != b.st_mode) return rel + ": mode " + octal(a.st_mode) + " vs " + octal(b.st_mode);
  if (o.owner && (a.st_uid != b.st_uid || a.st_gid != b.st_gid)) {
    return rel + ": owner " + std::to_string(a.st_uid) + ":" + std::to_string(a.st_gid) + " vs " +
           std::to_string(b.st_uid) + ":" + std::to_string(b.st_gid);
  }
  if ((S_ISREG(a.st_mode) || S_ISLNK(a.st_mode)) && a.st_size != b.st_size) {
    return rel + ": size " + std::to_string(a.st_size) + " vs " + std::to_string(b.st_size);
  }
  if (S_ISLNK(a.st_mode) && x.link != y.link) {
    return rel + ": symlink target '" + x.link + "' vs '" + y.link + "'";
  }
  if ((S_ISCHR(a.st_mode) || S_ISBLK(a.st_mode)) && a.st_rdev != b.st_rdev) {
    return rel + ": device " + std::to_string(major(a.st_rdev)) + ":" +
           std::to_string(minor(a.st_rdev)) + " vs " + std::to_string(major(b.st_rdev)) + ":" +
           std::to_string(minor(b.st_rdev));
  }
  if (o.mtime && (a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec)) {
    return rel + ": mtime " + time_text(a.st_mtim) + " vs " + time_text(b.st_mtim);
  }
  return "";
}

// path -> the sorted paths sharing its inode (only for non-directories with several names).
std::map<std::string, std::vector<std::string>> link_groups(const Tree& t) {
  std::map<std::pair<dev_t, ino_t>, std::vector<std::string>> by_inode;
  for (const auto& [rel, e] : t.entries) {
    if (!S_ISDIR(e.st.st_mode)) by_inode[{e.st.st_dev, e.st.st_ino}].push_back(rel);
  }
  std::map<std::string, std::vector<std::string>> out;
  for (auto& [inode, paths] : by_inode) {
    if (paths.size() < 2) continue;
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) out[p] = paths;
  }
  return out;
}

std::string group_text(const std::vector<std::string>& g, const std::string& self) {
  if (g.empty()) return "{" + self + "}";
  std::string s = "{";
  for (size_t i = 0; i < g.size(); ++i) s += (i ? ", " : "") + g[i];
  return s + "}";
}

// Reads up to n bytes at offset, retrying short reads; bytes read, or -1 with errno set.
ssize_t read_full(int fd, char* buf, size_t n, uint64_t offset) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, buf + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(got);
}

// "" if equal, else where they first differ (or why they could not be read).
std::string compare_content(const std::string& rel, const std::string& a_root,
                            const std::string& b_root) {
  UniqueFd fa(open((a_root + "/" + rel).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fa) return rel + ": cannot open in " + a_root + ": " + strerror(errno);
  UniqueFd fb(open((b_root + "/" + rel).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fb) return rel + ": cannot open in " + b_root + ": " + strerror(errno);
  std::vector<char> ba(kChunk), bb(kChunk);
  for (uint64_t offset = 0;; offset += kChunk) {
    ssize_t na = read_full(fa.get(), ba.data(), kChunk, offset);
    if (na < 0) return rel + ": read in " + a_root + ": " + strerror(errno);
    ssize_t nb = read_full(fb.get(), bb.data(), kChunk, offset);
    if (nb < 0) return rel + ": read in " + b_root + ": " + strerror(errno);
    size_t common = static_cast<size_t>(std::min(na, nb));
    if (memcmp(ba.data(), bb.data(), common) != 0) {
      size_t i = 0;
      while (ba[i] == bb[i]) ++i;
      return rel + ": content differs at offset " + std::to_string(offset + i);
    }
    if (na != nb) {
      return rel + ": content differs: ends at " + std::to_string(offset + na) + " vs " +
             std::to_string(offset + nb);
    }
    if (static_cast<size_t>(na) < kChunk) return "";
  }
}

}  // namespace

std::string compare_trees(const std::string& a, const std::string& b,
                          const CompareOptions& options) {
  Tree ta = walk(a);
  if (!ta.error.empty()) return ta.error + " (in " + a + ")";
  Tree tb = walk(b);
  if (!tb.error.empty()) return tb.error + " (in " + b + ")";

  // Names first: a missing file explains its parent's different mtime, not the other way.
  auto ia = ta.entries.begin();
  auto ib = tb.entries.begin();
  while (ia != ta.entries.end() || ib != tb.entries.end()) {
    if (ib == tb.entries.end() || (ia != ta.entries.end() && ia->first < ib->first)) {
      return ia->first + ": only in " + a;
    }
    if (ia == ta.entries.end() || ib->first < ia->first) return ib->first + ": only in " + b;
    ++ia;
    ++ib;
  }
  for (const auto& [rel, ea] : ta.entries) {
    std::string d = compare_entry(rel, ea, tb.entries.at(rel), options);
    if (!d.empty()) return d;
  }

  auto ga = link_groups(ta);
  auto gb = link_groups(tb);
  for (const auto& [rel, e] : ta.entries) {
    if (S_ISDIR(e.st.st_mode)) continue;
    auto xa = ga.find(rel);
    auto xb = gb.find(rel);
    std::vector<std::string> none;
    const auto& va = xa == ga.end() ? none : xa->second;
    const auto& vb = xb == gb.end() ? none : xb->second;
    if (va != vb) {
      return rel + ": hard links " + group_text(va, rel) + " vs " + group_text(vb, rel);
    }
  }

  if (options.content) {
    for (const auto& [rel, e] : ta.entries) {
      if (!S_ISREG(e.st.st_mode)) continue;
      std::string d = compare_content(rel, a, b);
      if (!d.empty()) return d;
    }
  }
  return "";
}

std::optional<TreeStats> tree_stats(const std::string& root) {
  Tree t = walk(root);
  if (t.entries.empty()) return std::nullopt;
  TreeStats s;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const auto& [rel, e] : t.entries) {
    if (rel == ".") continue;
    mode_t m = e.st.st_mode;
    if (S_ISREG(m)) {
      ++s.files;
      if (seen.insert({e.st.st_dev, e.st.st_ino}).second) s.bytes += e.st.st_size;
    } else if (S_ISDIR(m)) {
      ++s.dirs;
    } else if (S_ISLNK(m)) {
      ++s.symlinks;
    } else {
      ++s.others;
    }
  }
  return s;
}

}  // namespace bkp::testutil
