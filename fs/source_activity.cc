// SourceActivity (see source_activity.h).
#include "fs/source_activity.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/files.h"
#include "common/log.h"
#include "common/path.h"
#include "common/process.h"

namespace bkp::fs {
namespace {

constexpr uint64_t kMagic = 0x3130544341504b42;  // "BKPACT01"
constexpr uint64_t kReading = UINT64_MAX;

struct Header {
  uint64_t magic = kMagic;
  uint64_t boot = 0;
  uint64_t clean = 0;
};

// The ids in the file at path, after its header if `header` is given; a missing file has none.
Result<std::vector<uint64_t>> read_ids(const std::string& path, Header* header) {
  std::vector<uint64_t> ids;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return ids;
    return fail_errno("open " + path);
  }
  if (header != nullptr &&
      ::read(fd.get(), header, sizeof *header) != static_cast<ssize_t>(sizeof *header)) {
    *header = Header{};  // cut short: treated as a record of no boot
    return ids;
  }
  uint64_t buf[1024];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return fail_errno("read " + path);
    ids.insert(ids.end(), buf, buf + n / static_cast<ssize_t>(sizeof(uint64_t)));
    if (n < static_cast<ssize_t>(sizeof buf)) break;  // a torn last id (crash mid-append) is ignored
  }
  return ids;
}

std::string bytes_of(const void* p, size_t n) { return {static_cast<const char*>(p), n}; }

}  // namespace

Result<std::unique_ptr<SourceActivity>> SourceActivity::open(std::string base, int root_fd,
                                                             std::chrono::milliseconds settle_every) {
  std::unique_ptr<SourceActivity> a(new SourceActivity(std::move(base), root_fd));
  a->boot_ = boot_id();
  const std::string suspect_path = a->base_ + ".suspect";
  for (uint64_t id : BKP_TRY(read_ids(suspect_path, nullptr))) a->suspect_.insert(id);
  Header header;
  std::vector<uint64_t> ids = BKP_TRY(read_ids(a->base_, &header));
  if (header.magic == kMagic && header.boot != a->boot_ && header.clean == 0 && !ids.empty()) {
    size_t before = a->suspect_.size();
    a->suspect_.insert(ids.begin(), ids.end());
    log::warn("the machine restarted while files had changes that may not have reached this "
              "disk: the next reconcile with backupd compares their content ({} files)",
              a->suspect_.size() - before);
    std::vector<uint64_t> all(a->suspect_.begin(), a->suspect_.end());
    BKP_TRY_VOID(write_file_atomic(suspect_path, bytes_of(all.data(), all.size() * 8),
                                   Durability::kSync));
    BKP_TRY_VOID(fsync_dir(std::string(parent_of(suspect_path))));
  } else if (header.boot == a->boot_ && header.clean == 0) {
    // A worker of this boot ended without a clean stop: its readings are over, and the next
    // settle's sync covers them.
    for (uint64_t id : ids) a->listed_.emplace(id, 0);
  }
  {
    std::lock_guard lock(a->mu_);
    BKP_TRY_VOID(a->rewrite_locked(false));
  }
  if (settle_every.count() > 0) {
    a->settler_ = std::thread([p = a.get(), settle_every] { p->settler(settle_every); });
  }
  return a;
}

SourceActivity::~SourceActivity() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (settler_.joinable()) settler_.join();
}

bool SourceActivity::suspect(uint64_t id) const {
  std::lock_guard lock(mu_);
  return suspect_.contains(id);
}

size_t SourceActivity::suspects() const {
  std::lock_guard lock(mu_);
  return suspect_.size();
}

size_t SourceActivity::listed() const {
  std::lock_guard lock(mu_);
  return listed_.size();
}

Result<void> SourceActivity::clear_suspects() {
  std::lock_guard lock(mu_);
  if (suspect_.empty()) return {};
  if (::unlink((base_ + ".suspect").c_str()) != 0 && errno != ENOENT) {
    return fail_errno("remove " + base_ + ".suspect");
  }
  log::info("the files a restart of the machine left in doubt were compared with backupd ({} "
            "files)", suspect_.size());
  suspect_.clear();
  return {};
}

Result<void> SourceActivity::reading(const changes::Batch& batch) {
  std::vector<uint64_t> added;
  std::lock_guard lock(mu_);
  for (const changes::FileChange& f : batch.files) {
    if (f.extents.empty()) continue;  // no data read (an attribute change is in the inode)
    auto [it, fresh] = listed_.try_emplace(f.ref.id, kReading);
    if (fresh) added.push_back(f.ref.id);
    it->second = kReading;
  }
  if (added.empty()) return {};
  auto appended = write_all(fd_.get(), bytes_of(added.data(), added.size() * 8), base_);
  if (appended && ::fdatasync(fd_.get()) != 0) appended = fail_errno("sync " + base_);
  if (!appended) {
    // Not listed after all (a full disk): cut a torn append off, so the ids after it still
    // read, and let the next batch of these files try again.
    (void)::ftruncate(fd_.get(), static_cast<off_t>(size_));
    for (uint64_t id : added) listed_.erase(id);
    return appended;
  }
  size_ += added.size() * 8;
  return {};
}

void SourceActivity::read_done(const changes::Batch& batch) {
  std::lock_guard lock(mu_);
  for (const changes::FileChange& f : batch.files) {
    if (auto it = listed_.find(f.ref.id); it != listed_.end() && it->second == kReading) {
      it->second = epoch_;
    }
  }
}

Result<void> SourceActivity::settle() {
  uint64_t sealed = 0;
  {
    std::lock_guard lock(mu_);
    if (listed_.empty()) return {};
    sealed = epoch_++;
  }
  // What was read before this point is on the disk once the sync returns.
  if (::syncfs(root_fd_) != 0) return fail_errno("sync the source filesystem");
  std::lock_guard lock(mu_);
  std::erase_if(listed_, [sealed](const auto& e) { return e.second <= sealed; });
  return rewrite_locked(false);
}

Result<void> SourceActivity::close() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (settler_.joinable()) settler_.join();
  if (::syncfs(root_fd_) != 0) return fail_errno("sync the source filesystem");
  std::lock_guard lock(mu_);
  listed_.clear();
  return rewrite_locked(true);
}

Result<void> SourceActivity::rewrite_locked(bool clean) {
  const Header header{kMagic, boot_, clean ? 1u : 0u};
  std::string content = bytes_of(&header, sizeof header);
  for (const auto& [id, epoch] : listed_) content += bytes_of(&id, sizeof id);
  // The rename is synced too: ids appended to the new file must not vanish with it.
  BKP_TRY_VOID(write_file_atomic(base_, content, Durability::kSync));
  BKP_TRY_VOID(fsync_dir(std::string(parent_of(base_))));
  fd_.reset(::open(base_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  if (!fd_) return fail_errno("open " + base_);
  size_ = content.size();
  return {};
}

void SourceActivity::settler(std::chrono::milliseconds every) {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, every, [this] { return stopping_; })) {
    lock.unlock();
    if (auto settled = settle(); !settled) log::warn("{}: {}", base_, settled.error().message);
    lock.lock();
  }
}

}  // namespace bkp::fs
