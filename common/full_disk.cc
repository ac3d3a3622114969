// FullDisk (see full_disk.h): free space is the filesystem's free blocks (f_bfree), the view of
// a daemon running as root, which may write into the reserve; a writer without that right sees
// both figures grow alike when space is freed.
#include "common/full_disk.h"

#include <sys/statvfs.h>

#include <cerrno>

namespace bkp {

bool is_disk_full(int code) { return code == ENOSPC || code == EDQUOT; }

std::optional<FullDisk::Room> FullDisk::room_of(const std::string& path) {
  struct statvfs fs{};
  if (::statvfs(path.c_str(), &fs) != 0) return std::nullopt;
  return Room{static_cast<uint64_t>(fs.f_bfree) * fs.f_frsize, static_cast<uint64_t>(fs.f_ffree)};
}

FullDisk::FullDisk(std::string path)
    : path_(std::move(path)), at_failure_(room_of(path_).value_or(Room{})) {}

bool FullDisk::space_back() const {
  const auto now = room_of(path_);
  return now && (now->bytes >= at_failure_.bytes + kSpaceBack ||
                 now->inodes >= at_failure_.inodes + kInodesBack);
}

bool FullDisk::wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                    const std::function<bool()>& stop, std::chrono::milliseconds longest) const {
  const auto until = std::chrono::steady_clock::now() + longest;
  while (std::chrono::steady_clock::now() < until) {
    if (cv.wait_for(lock, kPoll, stop)) return false;
    if (space_back()) return true;
  }
  return false;
}

}  // namespace bkp
