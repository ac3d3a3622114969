// The Hub's bookkeeping (see hub.h).
//
// Baselines for replicas are scans of the mirror taken under the volume's mutex: the node session
// holds the same mutex while it applies a frame and records it into the replica logs, so a scan
// sees the mirror exactly between two recorded changes, and the stream's log (replaced by the
// scan) continues from that point. Data is not copied: the scan lists extents and the replica
// session reads the mirror when it ships them.
//
// A ResumePoint is saved and checked under the same mutex, so "the log is empty, nothing is in
// flight, and the mirror is at change count X" is one consistent cut: the replica holds exactly
// the mirror at X. After a restart, the same count and Receiver::at_commit() mean the mirror is
// still exactly that (the count only grows, and every frame applied counts). A baseline loaded
// into a stream drops its ResumePoint first: until the replica holds that baseline it is not
// current, whatever the count says (a baseline does not move it).
#include "server/hub.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "common/changes/scan.h"
#include "common/log.h"
#include "common/path.h"
#include "common/stream/sender.h"

namespace bkp::server {

std::vector<std::shared_ptr<ReplicaStream>> Replica::streams() {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<ReplicaStream>> out;
  out.reserve(streams_.size());
  for (auto& [name, stream] : streams_) out.push_back(stream);
  return out;
}

void Replica::record_error(const Error& e) {
  int64_t now_ms = wire::realtime_ns() / 1000000;
  std::lock_guard lock(mu_);
  last_error_ = ReplicaError{e.message, now_ms};
}

void Replica::clear_error() {
  std::lock_guard lock(mu_);
  last_error_.reset();
}

std::optional<ReplicaError> Replica::last_error() {
  std::lock_guard lock(mu_);
  return last_error_;
}

bool Replica::note_usage(const wire::Usage& usage, double rtt_ms, const std::string& identity) {
  std::lock_guard lock(mu_);
  usage_.restore_address = usage.restore_address;
  usage_.identity = identity;
  const bool first = !usage_.measured && usage.measured;
  usage_.rtt_ms = usage_.rtt_ms == 0 ? rtt_ms : usage_.rtt_ms + (rtt_ms - usage_.rtt_ms) / 4;
  if (usage.measured) {
    usage_.measured = true;
    usage_.stored_bytes = usage.stored_bytes;
    usage_.free_bytes = usage.free_bytes;
  }
  return first;
}

ReplicaUsage Replica::usage() {
  std::lock_guard lock(mu_);
  return usage_;
}

bool Replica::connected() {
  std::lock_guard lock(mu_);
  return connected_;
}

CopyState connected_copy_state(uint64_t pending_ops, uint64_t pending_bytes, int64_t oldest_ns,
                               bool baseline, int64_t now_ms) {
  const bool pending = pending_ops > 0 || pending_bytes > 0;
  if (baseline || (pending && lag_seconds(oldest_ns, now_ms) > kCurrentLagSeconds)) {
    return CopyState::kCatchingUp;
  }
  return CopyState::kCurrent;
}

const char* copy_state_name(CopyState state) {
  switch (state) {
    case CopyState::kCurrent: return "current";
    case CopyState::kCatchingUp: return "catching up";
    case CopyState::kMissing: return "missing";
  }
  return "missing";
}

Hub::~Hub() {
  for (auto& [name, v] : volumes_) {
    std::lock_guard lock(v->mu);
    v->sinks.clear();
  }
}

Result<std::vector<std::pair<std::string, std::string>>> Hub::volumes_on_disk() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path root = fs::path(state_dir_) / "volumes";
  std::vector<std::pair<std::string, std::string>> out;
  if (!fs::exists(root, ec) && !ec) return out;
  try {
    list_hosts(root, ec, out);
  } catch (const fs::filesystem_error& e) {
    return fail(e.code().value(), fmt::format("list {}: {}", root.string(), e.what()));
  }
  if (ec) return fail(ec.value(), fmt::format("list {}: {}", root.string(), ec.message()));
  return out;
}

void Hub::list_hosts(const std::filesystem::path& root, std::error_code& ec,
                     std::vector<std::pair<std::string, std::string>>& out) {
  namespace fs = std::filesystem;
  for (const auto& host_dir : fs::directory_iterator(root, ec)) {
    std::string host = host_dir.path().filename().string();
    std::error_code inner;
    if (!host_dir.is_directory(inner) || !validate_volume_host(host)) continue;
    for (const auto& vol_dir : fs::directory_iterator(host_dir.path(), inner)) {
      std::string escaped = vol_dir.path().filename().string();
      auto path = unescape_path(escaped);
      if (!vol_dir.is_directory(inner) || !path || !validate_volume_path(*path)) {
        log::warn("ignoring {}: not a volume directory", vol_dir.path().string());
        continue;
      }
      out.emplace_back(host, *path);
    }
  }
}

Result<void> validate_volume_host(std::string_view host) {
  auto ok = validate_host(host);
  if (ok) return ok;
  in6_addr addr{};
  std::string text(host);
  if (host.find(':') != std::string_view::npos && inet_pton(AF_INET6, text.c_str(), &addr) == 1) {
    return {};
  }
  return ok;
}

std::string Hub::volume_dir(const std::string& host, const std::string& path) const {
  return fmt::format("{}/volumes/{}/{}", state_dir_, host, escape_path(path));
}

std::unique_ptr<ArchiveStore> Hub::archives(const std::string& host, const std::string& path) const {
  if (make_store_) return make_store_(host, path);
  return std::make_unique<LocalArchiveStore>(volume_dir(host, path) + "/snapshots");
}

std::shared_ptr<Volume> Hub::find_volume(const std::string& host, const std::string& path) {
  std::lock_guard lock(mu_);
  auto it = volumes_.find(host + ":" + path);
  return it == volumes_.end() ? nullptr : it->second;
}

void Hub::close_volume(const std::string& host, const std::string& path) {
  std::shared_ptr<Volume> v;
  std::vector<std::shared_ptr<Replica>> replicas;
  {
    std::lock_guard lock(mu_);
    auto it = volumes_.find(host + ":" + path);
    if (it == volumes_.end()) return;
    v = it->second;
    volumes_.erase(it);
    for (auto& [name, r] : replicas_) replicas.push_back(r);
  }
  {
    std::lock_guard vlock(v->mu);
    v->sinks.clear();  // breaks the volume <-> stream cycles
  }
  for (auto& r : replicas) {
    std::lock_guard rlock(r->mu_);
    r->streams_.erase(v->name());
  }
  log::info("volume {} closed", v->name());
}

Result<std::shared_ptr<Volume>> Hub::volume(const std::string& host, const std::string& path) {
  std::shared_ptr<Volume> v;
  std::vector<std::shared_ptr<Replica>> replicas;
  {
    std::lock_guard lock(mu_);
    auto it = volumes_.find(host + ":" + path);
    if (it != volumes_.end()) return it->second;
    std::string dir = volume_dir(host, path);
    v = BKP_TRY(Volume::open(host, path, dir, archives(host, path), forward_budget_));
    log::info("volume {} opened (instance {:016x}, committed {})", v->name(),
              v->receiver->instance(), v->receiver->committed());
    volumes_.emplace(v->name(), v);
    for (auto& [name, r] : replicas_) {
      if (placed(v->name(), name)) replicas.push_back(r);
    }
  }
  show(v->ingest);
  for (auto& r : replicas) {
    auto res = ensure_stream(v, *r);
    if (!res) log::error("{}", res.error().message);
  }
  return v;
}

std::shared_ptr<Replica> Hub::find_replica(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = replicas_.find(name);
  return it == replicas_.end() ? nullptr : it->second;
}

Result<std::shared_ptr<Replica>> Hub::attach_replica(const std::string& name) {
  std::shared_ptr<Replica> r;
  {
    std::lock_guard lock(mu_);
    auto& slot = replicas_[name];
    if (!slot) slot = std::make_shared<Replica>(name);
    r = slot;
  }
  {
    std::lock_guard lock(r->mu_);
    if (r->connected_) return fail(EBUSY, fmt::format("replica {} is already connected", name));
    r->connected_ = true;
  }
  std::vector<std::shared_ptr<Volume>> volumes;
  {
    std::lock_guard lock(mu_);
    for (auto& [vname, v] : volumes_) {
      if (placed(vname, name)) volumes.push_back(v);
    }
  }
  for (auto& v : volumes) {
    auto res = ensure_stream(v, *r);
    if (!res) log::error("{}", res.error().message);  // the other volumes still replicate
  }
  replica_events_.notify();
  return r;
}

void Hub::detach_replica(Replica& replica) {
  {
    std::lock_guard lock(replica.mu_);
    replica.connected_ = false;
    replica.away_since_ms_ = wall_ms();
  }
  replica_events_.notify();
}

bool Hub::placed(const std::string& volume_name, const std::string& replica) {
  auto it = placed_.find(volume_name);
  return it != placed_.end() && it->second.contains(replica);
}

void Hub::set_placement(const std::string& volume_name, const std::set<std::string>& replicas) {
  std::shared_ptr<Volume> v;
  std::vector<std::shared_ptr<Replica>> add, drop;
  {
    std::lock_guard lock(mu_);
    if (replicas.empty()) {
      placed_.erase(volume_name);
    } else {
      placed_[volume_name] = replicas;
    }
    if (auto it = volumes_.find(volume_name); it != volumes_.end()) v = it->second;
    for (auto& [name, r] : replicas_) (replicas.contains(name) ? add : drop).push_back(r);
  }
  if (!v) return;
  for (auto& r : drop) drop_stream(*v, *r);
  for (auto& r : add) {
    auto res = ensure_stream(v, *r);
    if (!res) log::error("{}", res.error().message);
  }
}

std::set<std::string> Hub::placement(const std::string& volume_name) {
  std::lock_guard lock(mu_);
  auto it = placed_.find(volume_name);
  return it == placed_.end() ? std::set<std::string>{} : it->second;
}

std::vector<Hub::ReplicaInfo> Hub::replicas() {
  std::vector<std::shared_ptr<Replica>> known;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, r] : replicas_) known.push_back(r);
  }
  std::vector<ReplicaInfo> out;
  for (auto& r : known) {
    std::lock_guard lock(r->mu_);
    out.push_back(ReplicaInfo{r->name_, r->connected_, r->usage_,
                              r->connected_         ? 0
                              : r->away_since_ms_ ? r->away_since_ms_
                                                  : started_ms_});
  }
  return out;
}

void Hub::drop_stream(Volume& volume, Replica& replica) {
  bool dropped = false;
  {
    std::lock_guard vlock(volume.mu);
    dropped = volume.sinks.erase(replica.name()) > 0;
  }
  {
    std::lock_guard rlock(replica.mu_);
    replica.streams_.erase(volume.name());
  }
  if (dropped) log::info("replica {} no longer receives volume {}", replica.name(), volume.name());
}

std::set<std::string> Hub::connected_replicas() {
  std::vector<std::shared_ptr<Replica>> replicas;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, r] : replicas_) replicas.push_back(r);
  }
  std::set<std::string> out;
  for (auto& r : replicas) {
    std::lock_guard rlock(r->mu_);
    if (r->connected_) out.insert(r->name());
  }
  return out;
}

void Hub::wake_all() {
  std::lock_guard lock(mu_);
  for (auto& [name, r] : replicas_) r->notifier_->notify();
}

namespace {

// Replaces the stream's log with a scan of the mirror (Volume::mu held), ids from the Applier's
// index and ctimes the source's, reconciled with `have` when given (the caller logs that one,
// once narrowed). `what` names the scan in log lines and errors. Returns the entries kept.
Result<uint64_t> load_baseline(ReplicaStream& stream, const changes::Manifest* have,
                               const std::string& what) {
  changes::Applier& applier = *stream.volume->applier;
  auto identify = [&applier](int, const char*,
                             const struct stat& st) -> std::optional<changes::FileRef> {
    auto id = applier.id_of_inode(st.st_ino);
    if (!id) return std::nullopt;
    return changes::FileRef{*id, ""};
  };
  changes::ScanOptions options;
  options.have = have;
  options.ctime = [&applier](uint64_t id, const struct stat&) { return applier.source_ctime(id); };
  options.placeholders = &applier.placeholders();
  auto batch = BKP_TRY(changes::scan_tree(applier.tree_fd(), identify, options).map_error(
      [&](Error e) { return e.wrap(what); }));
  auto kept = static_cast<uint64_t>(std::count_if(
      batch.ops.begin(), batch.ops.end(),
      [](const wire::Op& op) { return op.kind == wire::OpKind::kKeep; }));
  if (have == nullptr) {
    log::info("{}: {} operations, {} files, {} bytes", what, batch.ops.size(), batch.files.size(),
              batch.dirty_bytes());
  }
  BKP_TRY_VOID(stream.volume->drop_resume_point(stream.replica).map_error(
      [&](Error e) { return e.wrap(what); }));
  stream.saved.reset();
  stream.log.replace(std::move(batch));
  stream.baseline = true;
  return kept;
}

// The replica's ResumePoint if the mirror still is what the replica was known to hold: the same
// change count, and the mirror exactly at its last commit (Volume::mu held). A batch whose first
// frames are Writes is noted too (Receiver::at_commit), so a mirror holding part of one never
// passes for its last commit.
std::optional<ResumePoint> resumable(Volume& v, const std::string& replica) {
  if (!v.receiver->at_commit()) return std::nullopt;
  auto point = v.resume_point(replica);
  if (!point) {
    log::warn("volume {}: {}", v.name(), point.error().message);
    return std::nullopt;
  }
  if (!*point || (*point)->instance == 0 || (*point)->changes != v.state.changes) {
    return std::nullopt;
  }
  return *point;
}

}  // namespace

Result<void> Hub::ensure_stream(const std::shared_ptr<Volume>& volume, Replica& replica) {
  std::lock_guard vlock(volume->mu);
  if (volume->sinks.contains(replica.name())) return {};
  std::optional<ResumePoint> resume = resumable(*volume, replica.name());
  auto stream = std::make_shared<ReplicaStream>(
      volume, replica.name(), resume ? resume->instance : stream::new_instance(), replica.notifier_,
      max_queued_ops_);
  if (resume) {
    stream->sender.resume_after(resume->committed);
    stream->saved = resume;
    log::info("replica {} resumes volume {} at batch {}, nothing to send", replica.name(),
              volume->name(), resume->committed);
  } else {
    BKP_TRY_VOID(load_baseline(
        *stream, nullptr, fmt::format("scan of {} for replica {}", volume->name(), replica.name())));
  }
  stream->meter = std::make_shared<progress::Meter>(volume->name() + " to " + replica.name());
  show(stream->meter);
  stream->progress.emplace(stream->meter, stream->log);
  volume->sinks[replica.name()] = stream;
  {
    std::lock_guard rlock(replica.mu_);
    replica.streams_[volume->name()] = stream;
  }
  replica.notifier_->notify();
  return {};
}

Result<std::optional<uint64_t>> Hub::rebaseline(ReplicaStream& stream,
                                                const changes::Manifest& have) {
  std::lock_guard vlock(stream.volume->mu);
  if (stream.volume->applier->syncing()) return std::optional<uint64_t>();
  return load_baseline(stream, &have, "reconcile of " + stream.volume->name());
}

Result<void> Hub::rescan_streams(Volume& volume) {
  for (auto& [name, stream] : volume.sinks) {
    BKP_TRY_VOID(load_baseline(*stream, nullptr,
                               fmt::format("scan of {} for replica {}", volume.name(), name)));
  }
  return {};
}

bool Hub::mirror_syncing(ReplicaStream& stream) {
  std::lock_guard vlock(stream.volume->mu);
  return stream.volume->applier->syncing();
}

void Hub::note_current(ReplicaStream& stream) {
  Volume& v = *stream.volume;
  std::unique_lock vlock(v.mu, std::try_to_lock);
  if (!vlock.owns_lock()) return;
  // Not once the volume forgot the stream (purge): its directory is about to go.
  auto it = v.sinks.find(stream.replica);
  if (it == v.sinks.end() || it->second.get() != &stream) return;
  if (v.in_batch() || stream.sender.in_flight() || !stream.log_empty()) return;
  ResumePoint point{stream.instance, stream.sender.committed(), v.state.changes};
  if (stream.saved == point) return;
  if (auto saved = v.save_resume_point(stream.replica, point); !saved) {
    log::warn("volume {}: replica {}: {}", v.name(), stream.replica, saved.error().message);
  }
  stream.saved = point;  // also after a failure: the next change tries again, not every pass
}

std::vector<ReplicaStatus> Hub::replica_lags(const std::string& volume_name) {
  std::vector<std::pair<std::string, std::shared_ptr<Replica>>> replicas;
  {
    std::lock_guard lock(mu_);
    auto it = placed_.find(volume_name);
    if (it == placed_.end()) return {};
    for (const auto& name : it->second) {
      auto r = replicas_.find(name);
      replicas.emplace_back(name, r == replicas_.end() ? nullptr : r->second);
    }
  }
  std::vector<ReplicaStatus> out;
  for (auto& [name, r] : replicas) {
    std::shared_ptr<ReplicaStream> s;
    ReplicaStatus status;
    bool connected = false;
    if (r) {
      std::lock_guard rlock(r->mu_);
      connected = r->connected_;
      status.last_error = r->last_error_;
      auto it = r->streams_.find(volume_name);
      if (it != r->streams_.end()) s = it->second;
    }
    status.lag = s ? s->lag() : ReplicaLag{};
    status.lag.replica = name;
    status.lag.connected = connected;
    if (connected && s) {
      const ReplicaLag& l = status.lag;
      status.state = connected_copy_state(l.pending_ops, l.pending_bytes + l.pending_files,
                                          l.oldest_ns, l.baseline, wall_ms());
    }
    out.push_back(std::move(status));
  }
  return out;
}

void Hub::show(const std::shared_ptr<progress::Meter>& meter) {
  if (display_) display_->add(meter);
}

std::vector<std::shared_ptr<Volume>> Hub::all_volumes() {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Volume>> out;
  out.reserve(volumes_.size());
  for (auto& [name, v] : volumes_) out.push_back(v);
  return out;
}

}  // namespace bkp::server
