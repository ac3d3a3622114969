// The change log's bookkeeping. Every method takes the one mutex briefly and does no I/O, so
// FUSE worker threads recording changes never wait on the shipper's disk or network work.
//
// Attr ops by path are coalesced: a directory that gains 1000 files gets 1000 Attr records,
// but only the newest survives in the log, the older ones become tombstones that take() skips.
#include "common/changes/change_log.h"

namespace bkp::changes {

uint64_t Batch::dirty_bytes() const {
  uint64_t total = 0;
  for (const auto& f : files) total += f.extents.total_bytes();
  return total;
}

namespace {
bool is_path_attr(const wire::Op& op) { return op.kind == wire::OpKind::kAttr && op.id == 0; }
// A superseded Attr is marked by this kind value, which no peer ever sends.
constexpr auto kTombstone = static_cast<wire::OpKind>(0);
}  // namespace

// Forgets supersedable Attrs at path and below ("a" covers "a" and "a/...", not "ab").
void ChangeLog::forget_attrs_under(const std::string& path) {
  if (path.empty()) {
    attr_index_.clear();
    return;
  }
  attr_index_.erase(path);
  std::string prefix = path + '/';
  auto it = attr_index_.lower_bound(prefix);
  while (it != attr_index_.end() && it->first.compare(0, prefix.size(), prefix) == 0) {
    it = attr_index_.erase(it);
  }
}

void ChangeLog::record(wire::Op op) {
  std::lock_guard lock(mu_);
  switch (op.kind) {
    case wire::OpKind::kRename:
      forget_attrs_under(op.path);
      forget_attrs_under(op.target);
      break;
    case wire::OpKind::kUnlink:
    case wire::OpKind::kRmdir:
      forget_attrs_under(op.path);
      break;
    default:
      break;
  }
  if (is_path_attr(op)) {
    auto [it, inserted] = attr_index_.try_emplace(op.path, ops_.size());
    if (!inserted) {
      ops_[it->second].kind = kTombstone;
      it->second = ops_.size();
    }
  }
  ops_.push_back(std::move(op));
  cv_.notify_one();
}

template <class F>
void ChangeLog::update_extents(FileChange& file, F&& change) {
  ranges_ -= file.extents.range_count();
  dirty_bytes_ -= file.extents.total_bytes();
  change(file.extents);
  ranges_ += file.extents.range_count();
  dirty_bytes_ += file.extents.total_bytes();
}

void ChangeLog::write(const FileRef& file, uint64_t offset, uint64_t length) {
  std::lock_guard lock(mu_);
  auto& change = files_[file.id];
  if (change.ref.id == 0) change.ref = file;
  update_extents(change, [&](ExtentMap& e) { e.add(offset, length); });
  cv_.notify_one();
}

void ChangeLog::attrs(const FileRef& file) {
  std::lock_guard lock(mu_);
  auto& change = files_[file.id];
  if (change.ref.id == 0) change.ref = file;
  change.attrs = true;
  cv_.notify_one();
}

void ChangeLog::truncate(const FileRef& file, uint64_t size) {
  std::lock_guard lock(mu_);
  wire::Op op;
  op.kind = wire::OpKind::kTruncate;
  op.id = file.id;
  op.size = size;
  ops_.push_back(std::move(op));
  auto& change = files_[file.id];
  if (change.ref.id == 0) change.ref = file;
  update_extents(change, [&](ExtentMap& e) { e.truncate(size); });
  change.attrs = true;
  cv_.notify_one();
}

Batch ChangeLog::take() {
  std::lock_guard lock(mu_);
  Batch batch;
  batch.number = next_number_++;
  batch.ops.reserve(ops_.size());
  for (auto& op : ops_) {
    if (op.kind != kTombstone) batch.ops.push_back(std::move(op));
  }
  batch.files.reserve(files_.size());
  for (auto& [id, change] : files_) batch.files.push_back(std::move(change));
  reset_locked();
  woken_ = false;
  return batch;
}

bool ChangeLog::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return woken_ || !ops_.empty() || !files_.empty(); });
  woken_ = false;
  return !ops_.empty() || !files_.empty();
}

void ChangeLog::wake() {
  std::lock_guard lock(mu_);
  woken_ = true;
  cv_.notify_all();
}

void ChangeLog::clear() {
  std::lock_guard lock(mu_);
  reset_locked();
}

void ChangeLog::reset_locked() {
  ops_.clear();
  attr_index_.clear();
  files_.clear();
  ranges_ = 0;
  dirty_bytes_ = 0;
}

LogStats ChangeLog::stats() const {
  std::lock_guard lock(mu_);
  return LogStats{ops_.size(), files_.size(), ranges_, dirty_bytes_};
}

}  // namespace bkp::changes
