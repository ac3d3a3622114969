// The change log's bookkeeping. Every method takes the one mutex briefly and does no I/O, so
// FUSE worker threads recording changes never wait on the shipper's disk or network work.
//
// Attr ops by path are coalesced: a directory that gains 1000 files gets 1000 Attr records,
// but only the newest survives in the log, the older ones become tombstones that take() skips.
#include "common/changes/change_log.h"

#include <algorithm>

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

void ChangeLog::dated_locked() {
  if (since_ns_ == 0) since_ns_ = wire::realtime_ns();
}

void ChangeLog::record(wire::Op op) {
  std::lock_guard lock(mu_);
  dated_locked();
  if (!full_locked()) push_locked(std::move(op));
  cv_.notify_one();
}

// Recorded operations only: a scan put in by replace() is the reconcile itself, however long.
bool ChangeLog::full_locked() {
  uint64_t end = ops_base_ + ops_.size();
  if (!overflowed_ && end - std::max(ops_base_, scanned_until_) < max_ops_) return false;
  if (!overflowed_) {
    dropped_ops_ = live_ops_;
    ops_base_ = end;
    ops_.clear();
    live_ops_ = 0;
    attr_index_.clear();
    overflowed_ = true;
  }
  ++dropped_ops_;
  return true;
}

void ChangeLog::push_locked(wire::Op op) {
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
    uint64_t index = ops_base_ + ops_.size();
    auto [it, inserted] = attr_index_.try_emplace(op.path, index);
    if (!inserted) {
      ops_[it->second - ops_base_].kind = kTombstone;
      --live_ops_;
      it->second = index;
    }
  }
  ops_.push_back(std::move(op));
  ++live_ops_;
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
  dated_locked();
  auto& change = files_[file.id];
  if (change.ref.id == 0) change.ref = file;
  update_extents(change, [&](ExtentMap& e) { e.add(offset, length); });
  if (change.from_scan) change.written.add(offset, length);
  cv_.notify_one();
}

void ChangeLog::attrs(const FileRef& file) {
  std::lock_guard lock(mu_);
  dated_locked();
  auto& change = files_[file.id];
  if (change.ref.id == 0) change.ref = file;
  change.attrs = true;
  cv_.notify_one();
}

template <class F>
void ChangeLog::clip(const FileRef& file, wire::Op op, F&& change) {
  std::lock_guard lock(mu_);
  dated_locked();
  op.id = file.id;
  if (!full_locked()) push_locked(std::move(op));
  auto& f = files_[file.id];
  if (f.ref.id == 0) f.ref = file;
  update_extents(f, change);
  change(f.written);
  f.attrs = true;
  cv_.notify_one();
}

void ChangeLog::truncate(const FileRef& file, uint64_t size) {
  wire::Op op;
  op.kind = wire::OpKind::kTruncate;
  op.size = size;
  clip(file, std::move(op), [size](ExtentMap& e) { e.truncate(size); });
}

void ChangeLog::punch(const FileRef& file, uint64_t offset, uint64_t length) {
  wire::Op op;
  op.kind = wire::OpKind::kPunch;
  op.offset = offset;
  op.size = length;
  clip(file, std::move(op), [offset, length](ExtentMap& e) { e.remove(offset, length); });
}

void ChangeLog::allocate(const FileRef& file, uint32_t flags, uint64_t offset, uint64_t length) {
  wire::Op op;
  op.kind = wire::OpKind::kAllocate;
  op.flags = flags;
  op.offset = offset;
  op.size = length;
  const bool zeroes = flags & wire::kAllocateZeroRange;
  clip(file, std::move(op), [=](ExtentMap& e) {
    if (zeroes) e.remove(offset, length);
  });
}

bool ChangeLog::overflowed() const {
  std::lock_guard lock(mu_);
  return overflowed_;
}

Batch ChangeLog::take(const Limits& limits) {
  std::lock_guard lock(mu_);
  Batch batch;
  if (overflowed_) return batch;
  batch.since_ns = since_ns_;
  while (!ops_.empty() && batch.ops.size() < limits.max_ops) {
    wire::Op& op = ops_.front();
    if (op.kind != kTombstone) {
      --live_ops_;
      if (is_path_attr(op)) {  // once taken, it can no longer be superseded
        auto it = attr_index_.find(op.path);
        if (it != attr_index_.end() && it->second == ops_base_) attr_index_.erase(it);
      }
      batch.ops.push_back(std::move(op));
    }
    ops_.pop_front();
    ++ops_base_;
  }
  if (live_ops_ == 0) {
    uint64_t budget = limits.max_bytes;
    size_t items = batch.ops.size();
    for (auto it = files_.begin(); it != files_.end() && items < limits.max_ops;) {
      FileChange& change = it->second;
      uint64_t bytes = change.extents.total_bytes();
      if (bytes <= budget) {  // the whole file (attribute-only changes cost no budget)
        budget -= bytes;
        ++items;
        ranges_ -= change.extents.range_count();
        dirty_bytes_ -= bytes;
        batch.files.push_back(std::move(change));
        it = files_.erase(it);
        continue;
      }
      if (budget > 0) {  // the file's first budget bytes; its attributes go with every part
        FileChange part;
        part.ref = change.ref;
        part.attrs = change.attrs;
        part.from_scan = change.from_scan;  // what the shipper reads it for (shipper.cc)
        update_extents(change, [&](ExtentMap& e) { part.extents = e.take_front(budget); });
        batch.files.push_back(std::move(part));
        budget = 0;
        ++items;
      }
      ++it;
    }
  }
  if (ops_.empty() && files_.empty()) reset_locked();
  woken_ = false;
  return batch;
}

void ChangeLog::replace(Batch batch) {
  std::lock_guard lock(mu_);
  // What the application did to regular files since the previous scan is kept, after this one:
  // the scan holds the namespace lock but not data writes, so a file it looked at (and found
  // current on the receiver) may have been written or truncated since. Namespace operations
  // cannot have happened meanwhile; the scan stands for them, and for the previous scan.
  std::vector<wire::Op> by_id;
  for (size_t i = 0; i < ops_.size(); ++i) {
    wire::Op& op = ops_[i];
    bool file_op = op.kind == wire::OpKind::kTruncate ||
                   (op.id != 0 && (op.kind == wire::OpKind::kSetXattr ||
                                   op.kind == wire::OpKind::kRemoveXattr));
    if (file_op && ops_base_ + i >= scanned_until_) by_id.push_back(std::move(op));
  }
  auto recorded = std::move(files_);
  reset_locked();
  since_ns_ = batch.since_ns != 0 ? batch.since_ns : wire::realtime_ns();
  for (auto& op : batch.ops) push_locked(std::move(op));
  for (auto& op : by_id) push_locked(std::move(op));
  scanned_until_ = ops_base_ + ops_.size();
  for (auto& change : batch.files) {
    change.from_scan = true;
    files_[change.ref.id] = std::move(change);
  }
  for (auto& [id, old] : recorded) {
    const ExtentMap& app = old.from_scan ? old.written : old.extents;
    if (app.empty() && !(old.attrs && !old.from_scan)) continue;
    FileChange& f = files_[id];
    if (f.ref.id == 0) f.ref = old.ref;
    f.extents.merge(app);
    if (f.from_scan) f.written.merge(app);
    f.attrs = true;
  }
  for (const auto& [id, change] : files_) {
    ranges_ += change.extents.range_count();
    dirty_bytes_ += change.extents.total_bytes();
  }
  cv_.notify_one();
}

bool ChangeLog::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  auto any = [&] { return overflowed_ || !ops_.empty() || !files_.empty(); };
  cv_.wait_for(lock, timeout, [&] { return woken_ || any(); });
  woken_ = false;
  return any();
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
  ops_base_ += ops_.size();
  ops_.clear();
  live_ops_ = 0;
  attr_index_.clear();
  files_.clear();
  ranges_ = 0;
  dirty_bytes_ = 0;
  since_ns_ = 0;
  overflowed_ = false;
  dropped_ops_ = 0;
}

int64_t ChangeLog::since_ns() const {
  std::lock_guard lock(mu_);
  return since_ns_;
}

std::vector<FileRef> ChangeLog::verifying() const {
  std::lock_guard lock(mu_);
  std::vector<FileRef> out;
  for (const auto& [id, change] : files_) {
    if (change.verify) out.push_back(change.ref);
  }
  return out;
}

bool ChangeLog::narrow(uint64_t id, ExtentMap differing) {
  std::lock_guard lock(mu_);
  auto it = files_.find(id);
  if (it == files_.end() || !it->second.verify) return false;
  FileChange& f = it->second;
  differing.merge(f.written);
  update_extents(f, [&](ExtentMap& e) { e = std::move(differing); });
  f.verify = false;
  return true;
}

void ChangeLog::begin_write(uint64_t id) {
  std::lock_guard lock(mu_);
  ++writing_[id];
}

void ChangeLog::end_write(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = writing_.find(id);
  if (it != writing_.end() && --it->second == 0) writing_.erase(it);
}

bool ChangeLog::pending(uint64_t id) const {
  std::lock_guard lock(mu_);
  return files_.contains(id) || writing_.contains(id);
}

LogStats ChangeLog::stats() const {
  std::lock_guard lock(mu_);
  return LogStats{live_ops_ + dropped_ops_, files_.size(), ranges_, dirty_bytes_};
}

}  // namespace bkp::changes
