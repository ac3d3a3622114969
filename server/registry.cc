// Registrations: register, unregister, list, status, startup (see registry.h).
//
// register is ordered so that nothing is stored unless the node answered: validate, reserve the
// node (address, port, path: a concurrent duplicate fails at once), connect and attach (5 s
// connect timeout), learn the volume's name from the node's Hello and reserve the volume's key,
// then store the registration durably, and only then start the link on the live connection and
// the schedule. unregister runs the other way: unschedule (cancelling a run in progress), stop the
// link (closing the stream), drop the registration, and with purge delete the catalog rows and
// the volume directory. The key stays reserved meanwhile, so a register of the same volume
// cannot interleave with either.
#include "server/registry.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/files.h"
#include "common/log.h"
#include "common/net/identity.h"
#include "common/path.h"
#include "common/unique_fd.h"
#include "server/cut.h"
#include "server/seed.h"
#include "server/snapshot.h"

namespace bkp::server {
namespace {

constexpr int64_t kMaxEverySeconds = 10LL * 366 * 86400;

ControlError internal(const Error& e) { return ControlError{Fault::kInternal, e.message}; }

// The busy key of a node being registered: "node 127.0.0.1:7701 /srv/app" (a volume key never
// has a space: host names cannot).
std::string node_key(const std::string& address, uint16_t port, const std::string& path) {
  return fmt::format("node {} {}", node_address(address, port), path);
}

}  // namespace

const char* drop_state_name(ReplicaDrop::State state) {
  switch (state) {
    case ReplicaDrop::State::kDone: return "done";
    case ReplicaDrop::State::kOffline: return "offline";
    case ReplicaDrop::State::kWaiting: return "waiting";
    case ReplicaDrop::State::kFailed: return "failed";
  }
  return "waiting";
}

const char* fault_code(Fault fault) {
  switch (fault) {
    case Fault::kBadRequest: return "bad_request";
    case Fault::kUnknownVolume: return "unknown_volume";
    case Fault::kDuplicate: return "duplicate";
    case Fault::kNodeUnreachable: return "node_unreachable";
    case Fault::kWrongPath: return "wrong_path";
    case Fault::kWrongIdentity: return "wrong_identity";
    case Fault::kNoSnapshot: return "no_snapshot";
    case Fault::kInternal: return "internal";
    case Fault::kUnknownPeer: return "unknown_peer";
  }
  return "internal";
}

Registry::~Registry() { stop(); }

Result<void> Registry::recover() {
  auto closed = catalog_.close_own_open_runs(wall_ms(), "interrupted (backupd stopped during the run)");
  if (!closed) return tl::unexpected(closed.error());
  if (*closed > 0) log::warn("closed {} run(s) interrupted by an earlier stop as failed", *closed);
  if (leases_) return {};  // each volume's snapshots are checked when it is served (serve())
  auto volumes = BKP_TRY(hub_.volumes_on_disk());
  for (const auto& [host, path] : volumes) reconcile_snapshots(host, path);
  return {};
}

void Registry::reconcile_snapshots(const std::string& host, const std::string& path) {
  const std::string name = host + ":" + path;
  const std::string cut_dir = hub_.volume_dir(host, path) + "/cut";
  auto store = hub_.archives(host, path);
  store->remove_partial();
  if (size_t n = remove_cut_leftovers(cut_dir); n > 0) {
    log::warn("volume {}: removed {} file(s) an interrupted run kept in {}", name, n, cut_dir);
  }
  auto stored = store->list();
  auto known = catalog_.snapshots(host, path, /*include_deleted=*/false);
  if (!stored || !known) {
    log::error("volume {}: checking snapshots: {}", name,
               !stored ? stored.error().message : known.error().message);
    return;
  }
  std::set<std::string> stored_ids, known_ids;
  for (const auto& a : *stored) stored_ids.insert(a.id);
  std::vector<std::string> missing;
  for (const auto& s : *known) {
    known_ids.insert(s.id);
    if (!stored_ids.contains(s.id)) missing.push_back(s.id);
  }
  if (!missing.empty()) {
    log::warn("volume {}: {} catalogued snapshot(s) missing in {}, marked deleted", name,
              missing.size(), store->where());
    if (auto m = catalog_.mark_deleted(host, path, missing, wall_ms()); !m) {
      log::error("volume {}: {}", name, m.error().message);
    }
  }
  for (const auto& a : *stored) {
    if (known_ids.contains(a.id)) continue;
    SnapshotRecord rec{a.id, static_cast<int64_t>(a.bytes), snapshot_id_ms(a.id).value_or(wall_ms()),
                       std::nullopt, std::nullopt};
    if (auto added = catalog_.add_snapshot(host, path, rec); !added) {
      log::error("volume {}: {}", name, added.error().message);
    } else {
      log::warn("volume {}: adopted snapshot {}.tgz found in {} but not in the catalog", name, a.id,
                store->where());
    }
  }
}

Result<void> Registry::start() {
  if (leases_) {
    leases_->start();  // serves what this server holds, now and as it gains more
    return {};
  }
  auto regs = BKP_TRY(catalog_.registrations());
  for (const auto& reg : regs) serve(reg.host, reg.path);
  return {};
}

void Registry::serve(const std::string& host, const std::string& path) {
  auto reg = catalog_.registration(host, path);
  if (!reg || !*reg) {
    log::error("volume {}:{}: {}", host, path, !reg ? reg.error().message : "not registered");
    return;
  }
  {
    std::lock_guard lock(mu_);
    if (entries_.contains((*reg)->key()) || seeding_.contains((*reg)->key())) return;
  }
  auto volume = hub_.volume(host, path);
  if (!volume) {
    log::error("registered volume {}: {} (not served)", (*reg)->key(), volume.error().message);
    return;
  }
  const int64_t now = wall_ms();
  if (leases_) {
    // Only now, with the lease: another server may be writing the volume's snapshots until
    // then, and checking the store would abort its upload. Taken over: a run its last server
    // left open ended with that server (a server handing a volume over records its runs
    // first, Scheduler::remove).
    reconcile_snapshots(host, path);
    auto closed = catalog_.close_others_open_runs(
        host, path, now, "interrupted (the backupd serving the volume stopped during the run)");
    if (!closed) {
      log::error("volume {}: {}", (*reg)->key(), closed.error().message);
    } else if (*closed > 0) {
      log::warn("volume {}: closed {} run(s) its last server left open as failed", (*reg)->key(),
                *closed);
    }
  }
  auto last = catalog_.last_run(host, path);
  std::optional<int64_t> last_start;
  if (last && *last) last_start = (*last)->started_at;
  const int64_t first = resume_time(**reg, last_start, now);
  log::info("volume {} registered: node at {}, every {} s, next run in {} s", (*reg)->key(),
            node_address((*reg)->address, (*reg)->port), (*reg)->every_seconds,
            (first - now + 999) / 1000);
  seed_and_start(**reg, std::move(*volume), first);
}

void Registry::seed_and_start(const Registration& reg, std::shared_ptr<Volume> volume,
                              int64_t first_run_ms) {
  auto snapshot = seed_candidate(*volume, catalog_);
  if (!snapshot) log::error("volume {}: {}", reg.key(), snapshot.error().message);
  if (!snapshot || !*snapshot) {
    start_volume(reg, std::move(volume), std::nullopt, first_run_ms);
    return;
  }
  auto seeding = std::make_unique<Seeding>();
  std::atomic<bool>& cancel = seeding->cancel;
  std::lock_guard lock(mu_);
  if (stopping_) return;
  // The thread runs without mu_ until start_volume takes it; stop_seeding joins it without mu_.
  seeding->thread = std::thread([this, reg, volume, snap = std::move(**snapshot), first_run_ms,
                                 &cancel] {
    const auto t0 = std::chrono::steady_clock::now();
    log::info("volume {}: mirror new here: seeding it from snapshot {} in {}", reg.key(), snap.id,
              volume->archives().where());
    auto seeded = seed_volume(*volume, hub_, snap, &cancel);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (cancel.load()) return;
    if (!seeded) {
      log::warn("volume {}: seeding from snapshot {}: {}; the node's reconcile sends the rest",
                reg.key(), snap.id, seeded.error().message);
    } else if (!*seeded) {
      log::info("volume {}: snapshot {} has no file ids; the node sends the volume", reg.key(),
                snap.id);
    } else {
      log::info("volume {}: mirror seeded from snapshot {} in {:.1f} s: {} entries, {} files, {} "
                "bytes ({} files without an id left to the node's reconcile)",
                reg.key(), snap.id, secs, (*seeded)->entries, (*seeded)->files, (*seeded)->bytes,
                (*seeded)->skipped);
    }
    start_volume(reg, volume, std::nullopt, first_run_ms);
  });
  seeding_[reg.key()] = std::move(seeding);
}

bool Registry::stop_seeding(const std::string& key) {
  std::unique_ptr<Seeding> seeding;
  {
    std::lock_guard lock(mu_);
    auto it = seeding_.find(key);
    if (it == seeding_.end()) return false;
    seeding = std::move(it->second);
    seeding_.erase(it);
  }
  seeding->cancel = true;
  seeding->thread.join();
  return true;
}

void Registry::unserve(const std::string& host, const std::string& path) {
  const bool seeded = stop_seeding(host + ":" + path);  // before entries_: it may start the volume
  std::optional<Entry> entry;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(host + ":" + path);
    if (it == entries_.end()) {
      if (seeded) hub_.close_volume(host, path);
      return;
    }
    entry = std::move(it->second);
    entries_.erase(it);
  }
  stop_entry(std::move(*entry));
  log::info("volume {}:{}: not served here any more", host, path);
}

void Registry::stop_entry(Entry entry) {
  scheduler_.remove(entry.reg.key());
  entry.link->stop();
  const Registration reg = entry.reg;
  entry = Entry{};  // with the Hub's, the last references to the volume: its descriptors close
  hub_.close_volume(reg.host, reg.path);
}

void Registry::start_volume(const Registration& reg, std::shared_ptr<Volume> volume,
                            std::optional<AttachedNode> first, int64_t first_run_ms) {
  count_past_snapshots(*volume);
  std::lock_guard lock(mu_);
  if (stopping_) return;  // stop() has already stopped every link it knows of
  auto pin = [this, host = reg.host, path = reg.path](const std::string& node_id) {
    if (auto stored = catalog_.set_node_id(host, path, node_id); !stored) {
      log::error("volume {}:{}: pin node identity {}: {}", host, path, node_id,
                 stored.error().message);
    }
  };
  auto link = std::make_shared<Link>(reg, volume, dialer_, pin);
  link->start(std::move(first));
  scheduler_.add(reg, volume, link, first_run_ms);
  entries_[reg.key()] = Entry{reg, std::move(volume), std::move(link)};
}

void Registry::count_past_snapshots(Volume& volume) {
  auto last = catalog_.last_snapshot_counter(volume.host(), volume.path());
  if (!last) {
    log::error("volume {}: {}", volume.name(), last.error().message);
    return;
  }
  std::lock_guard lock(volume.mu);
  if (!*last) return;
  const auto past = static_cast<uint64_t>(**last);
  // Equal on a mirror that has had a stream is this mirror unchanged since that snapshot.
  const bool fresh = volume.receiver->instance() == 0;
  if (volume.state.changes > past || (volume.state.changes == past && !fresh)) return;
  volume.state.changes = static_cast<uint64_t>(**last) + 1;
  if (auto saved = volume.save_state(); !saved) {
    log::error("volume {}: {}", volume.name(), saved.error().message);
  }
  log::info("volume {}: a mirror new here counts changes from {}, past its last snapshot's",
            volume.name(), volume.state.changes);
}

void Registry::stop() {
  std::map<std::string, Entry> entries;
  std::vector<std::string> seeding;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (int fd : attaching_) ::shutdown(fd, SHUT_RDWR);
    entries = entries_;
    for (const auto& [key, s] : seeding_) seeding.push_back(key);
  }
  for (const auto& key : seeding) stop_seeding(key);
  for (auto& [key, e] : entries) e.link->stop();
}

ControlResult<void> Registry::validate(const std::string& host, const std::string& path) {
  if (auto ok = validate_volume_host(host); !ok) return control_fail(Fault::kBadRequest, ok.error().message);
  if (auto ok = validate_volume_path(path); !ok) return control_fail(Fault::kBadRequest, ok.error().message);
  return {};
}

ControlResult<void> Registry::reserve(const std::string& key, std::optional<std::string> registered) {
  if (stopping_) return control_fail(Fault::kInternal, "backupd is shutting down");
  if (registered) return control_fail(Fault::kDuplicate, *registered);
  if (busy_.contains(key)) {
    return control_fail(Fault::kDuplicate, key + " is being registered or unregistered right now");
  }
  busy_.insert(key);
  return {};
}

ControlResult<VolumeView> Registry::register_volume(const std::string& address, int64_t port,
                                                    const std::string& path,
                                                    int64_t every_seconds,
                                                    const std::string& node_id, int64_t copies) {
  BKP_TRY_VOID(validate(address, path));
  BKP_TRY_VOID(validate_copies(copies));
  if (port < 1 || port > 65535) {
    return control_fail(Fault::kBadRequest, fmt::format("port {} is not in 1..65535", port));
  }
  if (every_seconds < 1 || every_seconds > kMaxEverySeconds) {
    return control_fail(Fault::kBadRequest,
                        fmt::format("every_seconds {} must be at least 1 (and at most {})",
                                    every_seconds, kMaxEverySeconds));
  }
  Registration reg{"", address, static_cast<uint16_t>(port), path, every_seconds, 0, "",
                   static_cast<int>(copies)};
  if (!node_id.empty()) {
    auto id = net::parse_id(node_id);
    if (!id) return control_fail(Fault::kBadRequest, "node_id: " + id.error().message);
    reg.node_id = *id;
  }
  const std::string node = node_key(address, reg.port, path);
  {
    std::lock_guard lock(mu_);
    std::optional<std::string> registered;
    for (const auto& [key, e] : entries_) {
      if (e.reg.address == address && e.reg.port == reg.port && e.reg.path == path) {
        registered = fmt::format("the node at {} serving {} is already registered as {}",
                                 node_address(address, reg.port), path, key);
      }
    }
    BKP_TRY_VOID(reserve(node, registered));
  }
  BusyKey release_node{*this, node};

  int attaching_fd = -1;  // this call's socket while the node is being asked
  auto attached = attach_node(reg, dialer_, [this, &attaching_fd](int fd) {
    std::lock_guard lock(mu_);
    if (fd >= 0) {
      attaching_.insert(fd);
      if (stopping_) ::shutdown(fd, SHUT_RDWR);
    } else {
      attaching_.erase(attaching_fd);
    }
    attaching_fd = fd;
  });
  if (attached) {
    std::lock_guard lock(mu_);
    attaching_.erase(attaching_fd);
  }
  if (!attached) {
    const Error& e = attached.error();
    log::warn("register {}: {}", node, e.message);
    Fault fault = e.code == ENOENT   ? Fault::kWrongPath
                  : e.code == EACCES ? Fault::kWrongIdentity
                                     : Fault::kNodeUnreachable;
    return control_fail(fault, e.message);
  }

  reg.host = attached->hello.name;
  reg.node_id = attached->node_id;
  if (auto ok = validate_volume_host(reg.host); !ok) {
    return control_fail(Fault::kBadRequest,
                        fmt::format("the node at {} calls itself '{}', which cannot name a volume "
                                    "({}); give it a host name with backupfs --host",
                                    node_address(address, reg.port), reg.host, ok.error().message));
  }
  const std::string key = reg.key();
  {
    std::lock_guard lock(mu_);
    std::optional<std::string> registered;
    if (auto it = entries_.find(key); it != entries_.end()) {
      registered = fmt::format("{} is already registered (node at {})", key,
                               node_address(it->second.reg.address, it->second.reg.port));
    }
    BKP_TRY_VOID(reserve(key, registered));
  }
  BusyKey release_key{*this, key};
  if (auto stored = catalog_.registration(reg.host, path); !stored || *stored) {
    if (!stored) return tl::unexpected(internal(stored.error()));
    return control_fail(Fault::kDuplicate, key + " is already registered");
  }

  reg.registered_at = wall_ms();
  auto volume = hub_.volume(reg.host, path);
  if (!volume) return tl::unexpected(internal(volume.error()));
  if (auto added = catalog_.add_registration(reg); !added) {
    if (added.error().code == EEXIST) return control_fail(Fault::kDuplicate, added.error().message);
    return tl::unexpected(internal(added.error()));
  }
  log::info("registered {}: node at {}, every {} s", key, node_address(address, reg.port),
            every_seconds);
  if (leases_ && !leases_->claim(reg.host, path)) {
    // It belongs on another live server, which takes its lease and dials the node at its next
    // round; the node connection made here closes.
    hub_.close_volume(reg.host, path);
    if (auto placed = placer_.place(reg); !placed) {
      log::error("register {}: placing its copies: {}", key, placed.error().message);
    }
    return remote_view(reg, leases_->owners()[key]);
  }
  start_volume(reg, std::move(*volume), std::move(*attached), reg.registered_at + every_seconds * 1000);
  if (auto placed = placer_.place(reg); !placed) {
    log::error("register {}: placing its copies: {} (retried in the background)", key,
               placed.error().message);
  }
  Entry entry;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      return control_fail(Fault::kInternal, "backupd is shutting down (the registration is stored)");
    }
    entry = it->second;
  }
  return view(entry);
}

ControlResult<Unregistered> Registry::unregister(const std::string& host, const std::string& path,
                                                 Purge purge_data) {
  const std::string name = BKP_TRY(resolve(host, path, Known::kRegisteredOrKept));
  const std::string key = name + ":" + path;
  const bool purging = purge_data == Purge::kYes;
  const bool seeding = stop_seeding(key);  // one cancelled before it starts the volume
  std::optional<Entry> entry;
  {
    std::lock_guard lock(mu_);
    if (busy_.contains(key)) {
      return control_fail(Fault::kUnknownVolume, key + " is being registered or unregistered right now");
    }
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      entry = std::move(it->second);
      entries_.erase(it);
    }
    busy_.insert(key);
  }
  BusyKey release{*this, key};

  if (seeding && !entry) {
    hub_.close_volume(name, path);
  } else if (!entry) {
    // Not registered: only a purge of what an earlier unregister kept makes sense.
    if (!purging) return control_fail(Fault::kUnknownVolume, key + " is not registered");
  } else {
    stop_entry(std::move(*entry));
  }
  if (auto removed = catalog_.remove_registration(name, path, purging); !removed) {
    return tl::unexpected(internal(removed.error()));
  }
  placer_.forget(key);
  log::info("unregistered {}{}", key, purging ? "" : " (snapshots and history kept)");
  Unregistered done{name, purging, "", {}};
  if (purging) done.deleted_dir = BKP_TRY(purge(name, path));
  done.replicas = BKP_TRY(drop_everywhere(name, path, purge_data));
  return done;
}

ControlResult<std::string> Registry::purge(const std::string& host, const std::string& path) {
  // The archives first: they may be kept elsewhere than the volume directory (a bucket).
  if (auto deleted = rotate_archives(*hub_.archives(host, path), 0); !deleted) {
    log::error("purge {}: {}", host + ":" + path, deleted.error().message);
    return tl::unexpected(internal(deleted.error().wrap("purge")));
  }
  std::string dir = hub_.volume_dir(host, path);
  UniqueFd parent(open((dir + "/..").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent) {
    if (errno == ENOENT) return dir;
    return tl::unexpected(internal(Error{errno, fmt::format("purge {}: {}", dir, std::strerror(errno))}));
  }
  std::string name = dir.substr(dir.rfind('/') + 1);
  if (auto removed = remove_tree_at(parent.get(), name, dir); !removed) {
    log::error("purge {}: {}", host + ":" + path, removed.error().message);
    return tl::unexpected(internal(removed.error().wrap("purge")));
  }
  log::info("purged {}: deleted {}", host + ":" + path, dir);
  return dir;
}

ControlResult<std::vector<ReplicaDrop>> Registry::drop_everywhere(const std::string& host,
                                                                 const std::string& path,
                                                                 Purge purge) {
  auto queued = drops_.queue(host, path, purge);
  if (!queued) return tl::unexpected(internal(queued.error().wrap("queue the replicas' drops")));
  hub_.wake_all();
  std::set<std::string> connected = hub_.connected_replicas();
  std::set<std::string> waiting;
  for (const auto& r : *queued) {
    if (connected.contains(r)) waiting.insert(r);
  }
  auto answers = drops_.wait(host, path, waiting, kDropWaitMs);
  std::vector<ReplicaDrop> out;
  for (const auto& r : *queued) {
    ReplicaDrop d{r, ReplicaDrop::State::kOffline, ""};
    if (auto it = answers.find(r); it != answers.end()) {
      if (!it->second) {
        d.state = ReplicaDrop::State::kDone;
      } else if (!it->second->error.empty()) {
        d.state = ReplicaDrop::State::kFailed;
        d.error = it->second->error;
      } else {
        d.state = ReplicaDrop::State::kWaiting;
      }
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<Registry::Entry> Registry::entries() {
  std::lock_guard lock(mu_);
  std::vector<Entry> out;
  for (auto& [key, e] : entries_) out.push_back(e);
  return out;
}

ControlResult<std::vector<VolumeView>> Registry::list() {
  std::vector<VolumeView> out;
  for (const auto& e : entries()) out.push_back(view(e));
  if (leases_) {
    // Every other registered volume, with the server that serves it.
    auto regs = catalog_.registrations();
    if (!regs) return tl::unexpected(internal(regs.error()));
    auto owners = leases_->owners();
    std::set<std::string> here;
    for (const auto& v : out) here.insert(v.reg.key());
    for (const auto& reg : *regs) {
      if (!here.contains(reg.key())) out.push_back(remote_view(reg, owners[reg.key()]));
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.reg.key() < b.reg.key(); });
  }
  return out;
}

ControlResult<std::vector<SnapshotRecord>> Registry::present_snapshots(const std::string& host,
                                                                     const std::string& path) {
  auto snaps = catalog_.snapshots(host, path, /*include_deleted=*/false);
  if (!snaps) return control_fail(Fault::kInternal, snaps.error().message);
  auto copies = catalog_.snapshot_copies(host, path);
  if (!copies) return control_fail(Fault::kInternal, copies.error().message);
  auto stored = hub_.archives(host, path)->list();
  if (!stored) return control_fail(Fault::kInternal, stored.error().message);
  std::map<std::string, uint64_t> sizes;
  for (const auto& a : *stored) sizes[a.id] = a.bytes;
  std::vector<SnapshotRecord> out;
  for (auto& s : *snaps) {
    auto size = sizes.find(s.id);
    if (size == sizes.end()) continue;
    s.bytes = static_cast<int64_t>(size->second);
    if (auto it = copies->find(s.id); it != copies->end()) s.copies = it->second;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<StatusView> Registry::status() {
  std::vector<StatusView> out;
  for (const auto& e : entries()) out.push_back(status_view(e));
  return out;
}

ControlResult<Registry::Entry> Registry::registered_entry(const std::string& host,
                                                        const std::string& path) {
  const std::string name = BKP_TRY(resolve(host, path, Known::kRegistered));
  std::lock_guard lock(mu_);
  if (auto it = entries_.find(name + ":" + path); it != entries_.end()) return it->second;
  return control_fail(Fault::kUnknownVolume, name + ":" + path + " is not registered");
}

ControlResult<StatusView> Registry::status(const std::string& host, const std::string& path) {
  return status_view(BKP_TRY(registered_entry(host, path)));
}

ControlResult<VerifyTarget> Registry::verify_target(const std::string& host,
                                                   const std::string& path) {
  Entry entry = BKP_TRY(registered_entry(host, path));
  return VerifyTarget{entry.reg, entry.volume, dialer_, hub_.placement(entry.reg.key())};
}

ControlResult<RunRecord> Registry::run_now(const std::string& host, const std::string& path) {
  const std::string name = BKP_TRY(resolve(host, path, Known::kRegistered));
  auto run = scheduler_.run_now(name + ":" + path, kRunNowTimeout);
  if (!run && run.error().code == ENOENT) {
    return control_fail(Fault::kUnknownVolume, name + ":" + path + " is not registered");
  }
  if (!run) return control_fail(Fault::kInternal, run.error().message);
  return std::move(*run);
}

CopyState mirror_state(const VolumeView& v) {
  if (!v.link.connected) return CopyState::kMissing;
  const auto& s = v.node_status;
  if (!s) return CopyState::kCurrent;
  return connected_copy_state(s->status.pending_ops, s->status.pending_bytes, s->status.oldest_ns,
                              false, wall_ms());
}

size_t current_copies(const VolumeView& v) {
  size_t n = mirror_state(v) == CopyState::kCurrent;
  for (const auto& r : v.replicas) n += r.state == CopyState::kCurrent;
  return n;
}

bool under_replicated(const VolumeView& v) {
  return current_copies(v) < static_cast<size_t>(v.copies_wanted);
}

std::optional<std::string> Registry::replication_note(const std::string& key) {
  std::optional<Entry> entry;
  {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) entry = it->second;
  }
  if (!entry) return std::nullopt;
  VolumeView v = view(*entry);
  if (!under_replicated(v)) return std::nullopt;
  std::vector<std::string> states{fmt::format("mirror {}", copy_state_name(mirror_state(v)))};
  for (const auto& r : v.replicas) {
    states.push_back(fmt::format("{} {}", r.lag.replica, copy_state_name(r.state)));
  }
  return fmt::format("under-replicated: {} of {} copies current ({})", current_copies(v),
                     v.copies_wanted, fmt::join(states, ", "));
}

StatusView Registry::status_view(const Entry& e) {
  StatusView s;
  s.volume = view(e);
  if (e.volume->ingest) s.ingest = e.volume->ingest->view();
  return s;
}

ControlResult<void> Registry::validate_copies(int64_t copies) {
  if (copies < 0 || copies > kMaxCopies) {
    return control_fail(Fault::kBadRequest,
                        fmt::format("copies {} must be 1 to {} (the mirror on backupd and the "
                                    "replicas), or 0 for the default",
                                    copies, kMaxCopies));
  }
  return {};
}

ControlResult<VolumeView> Registry::set_copies(const std::string& host, const std::string& path,
                                               int64_t copies) {
  BKP_TRY_VOID(validate_copies(copies));
  const std::string name = BKP_TRY(resolve(host, path, Known::kRegistered));
  const std::string key = name + ":" + path;
  auto set = catalog_.set_copies(name, path, static_cast<int>(copies));
  if (!set) return tl::unexpected(internal(set.error()));
  std::optional<Entry> entry;
  {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(key); *set && it != entries_.end()) {
      it->second.reg.copies = static_cast<int>(copies);
      entry = it->second;
    }
  }
  if (!entry) return control_fail(Fault::kUnknownVolume, key + " is not registered");
  log::info("volume {}: wants {} copies{}", key, placer_.wanted(entry->reg),
            copies == 0 ? " (the default)" : "");
  if (auto placed = placer_.place(entry->reg); !placed) return tl::unexpected(internal(placed.error()));
  return view(*entry);
}

VolumeView Registry::view(const Entry& e) {
  VolumeView v;
  v.reg = e.reg;
  v.copies_wanted = placer_.wanted(e.reg);
  v.replicas = hub_.replica_lags(e.volume->name());
  v.link = e.link->status();
  v.node_status = e.volume->node_status();
  if (auto last = catalog_.last_run(e.reg.host, e.reg.path); last) {
    v.last_run = *last;
  } else {
    log::error("list {}: {}", e.reg.key(), last.error().message);
  }
  v.next_run = scheduler_.next_run(e.reg.key());
  if (leases_) v.served_by = leases_->me();
  return v;
}

VolumeView Registry::remote_view(const Registration& reg, const std::string& owner) {
  VolumeView v;
  v.reg = reg;
  v.copies_wanted = placer_.wanted(reg);
  v.served_by = owner;
  v.served_here = false;
  if (auto last = catalog_.last_run(reg.host, reg.path); last) v.last_run = *last;
  return v;
}

ControlResult<std::string> Registry::resolve(const std::string& host, const std::string& path,
                                             Known known) {
  BKP_TRY_VOID(validate(host, path));
  std::vector<std::string> by_address;  // names of the volumes registered at address `host`
  {
    std::lock_guard lock(mu_);
    if (entries_.contains(host + ":" + path)) return host;
    if (seeding_.contains(host + ":" + path) && known == Known::kRegistered) {
      return control_fail(Fault::kUnknownVolume,
                          fmt::format("{}:{} is being seeded from its newest snapshot on this "
                                      "backupd; it is served here once that is done",
                                      host, path));
    }
    for (const auto& [key, e] : entries_) {
      if (e.reg.address == host && e.reg.path == path) by_address.push_back(e.reg.host);
    }
  }
  if (known == Known::kRegisteredOrKept) {
    auto kept = catalog_.has_volume(host, path);
    if (!kept) return tl::unexpected(internal(kept.error()));
    if (*kept) return host;
  }
  if (by_address.size() == 1) return by_address.front();
  if (by_address.empty() && leases_) {
    if (auto reg = catalog_.registration(host, path); reg && *reg) {
      const std::string owner = leases_->owners()[host + ":" + path];
      return control_fail(Fault::kUnknownVolume,
                          owner.empty() ? fmt::format("{}:{} is registered but no backupd serves it "
                                                      "right now (its lease is being taken over)",
                                                      host, path)
                                        : fmt::format("{}:{} is served by backupd {}: ask it", host,
                                                      path, owner));
    }
  }
  if (by_address.empty()) return control_fail(Fault::kUnknownVolume, host + ":" + path + " is not registered");
  return control_fail(Fault::kUnknownVolume,
                      fmt::format("{}:{} is not registered, and {} is the address of {} volumes "
                                  "with that path ({}): name one of them",
                                  host, path, host, by_address.size(),
                                  fmt::join(by_address, ", ")));
}

}  // namespace bkp::server
