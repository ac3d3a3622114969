// FullDisk: waiting out a full disk instead of retrying into it.
//
// Why: a daemon whose stream failed because its own disk is full (ENOSPC, EDQUOT) gains nothing
// from its usual reconnect schedule (every 100 ms at first, then up to every second or 30 s):
// every attempt has the peer resend the same batch (up to 64 MiB), fails on the same write and
// logs the same error, for as long as the disk stays full. So it notes the free space when the
// write failed and tries again once the filesystem has gained kSpaceBack bytes or kInodesBack
// inodes over that (a filesystem out of inodes fails with ENOSPC too, and freeing small files
// frees inodes, hardly bytes), checked with one statvfs every kPoll, or after the caller's
// longest wait anyway: space may come back
// in a way this cannot see (the filesystem's own reserve), or the full disk was the peer's. The
// operator who frees space sees the stream resume within kPoll, not after a backoff.
//
// Not thread-safe: one waiting thread owns it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

namespace bkp {

// Whether an error code means a full disk (or quota).
bool is_disk_full(int code);

class FullDisk {
 public:
  static constexpr uint64_t kSpaceBack = uint64_t{1} << 20;
  static constexpr uint64_t kInodesBack = 64;
  static constexpr std::chrono::milliseconds kPoll{200};

  // Notes the free space of the filesystem holding path, now (just after a write failed).
  explicit FullDisk(std::string path);

  // Free bytes when the write failed (0 if statvfs failed).
  uint64_t free_at_failure() const { return at_failure_.bytes; }
  // Whether the filesystem has gained kSpaceBack bytes or kInodesBack inodes since; false if
  // statvfs fails.
  bool space_back() const;
  // Waits on cv (lock held: the caller's mutex) until space_back(), stop() or `longest` has
  // passed. True if space came back.
  bool wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
            const std::function<bool()>& stop, std::chrono::milliseconds longest) const;

 private:
  struct Room {
    uint64_t bytes = 0;   // free blocks, in bytes
    uint64_t inodes = 0;  // free inodes (0 where the filesystem does not count them)
  };
  static std::optional<Room> room_of(const std::string& path);

  const std::string path_;
  const Room at_failure_;
};

}  // namespace bkp
