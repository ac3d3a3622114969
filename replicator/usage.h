// How much a replicator holds and how much more it may take, for backupd's placement
// (server/placement.h): backupd asks with UsageRequest and places volumes on the replicators
// that are near and hold little.
//
// The bytes held are every allocated block under ROOT counted once (a file and its id link in
// .ids are one inode), found by walking ROOT: a background thread walks at start and then every
// kRewalkEvery, so an answer never waits for a walk (until the first walk ends the answer says
// "not measured" and backupd asks again). The room left is the filesystem's free space now,
// capped by --capacity minus what is held, so an operator can keep a replicator to a share of
// a disk it shares with other things.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/result.h"
#include "common/wire/messages.h"

namespace bkp::replicator {

constexpr auto kRewalkEvery = std::chrono::seconds(60);

class UsageMeter {
 public:
  // capacity: the most this replicator may hold under root; nullopt: the filesystem's size.
  UsageMeter(std::string root, std::optional<uint64_t> capacity);
  ~UsageMeter();
  UsageMeter(const UsageMeter&) = delete;
  UsageMeter& operator=(const UsageMeter&) = delete;

  // The latest figures; free_bytes is computed now.
  wire::Usage current();
  // Something large came or went (a copy deleted, a snapshot stored): walk again now rather
  // than at the next minute. The figures stay the old ones until that walk ends.
  void refresh();

 private:
  void loop();

  const std::string root_;
  const std::optional<uint64_t> capacity_;
  std::mutex mu_;
  std::condition_variable wake_;
  // Guarded by mu_.
  bool stopping_ = false;
  bool refresh_ = false;
  std::optional<uint64_t> stored_;
  std::thread thread_;  // last: started once the rest is set
};

}  // namespace bkp::replicator
