// Comparing two manifests for a verify (see verify_compare.h). Paths are walked in sorted order
// so the report reads like a tree listing and a missing directory's contents can be skipped by
// prefix. Hard links are compared as groups: each name of a regular file stands for the
// smallest name sharing its id (an inode number or a FileId, whichever the side used), so the
// two sides agree exactly when every name is linked with the same other names.
#include "server/verify_compare.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

namespace bkp::server {
namespace {

const char* type_name(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    default: return "unknown";
  }
}

// For each regular file's name, the smallest name sharing its id.
std::unordered_map<std::string, std::string> link_groups(const changes::Manifest& m) {
  std::unordered_map<uint64_t, std::string> first;
  for (const auto& [path, e] : m) {
    if (!S_ISREG(e.mode) || e.id == 0) continue;
    auto [it, added] = first.emplace(e.id, path);
    if (!added && path < it->second) it->second = path;
  }
  std::unordered_map<std::string, std::string> out;
  for (const auto& [path, e] : m) {
    if (S_ISREG(e.mode) && e.id != 0) out.emplace(path, first.at(e.id));
  }
  return out;
}

std::string link_text(const std::string& path, const std::string& group) {
  return group == path ? "its own file" : "a link of " + group;
}

bool under(const std::string& path, const std::string& dir) {
  return dir.empty() ? !path.empty()
                     : path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                           path[dir.size()] == '/';
}

class Comparer {
 public:
  Comparer(const changes::Manifest& reference, const changes::Manifest& copy, const Sides& sides)
      : ref_(reference), copy_(copy), sides_(sides), ref_links_(link_groups(reference)),
        copy_links_(link_groups(copy)) {}

  std::vector<Difference> run() {
    std::set<std::string> paths;
    for (const auto& [path, e] : ref_) paths.insert(path);
    for (const auto& [path, e] : copy_) paths.insert(path);
    std::string skip_under;  // a directory missing or extra: its contents are not listed
    bool skipping = false;
    for (const std::string& path : paths) {
      if (skipping && under(path, skip_under)) continue;
      skipping = false;
      auto r = ref_.find(path);
      auto c = copy_.find(path);
      if (c == copy_.end() || r == ref_.end()) {
        const auto& e = c == copy_.end() ? r->second : c->second;
        add(path, c == copy_.end() ? "missing" : "extra",
            fmt::format("a {} {}, nothing {}", type_name(e.mode),
                        c == copy_.end() ? sides_.reference : sides_.copy,
                        c == copy_.end() ? sides_.copy : sides_.reference));
        if (S_ISDIR(e.mode)) {
          skip_under = path;
          skipping = true;
        }
        continue;
      }
      entry(path, r->second, c->second);
    }
    return std::move(out_);
  }

 private:
  void entry(const std::string& path, const wire::ManifestEntry& r, const wire::ManifestEntry& c) {
    if ((r.mode & S_IFMT) != (c.mode & S_IFMT)) {
      differ(path, "type", type_name(r.mode), type_name(c.mode));
      return;
    }
    if ((r.mode & 07777) != (c.mode & 07777)) {
      differ(path, "mode", fmt::format("{:04o}", r.mode & 07777),
             fmt::format("{:04o}", c.mode & 07777));
    }
    if (r.uid != c.uid || r.gid != c.gid) {
      differ(path, "owner", fmt::format("{}:{}", r.uid, r.gid), fmt::format("{}:{}", c.uid, c.gid));
    }
    const bool sized = !S_ISDIR(r.mode);
    if (sized && r.size != c.size) {
      differ(path, "size", std::to_string(r.size), std::to_string(c.size));
    }
    if (r.mtime_ns != c.mtime_ns) {
      differ(path, "mtime", std::to_string(r.mtime_ns), std::to_string(c.mtime_ns));
    }
    if ((S_ISCHR(r.mode) || S_ISBLK(r.mode)) && r.rdev != c.rdev) {
      differ(path, "device", fmt::format("{:#x}", r.rdev), fmt::format("{:#x}", c.rdev));
    }
    if (r.target != c.target) differ(path, "target", r.target, c.target);
    if (r.xattr_digest != c.xattr_digest) {
      differ(path, "xattrs", names(r.xattr_names), names(c.xattr_names));
    }
    if (!S_ISREG(r.mode)) return;
    auto rl = ref_links_.find(path), cl = copy_links_.find(path);
    if (rl != ref_links_.end() && cl != copy_links_.end() && rl->second != cl->second) {
      differ(path, "hard links", link_text(path, rl->second), link_text(path, cl->second));
    }
    // A size that differs says the content does; an unread side (0) is a difference only when
    // the other was read.
    if (r.size == c.size && r.content != c.content) {
      differ(path, "content",
             r.content == 0 ? "unreadable" : fmt::format("digest {:016x}", r.content),
             c.content == 0 ? "unreadable" : fmt::format("digest {:016x}", c.content));
    }
  }

  static std::string names(const std::string& nul_separated) {
    std::string out;
    for (char ch : nul_separated) out += ch == '\0' ? ' ' : ch;
    if (!out.empty()) out.pop_back();
    return out.empty() ? "none" : "{" + out + "}";
  }

  void differ(const std::string& path, const char* what, const std::string& ref,
              const std::string& copy) {
    add(path, what, fmt::format("{} {}, {} {}", ref, sides_.reference, copy, sides_.copy));
  }

  void add(const std::string& path, const char* what, std::string detail) {
    out_.push_back(Difference{path, what, std::move(detail)});
  }

  const changes::Manifest& ref_;
  const changes::Manifest& copy_;
  const Sides& sides_;
  const std::unordered_map<std::string, std::string> ref_links_, copy_links_;
  std::vector<Difference> out_;
};

}  // namespace

std::vector<Difference> compare_manifests(const changes::Manifest& reference,
                                          const changes::Manifest& copy, const Sides& sides) {
  return Comparer(reference, copy, sides).run();
}

std::vector<Difference> persisting(const std::vector<Difference>& first,
                                   const std::vector<Difference>& second) {
  std::set<std::pair<std::string, std::string>> before;
  for (const auto& d : first) before.emplace(d.path, d.what);
  std::vector<Difference> out;
  for (const auto& d : second) {
    if (before.contains({d.path, d.what})) out.push_back(d);
  }
  return out;
}

std::vector<Difference> settled(const std::vector<Difference>& differences,
                                const changes::Manifest& reference, int64_t since_ns,
                                size_t& changed) {
  std::vector<Difference> out;
  changed = 0;
  for (const auto& d : differences) {
    auto it = reference.find(d.path);
    if (it == reference.end() && !d.path.empty()) {
      size_t slash = d.path.rfind('/');
      it = reference.find(slash == std::string::npos ? "" : d.path.substr(0, slash));
    }
    if (it != reference.end() && it->second.ctime_ns >= since_ns) {
      ++changed;
    } else {
      out.push_back(d);
    }
  }
  return out;
}

}  // namespace bkp::server
