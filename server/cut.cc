// A snapshot's cut, kept by copy-before-write (see cut.h for the scheme).
//
// Why file granularity for names but range granularity for bytes: the names of a whole volume
// are small and one walk reads them all, so freezing them costs the same whatever changes
// later, and renames, removals, hard links and xattrs then need no bookkeeping at all. Bytes are
// the volume's bulk: a 10 GiB file appended to during the run keeps nothing (appends are past
// its size at the cut), and one rewritten block keeps one block.
//
// Why a hard link for a file whose id link goes: it is O(1) and, with neither a tree name nor
// an id left, nothing can change that inode any more. A scratch area on another filesystem
// (EXDEV) gets a copy of the bytes instead. Regular files without an id (none in a mirror the
// Applier built) are hard-linked at the cut already: nothing would tell us before they go.
//
// Where the live file is found: its id link (ids/<id>, the inode checked), else its path at
// the cut (a tree nothing changes), else its hard link here. A file found nowhere with bytes
// not kept means a change the applier did not announce: the run fails with "internal error"
// rather than archive something that is not the cut.
#include "server/cut.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

#include "common/changes/scan.h"
#include "common/files.h"
#include "common/log.h"

namespace bkp::server {
namespace {

constexpr size_t kCopyBlock = 1u << 20;
constexpr const char* kNames = "names";

std::string old_name(ino_t ino) { return fmt::format("old-{}", ino); }
std::string gone_name(ino_t ino) { return fmt::format("gone-{}", ino); }

// Removes every file in the directory; returns how many.
size_t clear_dir(int dir_fd) {
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* d = fd < 0 ? nullptr : fdopendir(fd);
  if (d == nullptr) {
    if (fd >= 0) close(fd);
    return 0;
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  closedir(d);
  size_t removed = 0;
  for (const auto& n : names) removed += unlinkat(dir_fd, n.c_str(), 0) == 0 ? 1 : 0;
  return removed;
}

Result<void> pread_full(int fd, char* buf, size_t n, uint64_t offset, size_t* got) {
  *got = 0;
  while (*got < n) {
    ssize_t r = pread(fd, buf + *got, n - *got, static_cast<off_t>(offset + *got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read");
    }
    if (r == 0) break;
    *got += static_cast<size_t>(r);
  }
  return {};
}

// Copies [start, end) of from to the same offsets of to, in the kernel where it can.
Result<void> copy_range(int from, int to, uint64_t start, uint64_t end) {
  bool in_kernel = true;
  std::vector<char> buf;
  while (start < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(end - start, kCopyBlock));
    if (in_kernel) {
      auto in = static_cast<off_t>(start), out = static_cast<off_t>(start);
      ssize_t n = copy_file_range(from, &in, to, &out, want, 0);
      if (n > 0) {
        start += static_cast<uint64_t>(n);
        continue;
      }
      if (n == 0) return {};  // the file ends here
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
        return fail_errno("copy");
      }
      in_kernel = false;
    }
    buf.resize(kCopyBlock);
    size_t got = 0;
    BKP_TRY_VOID(pread_full(from, buf.data(), want, start, &got));
    if (got == 0) return {};
    for (size_t done = 0; done < got;) {
      ssize_t w = pwrite(to, buf.data() + done, got - done, static_cast<off_t>(start + done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return fail_errno("write");
      }
      done += static_cast<size_t>(w);
    }
    start += got;
  }
  return {};
}

// Copies the data regions of [start, end) of from; holes stay holes in to.
Result<void> copy_data(int from, int to, uint64_t start, uint64_t end) {
  auto pos = static_cast<off_t>(start);
  while (static_cast<uint64_t>(pos) < end) {
    off_t data = lseek(from, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return {};  // only a hole remains
      return copy_range(from, to, static_cast<uint64_t>(pos), end);  // cannot tell: copy it all
    }
    if (static_cast<uint64_t>(data) >= end) return {};
    off_t hole = lseek(from, data, SEEK_HOLE);
    if (hole < 0 || static_cast<uint64_t>(hole) > end) hole = static_cast<off_t>(end);
    BKP_TRY_VOID(copy_range(from, to, static_cast<uint64_t>(data), static_cast<uint64_t>(hole)));
    pos = hole;
  }
  return {};
}

// The parts of [start, end) that `have` does not cover.
std::vector<std::pair<uint64_t, uint64_t>> gaps(const changes::ExtentMap* have, uint64_t start,
                                                uint64_t end) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t pos = start;
  if (have != nullptr) {
    for (const auto& [a, b] : have->ranges()) {
      if (b <= pos) continue;
      if (a >= end) break;
      if (a > pos) out.emplace_back(pos, a);
      pos = std::max(pos, b);
      if (pos >= end) break;
    }
  }
  if (pos < end) out.emplace_back(pos, end);
  return out;
}

UniqueFd dup_fd(int fd) { return UniqueFd(fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

}  // namespace

Result<std::unique_ptr<Cut>> Cut::take(int tree_fd, int ids_fd,
                                       const EntryLabel& label,
                                       const std::string& scratch_dir) {
  BKP_TRY_VOID(make_dirs(scratch_dir));
  UniqueFd scratch(::open(scratch_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!scratch) return fail_errno("open " + scratch_dir);
  clear_dir(scratch.get());
  UniqueFd tree = dup_fd(tree_fd), ids = dup_fd(ids_fd);
  if (!tree || (ids_fd >= 0 && !ids)) return fail_errno("dup");
  std::unique_ptr<Cut> cut(
      new Cut(std::move(tree), std::move(ids), std::move(scratch), scratch_dir));
  UniqueFd names_fd(
      openat(cut->scratch_.get(), kNames, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!names_fd) return fail_errno("create " + scratch_dir + "/" + kNames);
  NameWriter names(std::move(names_fd));
  auto walked = walk_names(tree_fd, label, [&](int dir_fd, const std::string& name, CutEntry& e) {
    return cut->add(dir_fd, name, e, names);
  });
  if (walked) walked = names.finish();
  if (!walked) return tl::unexpected(walked.error().wrap("snapshot cut"));
  auto& files = cut->files_;
  std::sort(files.begin(), files.end(), [](const Slot& a, const Slot& b) { return a.ino < b.ino; });
  files.erase(std::unique(files.begin(), files.end(),
                          [](const Slot& a, const Slot& b) { return a.ino == b.ino; }),
              files.end());
  return cut;
}

// One entry of the walk (the tree holds still, no applier call can come yet).
Result<void> Cut::add(int dir_fd, const std::string& name, const CutEntry& e, NameWriter& names) {
  BKP_TRY_VOID(names.add(e));
  ++entries_;
  if (!S_ISREG(e.st.st_mode)) return {};
  files_.push_back(Slot{e.st.st_ino, static_cast<uint64_t>(e.st.st_size)});
  if (!ids_ || e.id != 0) return {};
  // No id: nothing would tell us before this file changes or goes.
  BKP_TRY_VOID(detach(files_.back(), dir_fd, name).map_error([&](Error err) {
    return err.wrap(e.path);
  }));
  return {};
}

Cut::~Cut() { clear_dir(scratch_.get()); }

size_t remove_cut_leftovers(const std::string& scratch_dir) {
  UniqueFd fd(::open(scratch_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return fd ? clear_dir(fd.get()) : 0;
}

Result<NameReader> Cut::names() const {
  UniqueFd fd(openat(scratch_.get(), kNames, O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open " + scratch_dir_ + "/" + kNames);
  return NameReader(std::move(fd));
}

Cut::Slot* Cut::find(ino_t ino) {
  auto it = std::lower_bound(files_.begin(), files_.end(), ino,
                             [](const Slot& s, ino_t i) { return s.ino < i; });
  return it != files_.end() && it->ino == ino ? &*it : nullptr;
}

void Cut::record_failure(Error e) {
  if (failure_) return;
  log::warn("snapshot cut: {}; the run fails, ingest goes on", e.message);
  failure_ = std::move(e);
}

std::optional<Error> Cut::failure() const {
  std::lock_guard lock(mu_);
  return failure_;
}

void Cut::close() {
  std::lock_guard lock(mu_);
  closed_ = true;
}

Result<void> Cut::keep(Slot& s, int fd, uint64_t start, uint64_t end) {
  auto it = kept_.find(s.ino);
  auto missing = gaps(it == kept_.end() ? nullptr : &it->second, start, end);
  if (missing.empty()) return {};
  // fd may be write-only (the applier's): read through a descriptor of our own.
  UniqueFd from(::open(fmt::format("/proc/self/fd/{}", fd).c_str(), O_RDONLY | O_CLOEXEC));
  if (!from) return fail_errno("reopen the file to read");
  std::string name = old_name(s.ino);
  UniqueFd to(openat(scratch_.get(), name.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  if (!to) return fail_errno("create " + name);
  for (const auto& [a, b] : missing) {
    BKP_TRY_VOID(copy_data(from.get(), to.get(), a, b).map_error([&](Error e) {
      return e.wrap(name);
    }));
    kept_[s.ino].add(a, b - a);
  }
  return {};
}

Result<void> Cut::detach(Slot& s, int dir_fd, const std::string& name) {
  std::string gone = gone_name(s.ino);
  if (linkat(dir_fd, name.c_str(), scratch_.get(), gone.c_str(), 0) == 0 || errno == EEXIST) {
    s.gone = true;
    return {};
  }
  // Another filesystem (EXDEV), or no more links: keep all of its bytes instead.
  UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("open");
  return keep(s, fd.get(), 0, s.size);
}

void Cut::before_change(int fd, uint64_t offset, uint64_t length) noexcept {
  struct stat st{};
  if (fstat(fd, &st) != 0) return;
  std::lock_guard lock(mu_);
  if (closed_ || failure_) return;
  Slot* s = find(st.st_ino);
  if (s == nullptr || s->archived || s->gone || offset >= s->size) return;
  uint64_t end = length >= s->size - offset ? s->size : offset + length;
  // Whole filesystem blocks: a write of a few bytes into a hole allocates its whole block, so
  // the live file's data map outside the kept ranges stays the cut's.
  auto block = static_cast<uint64_t>(std::max<blksize_t>(st.st_blksize, 512));
  offset -= offset % block;
  end = std::min(s->size, (end + block - 1) / block * block);
  if (auto kept = keep(*s, fd, offset, end); !kept) {
    record_failure(kept.error().wrap(fmt::format(
        "cannot keep the old bytes of a file changed during the run in {}", scratch_dir_)));
  }
}

void Cut::before_unlink_id(int ids_dir, const std::string& name) noexcept {
  struct stat st{};
  if (fstatat(ids_dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) return;
  std::lock_guard lock(mu_);
  if (closed_ || failure_) return;
  Slot* s = find(st.st_ino);
  if (s == nullptr || s->archived || s->gone) return;
  if (auto kept = detach(*s, ids_dir, name); !kept) {
    record_failure(kept.error().wrap(fmt::format("cannot keep a file removed during the run in {}",
                                       scratch_dir_)));
  }
}

Result<UniqueFd> Cut::open_live(const Slot& s, const CutEntry& e) {
  if (s.gone) {
    UniqueFd fd(openat(scratch_.get(), gone_name(s.ino).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno("open " + scratch_dir_ + "/" + gone_name(s.ino));
    return fd;
  }
  auto same = [&](const UniqueFd& fd) {
    struct stat st{};
    return fd && fstat(fd.get(), &st) == 0 && st.st_ino == s.ino;
  };
  if (ids_ && e.id != 0) {
    UniqueFd fd(openat(ids_.get(), fmt::format("{:016x}", e.id).c_str(),
                       O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (same(fd)) return fd;
  }
  if (UniqueFd fd = open_beneath(tree_.get(), e.path, O_RDONLY | O_NOFOLLOW); fd && same(fd)) {
    return fd;
  }
  return fail(EIO, fmt::format("internal error: {} changed after the snapshot's cut and its old "
                               "bytes were not kept",
                               e.path));
}

Result<Cut::File> Cut::open(const CutEntry& e) {
  std::lock_guard lock(mu_);
  if (failure_) return tl::unexpected(*failure_);
  Slot* s = find(e.st.st_ino);
  if (s == nullptr) return fail(EIO, "internal error: " + e.path + " is not in the cut");
  File f;
  f.ino = s->ino;
  f.size = s->size;
  auto it = kept_.find(s->ino);
  const changes::ExtentMap* kept = it == kept_.end() ? nullptr : &it->second;
  if (kept == nullptr || kept->total_bytes() < f.size) {
    f.live = BKP_TRY(open_live(*s, e));
    changes::data_regions(f.live.get(), f.size, f.data);
  }
  if (kept != nullptr) {
    std::string name = old_name(s->ino);
    f.kept.reset(openat(scratch_.get(), name.c_str(), O_RDONLY | O_CLOEXEC));
    if (!f.kept) return fail_errno("open " + scratch_dir_ + "/" + name);
    changes::ExtentMap old;
    changes::data_regions(f.kept.get(), f.size, old);
    for (const auto& [a, b] : kept->ranges()) {
      f.data.remove(a, b - a);
      // old-<ino> has data only where it was copied, give or take a filesystem block: keep
      // what falls inside the kept ranges.
      for (const auto& [c, d] : old.ranges()) {
        uint64_t lo = std::max(a, c), hi = std::min(b, d);
        if (lo < hi) f.data.add(lo, hi - lo);
      }
    }
  }
  return f;
}

Result<size_t> Cut::read(File& f, char* buf, size_t n, uint64_t offset) {
  std::lock_guard lock(mu_);
  if (failure_) return tl::unexpected(*failure_);
  if (offset >= f.size) return size_t{0};
  uint64_t end = std::min<uint64_t>(f.size, offset + n);
  auto it = kept_.find(f.ino);
  const changes::ExtentMap* kept = it == kept_.end() ? nullptr : &it->second;
  uint64_t pos = offset;
  while (pos < end) {
    // The kept range holding pos, or the live stretch up to the next kept range.
    bool from_kept = false;
    uint64_t stop = end;
    if (kept != nullptr) {
      const auto& ranges = kept->ranges();
      auto next = ranges.upper_bound(pos);
      if (next != ranges.begin() && std::prev(next)->second > pos) {
        from_kept = true;
        stop = std::min(end, std::prev(next)->second);
      } else if (next != ranges.end()) {
        stop = std::min(end, next->first);
      }
    }
    if (from_kept && !f.kept) {  // kept since open()
      f.kept.reset(openat(scratch_.get(), old_name(f.ino).c_str(), O_RDONLY | O_CLOEXEC));
      if (!f.kept) return fail_errno("open " + scratch_dir_ + "/" + old_name(f.ino));
    }
    int fd = from_kept ? f.kept.get() : f.live.get();
    if (fd < 0) return fail(EIO, "internal error: a file of the cut has no source for its bytes");
    size_t want = static_cast<size_t>(stop - pos), got = 0;
    BKP_TRY_VOID(pread_full(fd, buf + (pos - offset), want, pos, &got));
    if (got < want) {
      // A kept range past the end of the copy was a hole at the end of the file.
      if (!from_kept) return fail(EIO, "internal error: a file of the cut is shorter than it was");
      std::memset(buf + (pos - offset) + got, 0, want - got);
    }
    pos = stop;
  }
  return static_cast<size_t>(end - offset);
}

void Cut::archived(ino_t ino) {
  std::lock_guard lock(mu_);
  Slot* s = find(ino);
  if (s == nullptr || s->archived) return;
  s->archived = true;
  if (kept_.erase(ino) > 0) unlinkat(scratch_.get(), old_name(ino).c_str(), 0);
  if (s->gone) unlinkat(scratch_.get(), gone_name(ino).c_str(), 0);
}

}  // namespace bkp::server
