// MountedFs: a backupfs process mounted over a directory for the length of one test.
//
// mount() starts `backupfs DIR ARGS... -f` as a Daemon and polls /proc/self/mountinfo until a
// FUSE filesystem sits on DIR, with a deadline, failing early (with the log) if the process
// dies first. unmount() and the destructor run `fusermount3 -u DIR` with retries, wait for the
// process to exit, and only then signal its process group; as a last resort they detach the
// mount lazily so a broken test never leaves a mount behind (libfuse test/cases/lib/common.sh).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "tests/testutil/daemon.h"

namespace bkp::testutil {

struct MountEntry {
  std::string mount_point;
  std::string fstype;  // "fuse.backupfs", "ext4", ...
};

// Parses /proc/self/mountinfo (octal escapes decoded).
std::vector<MountEntry> read_mountinfo();
// Mount points equal to dir or below it.
std::vector<std::string> mounts_under(const std::string& dir);
// True if a FUSE filesystem ("fuse" or "fuse.*") is mounted exactly at dir.
bool is_fuse_mounted(const std::string& dir);

// Why FUSE tests cannot run here ("/dev/fuse is missing", "not root"), or nullopt.
std::optional<std::string> fuse_unavailable_reason();

struct MountOptions {
  std::string binary;             // path to backupfs
  std::string dir;                // absolute directory to mount over
  std::vector<std::string> args;  // after DIR, before -f: --listen ..., --host ...
  std::string log_path;
  std::vector<std::string> env;   // "NAME=VALUE" added to backupfs's environment
  std::chrono::milliseconds timeout = std::chrono::seconds(20);
};

class MountedFs {
 public:
  // Starts backupfs and waits for the mount. Errors carry the process log.
  static Result<std::unique_ptr<MountedFs>> mount(const MountOptions& opts);
  ~MountedFs();
  MountedFs(const MountedFs&) = delete;
  MountedFs& operator=(const MountedFs&) = delete;

  const std::string& dir() const { return dir_; }
  Daemon& process() { return *daemon_; }
  bool mounted() const { return is_fuse_mounted(dir_); }

  // fusermount3 -u (retried while busy), then waits up to exit_timeout for backupfs to exit on
  // its own, then stops it. Returns its wait status; an error if the mount could not be removed
  // cleanly (it is then detached lazily). Idempotent.
  Result<int> unmount(std::chrono::milliseconds exit_timeout = std::chrono::seconds(20));

 private:
  MountedFs(std::string dir, std::unique_ptr<Daemon> daemon)
      : dir_(std::move(dir)), daemon_(std::move(daemon)) {}

  std::string dir_;
  std::unique_ptr<Daemon> daemon_;
  std::optional<int> exit_status_;
};

}  // namespace bkp::testutil
