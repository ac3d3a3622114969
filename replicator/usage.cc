// The replicator's usage figures (usage.h): a walk of ROOT (common/files.h), and statvfs.
#include "replicator/usage.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/files.h"
#include "common/log.h"

namespace bkp::replicator {

UsageMeter::UsageMeter(std::string root, std::optional<uint64_t> capacity)
    : root_(std::move(root)), capacity_(capacity), thread_([this] { loop(); }) {}

UsageMeter::~UsageMeter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void UsageMeter::loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    auto bytes = allocated_bytes(root_);
    if (!bytes) log::warn("usage of {}: {}", root_, bytes.error().message);
    lock.lock();
    if (bytes) stored_ = *bytes;
    wake_.wait_for(lock, kRewalkEvery, [this] { return stopping_ || refresh_; });
    refresh_ = false;
  }
}

void UsageMeter::refresh() {
  {
    std::lock_guard lock(mu_);
    refresh_ = true;
  }
  wake_.notify_all();
}

wire::Usage UsageMeter::current() {
  std::optional<uint64_t> stored;
  {
    std::lock_guard lock(mu_);
    stored = stored_;
  }
  if (!stored) return wire::Usage{};
  struct statvfs vfs;
  uint64_t free = 0;
  if (::statvfs(root_.c_str(), &vfs) == 0) {
    free = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  } else {
    log::warn("usage of {}: statvfs: {}", root_, std::strerror(errno));
  }
  if (capacity_) free = std::min(free, *capacity_ > *stored ? *capacity_ - *stored : 0);
  return wire::Usage{1, *stored, free};
}

}  // namespace bkp::replicator
