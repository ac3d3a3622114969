// Tree comparison (see tree_compare.h). Two passes so a poll stays cheap while trees are still
// converging: a metadata walk of both trees (a few thousand fstatat and llistxattr calls), and
// only when all metadata agrees, the hole maps and then the byte-for-byte content pass, which
// for a 200 MiB file is the expensive part. Walks use openat/fstatat relative to directory
// descriptors with O_NOFOLLOW, so a symlink in the tree is compared as a link and never entered;
// xattrs are read through "/proc/self/fd/DIR/NAME" with the l*xattr calls, which reaches
// symlinks and FIFOs without opening them and never follows the final name.
//
// The xattr and hole readers are written here again rather than shared with the baseline scan
// (common/changes/scan.cc) on purpose: a reader that misses something would otherwise miss it
// on both sides of the comparison and the test would pass.
#include "tests/testutil/tree_compare.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "common/files.h"
#include "common/unique_fd.h"

namespace bkp::testutil {
namespace {

constexpr int kMaxDepth = 256;
constexpr size_t kChunk = 1 << 20;

struct Entry {
  struct stat st {};
  std::string link;                           // symlink target
  std::map<std::string, std::string> xattrs;  // name -> value (read only if options.xattrs)
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

// Calls read(buf, size) (a listxattr/getxattr) until the value fits (it may grow in between);
// nullopt with errno set on failure.
template <class Read>
std::optional<std::string> read_sized(const Read& read) {
  while (true) {
    ssize_t n = read(nullptr, 0);
    if (n < 0) return std::nullopt;
    std::string buf(static_cast<size_t>(n), '\0');
    if (n == 0) return buf;
    n = read(buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    if (errno != ERANGE) return std::nullopt;
  }
}

// Every xattr of dfd/name ("." for dfd itself) into e, or a note in t.
void read_xattrs(int dfd, const char* name, const std::string& rel, Entry& e, Tree& t) {
  std::string at = "/proc/self/fd/" + std::to_string(dfd) + "/" + name;
  auto list = read_sized([&](char* buf, size_t n) { return llistxattr(at.c_str(), buf, n); });
  if (!list) {
    if (errno != ENOTSUP) note(t, rel + ": listxattr: " + strerror(errno));
    return;
  }
  for (size_t pos = 0; pos < list->size();) {
    std::string key(list->c_str() + pos);
    pos += key.size() + 1;
    if (key.empty()) continue;
    auto value =
        read_sized([&](char* buf, size_t n) { return lgetxattr(at.c_str(), key.c_str(), buf, n); });
    if (!value) return note(t, rel + ": getxattr " + key + ": " + strerror(errno));
    e.xattrs.emplace(std::move(key), std::move(*value));
  }
}

void walk_dir(int dfd, const std::string& prefix, int depth, bool xattrs, Tree& t) {
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
    if (xattrs) read_xattrs(dfd, name.c_str(), rel, e, t);
    bool is_dir = S_ISDIR(e.st.st_mode);
    t.entries.emplace(rel, std::move(e));
    if (is_dir) {
      UniqueFd sub(openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        note(t, rel + ": cannot open directory: " + strerror(errno));
        continue;
      }
      walk_dir(sub.get(), rel, depth + 1, xattrs, t);
    }
  }
}

Tree walk(const std::string& root, bool xattrs) {
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
  if (xattrs) read_xattrs(fd.get(), ".", ".", e, t);
  t.entries.emplace(".", e);
  walk_dir(fd.get(), ".", 0, xattrs, t);
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

// An xattr value as a difference shows it: printable ASCII as is, other bytes as \xNN, cut
// after 40 bytes.
std::string shown(const std::string& v) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < 40; ++i) {
    auto c = static_cast<unsigned char>(v[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return v.size() > 40 ? out + "..." : out;
}

// The first xattr difference of one path (names, then values), or "".
std::string compare_xattrs(const std::string& rel, const Entry& x, const Entry& y,
                           const std::string& a_root, const std::string& b_root) {
  auto ia = x.xattrs.begin();
  auto ib = y.xattrs.begin();
  while (ia != x.xattrs.end() || ib != y.xattrs.end()) {
    if (ib == y.xattrs.end() || (ia != x.xattrs.end() && ia->first < ib->first)) {
      return rel + ": xattr " + ia->first + " only in " + a_root;
    }
    if (ia == x.xattrs.end() || ib->first < ia->first) {
      return rel + ": xattr " + ib->first + " only in " + b_root;
    }
    if (ia->second != ib->second) {
      return rel + ": xattr " + ia->first + " value '" + shown(ia->second) + "' vs '" +
             shown(ib->second) + "'";
    }
    ++ia;
    ++ib;
  }
  return "";
}

// root/rel for reading, also where the whole path is longer than PATH_MAX.
UniqueFd open_in(const std::string& root, const std::string& rel) {
  UniqueFd dir(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  return dir ? open_beneath(dir.get(), rel, O_RDONLY | O_NOFOLLOW) : UniqueFd();
}

// [start, end) byte ranges holding data, as SEEK_DATA/SEEK_HOLE report them.
using Regions = std::vector<std::pair<uint64_t, uint64_t>>;

// The data regions of root/rel into out; "" or why they could not be read.
std::string data_regions(const std::string& root, const std::string& rel, Regions& out) {
  UniqueFd fd = open_in(root, rel);
  if (!fd) return rel + ": cannot open in " + root + ": " + strerror(errno);
  off_t end = lseek(fd.get(), 0, SEEK_END);
  if (end < 0) return rel + ": lseek in " + root + ": " + strerror(errno);
  for (off_t pos = 0; pos < end;) {
    off_t data = lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole remains
    if (data < 0) return rel + ": SEEK_DATA in " + root + ": " + strerror(errno);
    off_t hole = lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) return rel + ": SEEK_HOLE in " + root + ": " + strerror(errno);
    out.emplace_back(static_cast<uint64_t>(data), static_cast<uint64_t>(hole));
    pos = hole;
  }
  return "";
}

std::string regions_text(const Regions& r) {
  if (r.empty()) return "none";
  std::string s;
  for (size_t i = 0; i < r.size() && i < 4; ++i) {
    s += (i ? " [" : "[") + std::to_string(r[i].first) + ", " + std::to_string(r[i].second) + ")";
  }
  return r.size() > 4 ? s + " ... (" + std::to_string(r.size()) + " regions)" : s;
}

// Whether root/rel has allocated but unwritten extents (a preallocation, a zero range), as
// FIEMAP reports them; false where FIEMAP is not supported (e.g. through a FUSE mount).
bool has_unwritten_extents(const std::string& root, const std::string& rel) {
  UniqueFd fd = open_in(root, rel);
  if (!fd) return false;
  constexpr unsigned kExtents = 256;
  std::vector<char> buf(sizeof(fiemap) + kExtents * sizeof(fiemap_extent));
  auto* map = reinterpret_cast<fiemap*>(buf.data());
  for (uint64_t start = 0;;) {
    std::fill(buf.begin(), buf.end(), 0);
    map->fm_start = start;
    map->fm_length = FIEMAP_MAX_OFFSET - start;
    map->fm_extent_count = kExtents;
    if (ioctl(fd.get(), FS_IOC_FIEMAP, map) < 0 || map->fm_mapped_extents == 0) return false;
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& e = map->fm_extents[i];
      if (e.fe_flags & FIEMAP_EXTENT_UNWRITTEN) return true;
      if (e.fe_flags & FIEMAP_EXTENT_LAST) return false;
      start = e.fe_logical + e.fe_length;
    }
  }
}

// "" if both files have data in exactly the same byte ranges (holes in the same places). Not
// compared where unwritten extents are involved: SEEK_DATA reports those as data or hole
// depending on what the page cache holds of them.
std::string compare_holes(const std::string& rel, const std::string& a_root,
                          const std::string& b_root) {
  if (has_unwritten_extents(a_root, rel) || has_unwritten_extents(b_root, rel)) return "";
  Regions ra, rb;
  std::string err = data_regions(a_root, rel, ra);
  if (err.empty()) err = data_regions(b_root, rel, rb);
  if (!err.empty()) return err;
  if (ra == rb) return "";
  return rel + ": data regions " + regions_text(ra) + " vs " + regions_text(rb);
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
  UniqueFd fa = open_in(a_root, rel);
  if (!fa) return rel + ": cannot open in " + a_root + ": " + strerror(errno);
  UniqueFd fb = open_in(b_root, rel);
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
  Tree ta = walk(a, options.xattrs);
  if (!ta.error.empty()) return ta.error + " (in " + a + ")";
  Tree tb = walk(b, options.xattrs);
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
    const Entry& eb = tb.entries.at(rel);
    std::string d = compare_entry(rel, ea, eb, options);
    if (d.empty() && (rel != "." || options.root_attrs)) d = compare_xattrs(rel, ea, eb, a, b);
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

  if (options.holes) {
    for (const auto& [rel, e] : ta.entries) {
      if (!S_ISREG(e.st.st_mode)) continue;
      std::string d = compare_holes(rel, a, b);
      if (!d.empty()) return d;
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
  Tree t = walk(root, false);
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
