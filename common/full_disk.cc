// FullDisk (see full_disk.h): free space is the filesystem's free blocks (f_bfree), the view of
// a daemon running as root, which may write into the reserve; a writer without that right sees
// both figures grow alike when space is freed.
#include "common/full_disk.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <optional>

namespace bkp {
namespace {

std::optional<uint64_t> free_bytes(const std::string& path) {
  struct statvfs fs{};
  if (::statvfs(path.c_str(), &fs) != 0) return std::nullopt;
  return static_cast<uint64_t>(fs.f_bfree) * fs.f_frsize;
}

}  // namespace

bool is_disk_full(int code) { return code == ENOSPC || code == EDQUOT; }

FullDisk::FullDisk(std::string path)
    : path_(std::move(path)), at_failure_(free_bytes(path_).value_or(0)) {}

bool FullDisk::space_back() const {
  auto now = free_bytes(path_);
  return now && *now >= at_failure_ + kSpaceBack;
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
