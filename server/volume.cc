// A volume's files on backupd: the mirror and ids/ (through the Applier), the node stream's
// `state` and `position` (stream::Receiver: what is durable, and how far into the next batch the
// mirror is), and the `stats` counters.
//
// `state` also carries the change counter the scheduler compares with
// the catalog's last snapshot: it only grows, so "equal" means "nothing applied since that cut"
// (a resent batch or a baseline counts as a change: the snapshot may then repeat its
// predecessor, never miss a change). `stats` is informational and skips the sync. Fan-out into the replica
// logs only appends ranges and operations in memory, so it never waits on a replica.
//
// replicas/<name>.resume holds a replica's ResumePoint as "key value" lines (the suffix keeps
// write_file_atomic's ".tmp" files from ever being taken for a replica's record).
#include "server/volume.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>

#include "common/files.h"
#include "common/log.h"
#include "common/path.h"

namespace bkp::server {
namespace {

constexpr size_t kMaxRunKeys = 1u << 20;  // ~40 MiB of set at most per volume

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
                                             const std::string& dir,
                                             std::unique_ptr<ArchiveStore> archives,
                                             std::shared_ptr<ForwardBudget> budget) {
  std::shared_ptr<Volume> v(new Volume(host, path, dir, std::move(budget)));
  v->archives_ = archives ? std::move(archives) : std::make_unique<LocalArchiveStore>(dir + "/snapshots");
  auto applier = changes::Applier::open(dir, "mirror", "ids");
  if (!applier) return tl::unexpected(applier.error().wrap("volume " + v->name()));
  if (auto made = make_dirs(dir + "/replicas"); !made) {
    return tl::unexpected(made.error().wrap("volume " + v->name()));
  }
  v->applier = std::move(*applier);
  v->ingest = std::make_shared<progress::Meter>(v->name());
  auto receiver = stream::Receiver::open(dir, *v->applier);
  if (!receiver) return tl::unexpected(receiver.error().wrap("volume " + v->name()));
  v->receiver = std::move(*receiver);
  auto& c = v->receiver->counters();
  v->state.changes = c["changes"];
  v->state.run_bytes = c["run_bytes"];
  v->state.run_files = c["run_files"];
  return v;
}

void Volume::fan_out(const wire::Op& op) {
  if (op.kind == wire::OpKind::kTruncate || op.kind == wire::OpKind::kPunch ||
      op.kind == wire::OpKind::kCreate) {
    forward.drop_file(op.id);
  }
  for (auto& [name, sink] : sinks) {
    if (op.kind == wire::OpKind::kTruncate) {
      sink->log.truncate(changes::FileRef{op.id, ""}, op.size);
    } else if (op.kind == wire::OpKind::kPunch) {
      sink->log.punch(changes::FileRef{op.id, ""}, op.offset, op.size);
    } else if (op.kind == wire::OpKind::kAllocate) {
      sink->log.allocate(changes::FileRef{op.id, ""}, op.flags, op.offset, op.size);
    } else if (op.kind == wire::OpKind::kAttr && op.id != 0) {
      sink->log.attrs(changes::FileRef{op.id, ""});
    } else {
      sink->log.record(op);
      // The replica learns a new file's times from the mirror (the Create op has none).
      if (op.kind == wire::OpKind::kCreate) sink->log.attrs(changes::FileRef{op.id, ""});
    }
  }
}

void Volume::fan_out_write(const wire::Write& w, uint8_t flags, std::span<const uint8_t> body) {
  forward.put(w.id, w.offset, flags, static_cast<uint32_t>(w.data.size()), body,
              static_cast<unsigned>(sinks.size()));
  for (auto& [name, sink] : sinks) {
    sink->log.write(changes::FileRef{w.id, ""}, w.offset, w.data.size());
  }
}

ReplicaLag ReplicaStream::lag() const {
  ReplicaLag lag;
  stream::Lag l = sender.lag();
  lag.pending_ops = l.ops;
  lag.pending_files = l.files;
  lag.pending_bytes = l.bytes;
  lag.oldest_ns = l.oldest_ns;
  lag.baseline = baseline;
  if (meter) lag.transfer = meter->view();
  return lag;
}

bool ReplicaStream::log_empty() const {
  changes::LogStats st = log.stats();
  return st.ops == 0 && st.files == 0;
}

void Volume::notify_sinks() {
  for (auto& [name, sink] : sinks) sink->notifier->notify();
}

void Volume::counters_to_receiver() {
  auto& c = receiver->counters();
  c["changes"] = state.changes;
  c["run_bytes"] = state.run_bytes;
  c["run_files"] = state.run_files;
}

Result<uint64_t> Volume::commit(const wire::Commit& c) {
  counters_to_receiver();
  return receiver->commit(c);
}

Result<void> Volume::save_state() {
  counters_to_receiver();
  return receiver->save();
}

namespace {

// Whether key is new to keys (a file not counted yet); past kMaxRunKeys every key is.
bool first_touch(std::unordered_set<uint64_t>& keys, uint64_t key) {
  if (keys.size() >= kMaxRunKeys) return true;
  return keys.insert(key).second;
}

}  // namespace

void Volume::count(uint64_t key, uint64_t bytes) {
  state.run_bytes += bytes;
  if (key != 0 && first_touch(run_keys_, key)) state.run_files += 1;
  if (after_cut_) {
    after_cut_->bytes += bytes;
    if (key != 0 && first_touch(after_cut_->keys, key)) after_cut_->files += 1;
  }
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
  count(key, 0);
}

void Volume::count_write(uint64_t id, uint64_t length) {
  state.changes += 1;
  count(id, length);
}

std::pair<uint64_t, uint64_t> Volume::take_run_counts() {
  std::pair<uint64_t, uint64_t> out{state.run_bytes, state.run_files};
  state.run_bytes = 0;
  state.run_files = 0;
  run_keys_.clear();
  return out;
}

std::pair<uint64_t, uint64_t> Volume::begin_run_counts() {
  after_cut_.emplace();
  return {state.run_bytes, state.run_files};
}

void Volume::end_run_counts(RunEnd end) {
  if (end == RunEnd::kSucceeded && after_cut_) {
    state.run_bytes = after_cut_->bytes;
    state.run_files = after_cut_->files;
    run_keys_ = std::move(after_cut_->keys);
  }
  after_cut_.reset();
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
  ForwardCache::Stats f = forward.stats();
  return write_file_atomic(
      dir_ + "/stats",
      fmt::format("wire_bytes {}\ndata_bytes {}\nops {}\nbatches {}\nforwarded_bytes {}\n"
                  "reread_bytes {}\n",
                  stats.wire_bytes, stats.data_bytes, stats.ops, stats.batches, f.hit_bytes,
                  f.miss_bytes),
      Durability::kNoSync);
}

std::string Volume::resume_point_path(const std::string& replica) const {
  return dir_ + "/replicas/" + replica + ".resume";
}

Result<std::optional<ResumePoint>> Volume::resume_point(const std::string& replica) const {
  auto values = BKP_TRY(read_key_values(resume_point_path(replica)));
  if (values.empty()) return std::optional<ResumePoint>();
  return ResumePoint{values["instance"], values["committed"], values["changes"]};
}

Result<void> Volume::save_resume_point(const std::string& replica, const ResumePoint& p) {
  return write_file_atomic(
      resume_point_path(replica),
      format_key_values({{"instance", p.instance}, {"committed", p.committed}, {"changes", p.changes}}),
      Durability::kNoSync);
}

Result<void> Volume::drop_resume_point(const std::string& replica) {
  std::string path = resume_point_path(replica);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return fail_errno("remove " + path);
  return {};
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
