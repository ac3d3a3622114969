// SendProgress / ReceiveProgress / StreamNames (see transfer_progress.h).
#include "common/changes/transfer_progress.h"

#include <algorithm>

namespace bkp::changes {
namespace {

constexpr size_t kMaxNames = 1 << 16;

uint64_t minus(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

}  // namespace

void StreamNames::add(const wire::Op& op) {
  using wire::OpKind;
  if (op.kind == OpKind::kRename || op.kind == OpKind::kUnlink || op.kind == OpKind::kRmdir) {
    names_.clear();
    return;
  }
  if (op.id == 0 || (op.kind != wire::OpKind::kCreate && op.kind != wire::OpKind::kLink)) return;
  if (names_.size() >= kMaxNames) return;
  names_.insert_or_assign(op.id, op.path);
}

const std::string& StreamNames::name(uint64_t id) const {
  static const std::string kNone;
  auto it = names_.find(id);
  return it == names_.end() ? kNone : it->second;
}

void SendProgress::batch(const Batch& b, std::string phase) {
  for (const auto& op : b.ops) names_.add(op);
  batch_bytes_ = b.dirty_bytes();
  batch_sent_ = 0;
  batch_ops_ = b.ops.size();
  batch_files_ = b.files.size();
  files_started_ = 0;
  in_batch_ = true;
  if (!phase.empty()) meter_->begin(std::move(phase));
  update();
}

void SendProgress::file(const FileRef& ref, const std::string& name) {
  ++files_started_;
  meter_->set_file(name.empty() ? names_.name(ref.id) : name);
}

void SendProgress::sent(uint64_t bytes) {
  moved_ += bytes;
  batch_sent_ += bytes;
  update();
}

void SendProgress::acked() {
  in_batch_ = false;
  update();
}

void SendProgress::interrupted() {
  in_batch_ = false;
  meter_->interrupt();
}

void SendProgress::update() {
  LogStats s = log_.stats();
  progress::Sample sample;
  sample.moved = moved_;
  sample.pending_bytes = s.dirty_bytes;
  sample.pending_ops = s.ops;
  sample.pending_files = s.files;
  if (in_batch_) {
    sample.pending_bytes += minus(batch_bytes_, batch_sent_);
    sample.pending_ops += batch_ops_;  // until the ack: 100% means durable downstream
    sample.pending_files += std::max<uint64_t>(minus(batch_files_, files_started_), 1);
  }
  meter_->update(sample);
}

Result<UniqueFd> ProgressSource::open_file(const FileRef& file) {
  auto fd = inner_.open_file(file);
  if (fd) progress_.file(file, "");
  return fd;
}

void ProgressSource::sent(const FileRef& file, uint64_t bytes) {
  (void)file;
  progress_.sent(bytes);
}

void ReceiveProgress::status(const wire::NodeStatus& s) {
  status_bytes_ = s.pending_bytes;
  status_ops_ = s.pending_ops;
  status_files_ = s.pending_files;
  if (!s.current_file.empty()) meter_->set_file(s.current_file);
  update();
}

void ReceiveProgress::op(const wire::Op& op) {
  names_.add(op);
  ++batch_ops_;
}

void ReceiveProgress::applied(uint64_t id, uint64_t bytes) {
  if (id != last_id_) {
    last_id_ = id;
    ++batch_files_;
    meter_->set_file(names_.name(id));  // "" rather than a stale name
  }
  moved_ += bytes;
  batch_bytes_ += bytes;
  update();
}

void ReceiveProgress::committed() {
  status_bytes_ = minus(status_bytes_, batch_bytes_);
  status_ops_ = minus(status_ops_, batch_ops_);
  status_files_ = minus(status_files_, batch_files_);
  batch_bytes_ = batch_ops_ = batch_files_ = 0;
  last_id_ = 0;
  update();
}

void ReceiveProgress::interrupted() {
  batch_bytes_ = batch_ops_ = batch_files_ = 0;
  status_bytes_ = status_ops_ = status_files_ = 0;
  last_id_ = 0;
  meter_->interrupt();
}

void ReceiveProgress::update() {
  progress::Sample sample;
  sample.moved = moved_;
  sample.pending_bytes = minus(status_bytes_, batch_bytes_);
  sample.pending_ops = minus(status_ops_, batch_ops_);
  sample.pending_files = minus(status_files_, batch_files_);
  meter_->update(sample);
}

}  // namespace bkp::changes
