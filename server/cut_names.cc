// The names file of a cut and the walk that fills it (see cut_names.h).
//
// The walk is openat/fdopendir based like every other tree walk in backupd and holds one
// directory descriptor per level. It runs while the volume's ingest waits (the cut), so it does
// only what the archive needs: one fstatat per entry, a readlink per symlink, and one xattr
// listing per entry but sockets, which no archive holds (through /proc/self/fd, without
// opening the entry: a fifo would block).
// Every attribute the process can read is kept (user.*, security.* such as file capabilities,
// trusted.*, POSIX ACLs as system.posix_acl_*), as bsdtar and restic keep them: a snapshot that
// dropped a binary's capability or a directory's ACL would restore a different system.
#include "server/cut_names.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/files.h"
#include "common/path.h"

namespace bkp::server {
namespace {

constexpr size_t kBuffer = 1u << 20;

void put_u32(std::string& out, uint32_t v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_string(std::string& out, const std::string& s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out += s;
}

// Names in the directory, sorted.
Result<std::vector<std::string>> sorted_names(int dir_fd, const std::string& rel) {
  auto names = BKP_TRY(list_names(dir_fd, rel.empty() ? std::string(".") : rel));
  std::sort(names.begin(), names.end());
  return names;
}

changes::Xattrs entry_xattrs(int dir_fd, const std::string& name, const std::string& rel) {
  return changes::read_xattrs(dir_fd, name, rel.empty() ? "." : rel);
}

class Walker {
 public:
  Walker(const EntryLabel& label, const NameVisitor& visit) : label_(label), visit_(visit) {}

  Result<void> root(int tree_fd) {
    CutEntry e;
    if (fstat(tree_fd, &e.st) != 0) return fail_errno("stat of the volume root");
    e.xattrs = entry_xattrs(tree_fd, ".", "");
    BKP_TRY_VOID(visit_(tree_fd, ".", e));
    return dir(tree_fd, "");
  }

 private:
  Result<void> dir(int dir_fd, const std::string& rel) {
    for (const auto& name : BKP_TRY(sorted_names(dir_fd, rel))) {
      CutEntry e;
      e.path = join_rel(rel, name);
      if (fstatat(dir_fd, name.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) != 0) {
        return fail_errno("stat " + e.path);
      }
      label_(e);
      if (S_ISLNK(e.st.st_mode)) {
        e.target.resize(static_cast<size_t>(e.st.st_size) + 1);
        ssize_t n = readlinkat(dir_fd, name.c_str(), e.target.data(), e.target.size());
        if (n < 0) return fail_errno("readlink " + e.path);
        e.target.resize(static_cast<size_t>(n));
      }
      if (!S_ISSOCK(e.st.st_mode)) e.xattrs = entry_xattrs(dir_fd, name, e.path);
      BKP_TRY_VOID(visit_(dir_fd, name, e));
      if (S_ISDIR(e.st.st_mode)) {
        UniqueFd sub(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub) return fail_errno("open " + e.path);
        BKP_TRY_VOID(dir(sub.get(), e.path));
      }
    }
    return {};
  }

  const EntryLabel& label_;
  const NameVisitor& visit_;
};

}  // namespace

Result<void> NameWriter::add(const CutEntry& e) {
  put_string(buf_, e.path);
  buf_.append(reinterpret_cast<const char*>(&e.st), sizeof e.st);
  buf_.append(reinterpret_cast<const char*>(&e.id), sizeof e.id);
  buf_.append(reinterpret_cast<const char*>(&e.source_ctime), sizeof e.source_ctime);
  put_string(buf_, e.target);
  put_u32(buf_, static_cast<uint32_t>(e.xattrs.size()));
  for (const auto& [name, value] : e.xattrs) {
    put_string(buf_, name);
    put_string(buf_, value);
  }
  if (buf_.size() >= kBuffer) BKP_TRY_VOID(flush());
  return {};
}

Result<void> NameWriter::finish() { return flush(); }

Result<void> NameWriter::flush() {
  size_t done = 0;
  while (done < buf_.size()) {
    ssize_t n = ::write(fd_.get(), buf_.data() + done, buf_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("write the names of the cut");
    }
    done += static_cast<size_t>(n);
  }
  buf_.clear();
  return {};
}

Result<bool> NameReader::need(size_t n) {
  if (buf_.size() - pos_ >= n) return true;
  buf_.erase(0, pos_);
  pos_ = 0;
  while (buf_.size() < n) {
    size_t have = buf_.size();
    buf_.resize(have + std::max(n - have, kBuffer));
    ssize_t got = ::read(fd_.get(), buf_.data() + have, buf_.size() - have);
    if (got < 0 && errno == EINTR) got = 0;
    if (got < 0) {
      buf_.resize(have);
      return fail_errno("read the names of the cut");
    }
    buf_.resize(have + static_cast<size_t>(got));
    if (got == 0) {
      if (buf_.empty()) return false;
      return fail(EIO, "the names of the cut end in a torn record");
    }
  }
  return true;
}

Result<bool> NameReader::next(CutEntry& e) {
  auto torn = [] { return fail(EIO, "the names of the cut end in a torn record"); };
  auto u32 = [&]() -> Result<uint32_t> {
    if (!BKP_TRY(need(sizeof(uint32_t)))) return torn();
    uint32_t v = 0;
    std::memcpy(&v, buf_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  };
  auto bytes = [&](void* out, size_t n) -> Result<void> {
    if (n > 0 && !BKP_TRY(need(n))) return torn();
    std::memcpy(out, buf_.data() + pos_, n);
    pos_ += n;
    return {};
  };
  auto string = [&](std::string& out) -> Result<void> {
    out.resize(BKP_TRY(u32()));
    return bytes(out.data(), out.size());
  };
  if (!BKP_TRY(need(sizeof(uint32_t)))) return false;  // the end, between records
  BKP_TRY_VOID(string(e.path));
  BKP_TRY_VOID(bytes(&e.st, sizeof e.st));
  BKP_TRY_VOID(bytes(&e.id, sizeof e.id));
  BKP_TRY_VOID(bytes(&e.source_ctime, sizeof e.source_ctime));
  BKP_TRY_VOID(string(e.target));
  e.xattrs.resize(BKP_TRY(u32()));
  for (auto& [name, value] : e.xattrs) {
    BKP_TRY_VOID(string(name));
    BKP_TRY_VOID(string(value));
  }
  return true;
}

Result<void> walk_names(int tree_fd, const EntryLabel& label, const NameVisitor& visit) {
  Walker walker(label, visit);
  return walker.root(tree_fd);
}

EntryLabel label_entries(const changes::Applier& applier) {
  return [&applier](CutEntry& e) {
    applier.placeholders().as_source(e.st);
    if (!S_ISREG(e.st.st_mode)) return;
    e.id = applier.id_of_inode(e.st.st_ino).value_or(0);
    if (e.id != 0) e.source_ctime = applier.source_ctime(e.id);
  };
}

}  // namespace bkp::server
