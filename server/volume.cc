// A volume's files on backupd: the mirror and ids/ (through the Applier), the `state` file that
// tells a reconnecting node what is durable, and the `stats` counters.
//
// `state` is written only after the Applier's commit has synced the mirror, and itself through a
// temporary file, fdatasync and rename: after a crash it holds either the old or the new commit,
// and both are safe (an old one only makes the node resend a batch the mirror already has, which
// the Applier tolerates). `state` also carries the change counter the scheduler compares with
// the catalog's last snapshot: it only grows, so "equal" means "nothing applied since that cut"
// (a resent batch or a baseline counts as a change: the snapshot may then repeat its
// predecessor, never miss a change). `stats` is informational and skips the sync. Fan-out into the replica
// logs only appends ranges and operations in memory, so it never waits on a replica.
#include "server/volume.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>
#include <fstream>

#include "common/log.h"
#include "common/path.h"

namespace bkp::server {
namespace {

constexpr size_t kMaxRunKeys = 1u << 20;  // ~40 MiB of set at most per volume

enum class Durability { kSync, kNoSync };

Result<void> write_file_atomic(const std::string& path, const std::string& content,
                               Durability durability) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return fail_errno("create " + tmp);
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (durability == Durability::kSync && fdatasync(fd.get()) != 0) {
    return fail_errno("fdatasync " + tmp);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail_errno("rename " + tmp);
  return {};
}

// Reads "key value" lines; unknown keys are ignored, a missing file gives the defaults.
Result<VolumeState> read_state(const std::string& path) {
  VolumeState st;
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return st;
    return fail_errno("read " + path);
  }
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "instance") st.instance = value;
    if (key == "committed") st.committed = value;
    if (key == "changes") st.changes = value;
    if (key == "run_bytes") st.run_bytes = value;
    if (key == "run_files") st.run_files = value;
  }
  return st;
}

}  // namespace

void Notifier::notify() {
  std::lock_guard lock(mu_);
  flag_ = true;
  cv_.notify_all();
}

bool Notifier::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return flag_; });
  return std::exchange(flag_, false);
}

Result<std::shared_ptr<Volume>> Volume::open(const std::string& host, const std::string& path,
                                             const std::string& dir) {
  std::shared_ptr<Volume> v(new Volume(host, path, dir));
  auto applier = changes::Applier::open(dir + "/mirror", dir + "/ids");
  if (!applier) return tl::unexpected(applier.error().wrap("volume " + v->name()));
  v->applier = std::move(*applier);
  v->ingest = std::make_shared<progress::Meter>(v->name());
  v->state = BKP_TRY(read_state(dir + "/state"));
  return v;
}

void Volume::fan_out(const wire::Op& op) {
  for (auto& [name, sink] : sinks) {
    mark_behind(*sink);
    if (op.kind == wire::OpKind::kTruncate) {
      sink->log.truncate(changes::FileRef{op.id, ""}, op.size);
    } else if (op.kind == wire::OpKind::kAttr && op.id != 0) {
      sink->log.attrs(changes::FileRef{op.id, ""});
    } else {
      sink->log.record(op);
      // The replica learns a new file's times from the mirror (the Create op has none).
      if (op.kind == wire::OpKind::kCreate) sink->log.attrs(changes::FileRef{op.id, ""});
    }
  }
}

void Volume::fan_out_write(uint64_t id, uint64_t offset, uint64_t length) {
  for (auto& [name, sink] : sinks) {
    mark_behind(*sink);
    sink->log.write(changes::FileRef{id, ""}, offset, length);
  }
}

void ReplicaStream::set_pending(changes::Batch batch, int64_t since_ns) {
  pending_ops = batch.ops.size();
  pending_files = batch.files.size();
  pending_bytes = batch.dirty_bytes();
  pending_since_ns = since_ns;
  pending = std::move(batch);
}

void ReplicaStream::clear_pending() {
  pending.reset();
  baseline = false;
  pending_since_ns = 0;
  pending_ops = pending_files = pending_bytes = 0;
}

ReplicaLag ReplicaStream::lag() const {
  ReplicaLag lag;
  changes::LogStats st = log.stats();
  lag.pending_ops = st.ops + pending_ops;
  lag.pending_files = st.files + pending_files;
  lag.pending_bytes = st.dirty_bytes + pending_bytes;
  int64_t a = log_since_ns, b = pending_since_ns;
  lag.oldest_ns = a == 0 ? b : b == 0 ? a : std::min(a, b);
  if (meter) lag.transfer = meter->view();
  return lag;
}

void Volume::mark_behind(ReplicaStream& sink) {
  int64_t none = 0;
  sink.log_since_ns.compare_exchange_strong(none, wire::realtime_ns());
}

void Volume::notify_sinks() {
  for (auto& [name, sink] : sinks) sink->notifier->notify();
}

Result<void> Volume::save_state() {
  return write_file_atomic(dir_ + "/state",
                           fmt::format("instance {}\ncommitted {}\nchanges {}\nrun_bytes {}\n"
                                       "run_files {}\n",
                                       state.instance, state.committed, state.changes,
                                       state.run_bytes, state.run_files),
                           Durability::kSync);
}

void Volume::count_op(const wire::Op& op) {
  state.changes += 1;
  uint64_t key = 0;
  switch (op.kind) {
    case wire::OpKind::kCreate:
    case wire::OpKind::kTruncate:
      key = op.id;
      break;
    case wire::OpKind::kAttr:
    case wire::OpKind::kSetXattr:
    case wire::OpKind::kRemoveXattr:
      key = op.id;  // by path: a directory's metadata, not a file change worth counting
      break;
    case wire::OpKind::kLink:
      key = op.id != 0 ? op.id : std::hash<std::string>{}(op.path);
      break;
    case wire::OpKind::kMknod:
    case wire::OpKind::kSymlink:
    case wire::OpKind::kUnlink:
    case wire::OpKind::kRename:
      key = std::hash<std::string>{}(op.path);
      break;
    default:
      break;
  }
  if (key == 0) return;
  if (run_keys_.size() >= kMaxRunKeys) {
    state.run_files += 1;
  } else if (run_keys_.insert(key).second) {
    state.run_files += 1;
  }
}

void Volume::count_write(uint64_t id, uint64_t length) {
  state.changes += 1;
  state.run_bytes += length;
  if (run_keys_.size() >= kMaxRunKeys) {
    state.run_files += 1;
  } else if (run_keys_.insert(id).second) {
    state.run_files += 1;
  }
}

std::pair<uint64_t, uint64_t> Volume::take_run_counts() {
  std::pair<uint64_t, uint64_t> out{state.run_bytes, state.run_files};
  state.run_bytes = 0;
  state.run_files = 0;
  run_keys_.clear();
  return out;
}

void Volume::set_node_status(const wire::NodeStatus& status, int64_t now_ms) {
  std::lock_guard lock(status_mu_);
  status_ = NodeStatusSample{status, now_ms};
}

std::optional<NodeStatusSample> Volume::node_status() const {
  std::lock_guard lock(status_mu_);
  return status_;
}

Result<void> Volume::save_stats() {
  return write_file_atomic(dir_ + "/stats",
                           fmt::format("wire_bytes {}\ndata_bytes {}\nops {}\nbatches {}\n",
                                       stats.wire_bytes, stats.data_bytes, stats.ops, stats.batches),
                           Durability::kNoSync);
}

std::optional<std::string> unescape_path(std::string_view escaped) {
  std::string out = "/";
  for (size_t i = 0; i < escaped.size(); ++i) {
    char c = escaped[i];
    if (c == '-') {
      out += '/';
    } else if (c == '\\') {
      if (i + 4 > escaped.size() || escaped[i + 1] != 'x') return std::nullopt;
      unsigned value = 0;
      auto r = std::from_chars(escaped.data() + i + 2, escaped.data() + i + 4, value, 16);
      if (r.ec != std::errc() || r.ptr != escaped.data() + i + 4) return std::nullopt;
      out += static_cast<char>(value);
      i += 3;
    } else {
      out += c;
    }
  }
  if (escape_path(out) != escaped) return std::nullopt;  // not a canonical escape
  return out;
}

}  // namespace bkp::server
