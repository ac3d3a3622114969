// Registry: the registered volumes — what `bkptool register/unregister/list/status` change and
// show — and, for each, its link to the node and its place in the scheduler.
//
// A volume is registered by the address where backupd reaches its node and named by the node:
// the host name in the node's Hello (backupfs --host, default the machine's name). So two nodes
// behind one address are two volumes, and `bkptool history web1 /srv/app` means what an
// operator expects. A volume's key is (name, path); the same node (address, port, path) cannot
// be registered twice either, since two links would fight over it.
//
// A registration is stored only after the node has been reached and has confirmed it serves
// the path (so a typo never leaves a volume retrying forever), and its live connection is handed
// straight to the new link, so the baseline starts before `register` returns. At startup every
// stored registration gets its link (which connects in the background) and its schedule.
//
// Commands that name a volume take its name; as a convenience, a HOST that names no volume but
// is the registered address of exactly one volume with that path designates that volume
// (resolve()).
//
// Recovery (before start()): runs this backupd left open when killed are closed as failed
// "interrupted (backupd stopped during the run)"; in every volume directory (registered or
// kept), partial ".tmp-*" snapshots are deleted, catalog rows whose file is gone are marked
// deleted, and snapshot files the catalog does not know (written just before a crash) are
// adopted. Only registered volumes are opened (start()): a kept one holds no descriptor, and
// history, snapshots and restore read the catalog and its snapshot files directly. With leases
// (several servers on one catalog) a volume's snapshots are checked, and the runs another
// server left open closed, when this server starts serving it (serve()): before, its server
// may still be writing them.
//
// unregister closes the volume and queues a drop of it for every replica (server/drops.h): each
// closes its copy, and with purge deletes it. It waits a moment (kDropWaitMs) for the replicas
// connected now to answer, so the operator learns where the copy is gone and where it will go
// when a replica returns.
//
// Thread-safety: every method is safe from any thread (control sessions call them
// concurrently). Lock order: Registry::mu_ -> Scheduler's mutex (when a volume is scheduled);
// it is never held while calling the catalog, the hub, or a link's stop().
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "server/catalog.h"
#include "server/leases.h"
#include "server/drops.h"
#include "server/hub.h"
#include "server/link.h"
#include "server/placement.h"
#include "server/scheduler.h"

namespace bkp::server {

// Control protocol error codes (docs/PROTOCOL.md "Control").
// The longest a `run` request waits for its run (an archive of a large volume takes minutes).
constexpr auto kRunNowTimeout = std::chrono::hours(6);

enum class Fault {
  kBadRequest, kUnknownVolume, kDuplicate, kNodeUnreachable, kWrongPath, kNoSnapshot, kInternal,
  kWrongIdentity,  // the node presents another identity than --node-id, or refuses backupd's
  kUnknownPeer,    // a replica or operator identity that is not authorised
};
const char* fault_code(Fault fault);  // "bad_request", "unknown_volume", ...

struct ControlError {
  Fault fault = Fault::kInternal;
  std::string message;  // one sentence for a human
};

// Which volumes resolve() looks at by name.
enum class Known {
  kRegistered,         // registered now (status: only they move)
  kRegisteredOrKept,   // also those unregistered with their history and snapshots kept
};

// How long unregister waits for the connected replicas to answer their drop.
constexpr std::chrono::milliseconds kDropWaitMs{10000};

// Where one replica stands with an unregistered volume's drop.
struct ReplicaDrop {
  enum class State {
    kDone,     // closed (purge: deleted) on the replica
    kOffline,  // not connected: it gets the drop when it returns
    kWaiting,  // connected, no answer yet within kDropWaitMs: it gets to it after its batch
    kFailed,   // it answered that it could not (error); sent again at its next connection
  };
  std::string replica;
  State state = State::kWaiting;
  std::string error;
};
const char* drop_state_name(ReplicaDrop::State state);  // "done", "offline", ...

// What unregister did, for the operator's confirmation.
struct Unregistered {
  std::string name;          // the volume's name (its host)
  bool purged = false;
  std::string deleted_dir;   // purge: backupd's volume directory, now deleted
  std::vector<ReplicaDrop> replicas;  // by name
};

template <class T>
using ControlResult = tl::expected<T, ControlError>;

inline tl::unexpected<ControlError> control_fail(Fault fault, std::string message) {
  return tl::unexpected(ControlError{fault, std::move(message)});
}

// What `list` shows of one registered volume. Read without taking the volume's mutex, so it
// answers whatever holds the volume.
struct VolumeView {
  Registration reg;
  LinkStatus link;
  std::optional<NodeStatusSample> node_status;
  std::optional<RunRecord> last_run;
  std::optional<int64_t> next_run;
  int copies_wanted = 1;                // the mirror included (Placer::wanted)
  std::vector<ReplicaStatus> replicas;  // its placed copies, by replica name
  // With a shared catalog: the server serving it ("" nobody right now); nullopt otherwise.
  std::optional<std::string> served_by;
  bool served_here = true;  // false: another server's (link and copies unknown here)
};

// The mirror's copy: current while the link is up and the node has nothing pending.
CopyState mirror_state(const VolumeView& view);
// Copies holding everything the node delivered, the mirror included.
size_t current_copies(const VolumeView& view);
// Fewer current copies than wanted.
bool under_replicated(const VolumeView& view);

// What a verify needs of a registered volume (server/verify.h).
struct VerifyTarget {
  Registration reg;
  std::shared_ptr<Volume> volume;
  Dialer dialer;
  std::set<std::string> replicas;  // those its copies are placed on
};

// What `status` shows of one registered volume: the list view plus what moves right now.
struct StatusView {
  VolumeView volume;
  progress::View ingest;  // the node's stream into the mirror (active or the last)
};

class Registry {
 public:
  Registry(Hub& hub, Catalog& catalog, Scheduler& scheduler, Placer& placer, DropQueue& drops,
           Dialer dialer)
      : hub_(hub), catalog_(catalog), scheduler_(scheduler), placer_(placer), drops_(drops),
        dialer_(std::move(dialer)) {}
  ~Registry();  // stop()
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Startup recovery (see above). Errors are logged; only an unusable catalog fails.
  Result<void> recover();
  // Starts a link and a schedule for every stored registration; with leases (use_leases),
  // for those this server holds, as the keeper gains them.
  Result<void> start();
  // With a shared catalog: volumes are served by the holder of their lease (server/leases.h).
  // Set before start(); the keeper calls serve() and unserve().
  void use_leases(LeaseKeeper* keeper) { leases_ = keeper; }
  // Starts serving the registered volume here (its lease was gained); nothing if it is served.
  void serve(const std::string& host, const std::string& path);
  // Stops serving it here (its lease was lost or handed over); the registration stays.
  void unserve(const std::string& host, const std::string& path);
  // Stops every link (the scheduler is stopped by its owner first). Idempotent.
  void stop();

  // Attaches to the node at address:port, names the volume by the node's Hello and registers
  // it. bad_request for invalid arguments or a node name that is not a valid host name;
  // duplicate if that name and path, or that node (address, port, path), is registered.
  // node_id: the identity the node must present (wrong_identity otherwise); "" pins the one
  // it presents now (trust on first use, shown in the answer). copies: the copies wanted, the
  // mirror included, 1..kMaxCopies, or 0 for backupd's default; the replica copies are placed
  // before this returns (as many as connected replicators allow).
  ControlResult<VolumeView> register_volume(const std::string& address, int64_t port,
                                            const std::string& path, int64_t every_seconds,
                                            const std::string& node_id, int64_t copies = 0);
  // `set HOST PATH --copies N`: changes the copies wanted (0: the default) and places or drops
  // copies at once. host as for resolve(..., Known::kRegistered).
  ControlResult<VolumeView> set_copies(const std::string& host, const std::string& path,
                                       int64_t copies);
  // host: as for resolve(..., Known::kRegisteredOrKept). Stops the volume, closes it and has
  // every replica close its copy; with purge deletes its catalog rows, its directory, its archives and every
  // replica's copy. A volume only kept (unregistered earlier) can still be purged.
  ControlResult<Unregistered> unregister(const std::string& host, const std::string& path,
                                         Purge purge);
  ControlResult<std::vector<VolumeView>> list();
  // Status of every registered volume, by key.
  std::vector<StatusView> status();
  // Status of one, host as for resolve(..., Known::kRegistered): history kept after unregister
  // does not count, nothing moves for it.
  ControlResult<StatusView> status(const std::string& host, const std::string& path);
  // `run HOST PATH`: the volume's run, now, out of schedule (Scheduler::run_now), waited for
  // up to kRunNowTimeout; its record. host as for resolve(..., Known::kRegistered).
  ControlResult<RunRecord> run_now(const std::string& host, const std::string& path);
  // The name of the volume that `host` and `path` designate: `host` itself if a volume of
  // `known` has that name, else the name of the one registered volume whose address is `host`
  // with that path. bad_request for an invalid host or path; unknown_volume otherwise (also
  // when the address is that of several volumes with the path: the message names them).
  ControlResult<std::string> resolve(const std::string& host, const std::string& path, Known known);
  // For a run's record: "under-replicated: 1 of 3 copies current (mirror current, r1 missing,
  // r2 catching up)" when the registered volume `key` has fewer current copies than it wants,
  // else nullopt.
  std::optional<std::string> replication_note(const std::string& key);
  // What a verify of the registered volume needs; host as for resolve(..., Known::kRegistered).
  ControlResult<VerifyTarget> verify_target(const std::string& host, const std::string& path);
  // The volume's catalogued snapshots still in its ArchiveStore, newest first, each with its
  // stored size.
  ControlResult<std::vector<SnapshotRecord>> present_snapshots(const std::string& host,
                                                               const std::string& path);

  Hub& hub() { return hub_; }
  Catalog& catalog() { return catalog_; }

  // Restores served since start: count and snapshot bytes (stats.json).
  void note_restore(uint64_t bytes) {
    restores_.fetch_add(1);
    restored_bytes_.fetch_add(bytes);
  }
  uint64_t restores() const { return restores_.load(); }
  uint64_t restored_bytes() const { return restored_bytes_.load(); }

 private:
  struct Entry {
    Registration reg;
    std::shared_ptr<Volume> volume;
    std::shared_ptr<Link> link;
  };

  // A mirror new here being seeded from a snapshot (server/seed.h) before its volume starts.
  struct Seeding {
    std::atomic<bool> cancel{false};
    std::thread thread;  // seeds, then starts the volume unless cancelled
  };

  // Marks a key busy (the caller inserted it into busy_ under mu_) until destroyed. Keys are
  // volume keys ("web1:/srv/app") and, while `register` asks a node, node keys (node_key()).
  struct BusyKey {
    Registry& r;
    std::string key;
    ~BusyKey() {
      std::lock_guard lock(r.mu_);
      r.busy_.erase(key);
    }
  };

  ControlResult<void> validate(const std::string& host, const std::string& path);
  static ControlResult<void> validate_copies(int64_t copies);
  // Marks key busy (mu_ held): duplicate if `registered` (why: it is registered already) or if
  // the key is busy; internal while stopping.
  ControlResult<void> reserve(const std::string& key, std::optional<std::string> registered);
  void start_volume(const Registration& reg, std::shared_ptr<Volume> volume,
                    std::optional<AttachedNode> first, int64_t first_run_ms);
  // serve()'s end: seeds the mirror on a thread of its own first when it is new here and the
  // volume has a snapshot (a takeover), then starts the volume.
  void seed_and_start(const Registration& reg, std::shared_ptr<Volume> volume, int64_t first_run_ms);
  // Cancels and waits for the volume's seeding, if any; true if there was one.
  bool stop_seeding(const std::string& key);
  // A run writes only when the volume's change counter moved past the one its newest snapshot
  // was cut at (server/backup_run.h). A mirror made new on this server (a takeover from another
  // server, a purged directory) counts from 0 again, and could meet that number by chance: a
  // mirror that never had a stream, or whose counter is behind it, starts past it instead, so
  // its first run writes. (A mirror left from an earlier time here whose counter meets it
  // exactly is not told apart.)
  void count_past_snapshots(Volume& volume);
  // Deletes the volume's directory (closed already); returns its path.
  ControlResult<std::string> purge(const std::string& host, const std::string& path);
  // Queues the drop of the volume for every replica and waits for the connected ones.
  ControlResult<std::vector<ReplicaDrop>> drop_everywhere(const std::string& host,
                                                          const std::string& path, Purge purge);
  std::vector<Entry> entries();  // a copy, taken under mu_
  // The registered volume host and path designate (resolve(..., Known::kRegistered)), a copy.
  ControlResult<Entry> registered_entry(const std::string& host, const std::string& path);
  VolumeView view(const Entry& e);
  // A registered volume another server serves (with leases).
  VolumeView remote_view(const Registration& reg, const std::string& owner);
  // Stops the entry's schedule and link and closes its volume (taken out of entries_ already).
  void stop_entry(Entry entry);
  StatusView status_view(const Entry& e);
  void reconcile_snapshots(const std::string& host, const std::string& path);

  std::atomic<uint64_t> restores_{0}, restored_bytes_{0};
  Hub& hub_;
  Catalog& catalog_;
  Scheduler& scheduler_;
  Placer& placer_;
  DropQueue& drops_;
  const Dialer dialer_;
  LeaseKeeper* leases_ = nullptr;

  std::mutex mu_;
  // Guarded by mu_.
  bool stopping_ = false;
  std::map<std::string, Entry> entries_;  // by Registration::key()
  std::map<std::string, std::unique_ptr<Seeding>> seeding_;  // by key; until unserved or stopped
  std::set<std::string> busy_;            // keys being registered or unregistered right now
  std::set<int> attaching_;               // sockets of register calls waiting for a node
};

}  // namespace bkp::server
