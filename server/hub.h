// Hub: backupd's tables of volumes and replicas, and the wiring between them.
//
// A volume is open (its mirror, ids and stream position: descriptors) only while registered:
// the Registry opens it with volume() and closes it with close_volume(); one kept on disk after
// unregister is not opened, even at startup (volumes_on_disk() only lists it).
//
// Every open volume has, for every replica backupd knows, one ReplicaStream: a change log the node
// session feeds, which starts as a baseline scan of the mirror. A replica is known from its
// first connection until backupd stops; while it is away its logs keep coalescing, so it catches
// up when it returns, from the position it reports (a restarted replicator keeps its position on
// disk). A replica that has no usable state for a stream says so (always the case for a stream
// it has not seen), and the stream's log is replaced by a scan of the mirror reconciled with the
// replica's manifest (rebaseline): what the replica already holds goes as kKeep, so it costs the
// replica only what it lacks. A new stream's log starts as a plain scan, so its lag shows the
// whole volume until that reconcile.
//
// Across a backupd restart a stream survives only as its ResumePoint (volume.h), saved whenever
// the replica holds everything the mirror does (note_current). If the mirror is still exactly
// what it was then — the same change count, and no frame of an unfinished batch in it
// (Receiver::at_commit) — the restarted backupd gives the stream its old instance and an empty
// log, and the replica, whose Position agrees, is sent nothing. Otherwise (the mirror changed
// while backupd was down or before the replica came back, or the replica's Position disagrees)
// the stream is new, or rebaselined, as above: the restart costs a reconcile.
//
// A volume streams only to the replicas its copies are placed on (server/placement.h decides and
// calls set_placement): each of those the Hub knows gets a ReplicaStream, and a replica that is
// no longer placed loses its stream. Each replica also carries what it last reported of its
// disk (Usage) and the smoothed round trip of those reports, which placement weighs.
//
// Each replica also keeps the error its last session ended with (the replicator's Error frame,
// e.g. its disk is full, or backupd's side failing for it), so `bkptool status` shows why a
// replica is behind next to its lag; the error stays until the replica acknowledges a batch
// again.
//
// Thread-safety: all methods are safe to call concurrently. Lock order: see volume.h.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "common/changes/scan.h"
#include "common/wire/messages.h"
#include "server/manifest_asks.h"
#include "server/volume.h"

namespace bkp::server {

// Why a replica's session last ended in error, and when.
struct ReplicaError {
  std::string message;
  int64_t at_ms = 0;  // CLOCK_REALTIME
};

// What backupd knows of a replica's disk and distance, for placement (placement.h).
struct ReplicaUsage {
  bool measured = false;  // a Usage with figures arrived (on any connection since start)
  uint64_t stored_bytes = 0;
  uint64_t free_bytes = 0;
  double rtt_ms = 0;      // round trip of UsageRequest -> Usage, smoothed (1/4 per sample)
  // Where it serves its snapshot copies to bkptool ("" when it does not), and the identity it
  // presented to backupd, which its restore service presents too (bkptool pins it).
  std::string restore_address;
  std::string identity;
};

class Replica {
 public:
  explicit Replica(std::string name) : name_(std::move(name)) {}
  const std::string& name() const { return name_; }

  // This replica's streams, ordered by volume name.
  std::vector<std::shared_ptr<ReplicaStream>> streams();
  const std::shared_ptr<Notifier>& notifier() const { return notifier_; }

  // Records the error a session of this replica ended with, stamped now (replaces the previous
  // one). Called by the replica session when it ends with an error that is not a plain
  // disconnect or a shutdown.
  void record_error(const Error& e);
  // The replica acknowledged a batch: whatever went wrong before is over. Called by the replica
  // session after each acknowledged batch; cheap when there is no error.
  void clear_error();
  std::optional<ReplicaError> last_error();

  // Records a Usage answer that took rtt_ms. True if it is the first measured one since start.
  bool note_usage(const wire::Usage& usage, double rtt_ms, const std::string& identity);
  ReplicaUsage usage();
  bool connected();
  // A verify's questions for this replica's session (manifest_asks.h); post() then notify.
  ManifestAsks& asks() { return asks_; }

 private:
  friend class Hub;
  const std::string name_;
  const std::shared_ptr<Notifier> notifier_ = std::make_shared<Notifier>();
  ManifestAsks asks_;
  std::mutex mu_;
  // Guarded by mu_.
  bool connected_ = false;
  std::map<std::string, std::shared_ptr<ReplicaStream>> streams_;  // by volume name
  std::optional<ReplicaError> last_error_;
  ReplicaUsage usage_;
  int64_t away_since_ms_ = 0;  // CLOCK_REALTIME of its last detach (0: never detached)
};

// The state of one copy of a volume: current (connected and keeping up: nothing it lacks is
// older than kCurrentLagSeconds, and no baseline under way), catching up (connected, behind
// more than that, or receiving a baseline), missing (away, or never seen since start). The
// slack is what keeps a copy that follows a volume written without pause from never being
// current.
enum class CopyState { kCurrent, kCatchingUp, kMissing };
constexpr double kCurrentLagSeconds = 5;
// The state of a connected copy that lacks what `lag` says (pending counts, oldest change).
CopyState connected_copy_state(uint64_t pending_ops, uint64_t pending_bytes, int64_t oldest_ns,
                               bool baseline, int64_t now_ms);
const char* copy_state_name(CopyState state);  // "current", "catching up", "missing"

// What `status` shows of one replica for one volume.
struct ReplicaStatus {
  ReplicaLag lag;  // with the replica's name and whether it is connected
  std::optional<ReplicaError> last_error;
  CopyState state = CopyState::kMissing;
};

// A volume's host as an operator registers it: a host name (validate_host, which also admits
// IPv4 literals) or an IPv6 literal without brackets ("::1"). EINVAL otherwise.
Result<void> validate_volume_host(std::string_view host);

class Hub {
 public:
  // display, if given, shows the progress of every volume's ingest and replica stream.
  // max_queued_ops bounds each replica stream's log (changes::ChangeLog); forward_bytes all
  // volumes' forward caches together (ForwardBudget).
  explicit Hub(std::string state_dir, progress::Display* display = nullptr,
               size_t max_queued_ops = changes::kMaxQueuedOps,
               size_t forward_bytes = kForwardBudgetBytes)
      : state_dir_(std::move(state_dir)), display_(display), max_queued_ops_(max_queued_ops),
        forward_budget_(std::make_shared<ForwardBudget>(forward_bytes)) {}
  ~Hub();  // breaks the volume <-> stream reference cycles

  // The (host, path) of every volume directory under state_dir/volumes, registered or kept
  // after unregister, without opening any: a volume is opened only while registered (volume()),
  // so a kept one holds no descriptor. Directories that name no volume are logged and skipped;
  // only an unreadable volumes directory is an error.
  Result<std::vector<std::pair<std::string, std::string>>> volumes_on_disk();

  // The volume, opened or created on first use. A new volume gets a stream for every known
  // replica. host and path must already be validated.
  Result<std::shared_ptr<Volume>> volume(const std::string& host, const std::string& path);
  // The volume if it is open (loaded at startup or created since); null otherwise.
  std::shared_ptr<Volume> find_volume(const std::string& host, const std::string& path);
  // STATE/volumes/<host>/<escaped path>, whether or not it exists.
  std::string volume_dir(const std::string& host, const std::string& path) const;
  // Where a volume's snapshot archives are kept. By default its directory's snapshots/;
  // backupd sets another maker when `snapshot_store` names a bucket. Set before any volume opens.
  using ArchiveStoreMaker =
      std::function<std::unique_ptr<ArchiveStore>(const std::string& host, const std::string& path)>;
  void set_archive_stores(ArchiveStoreMaker maker) { make_store_ = std::move(maker); }
  // The store of any volume, open or not (registered, or kept after unregister).
  std::unique_ptr<ArchiveStore> archives(const std::string& host, const std::string& path) const;
  // Closes the volume (unregister): drops it from the table and from every replica's streams.
  // Sessions still holding it finish with it, and its descriptors close with the last of them.
  // Its files stay; deleting them (purge) is the caller's job, and so is telling the replicas.
  void close_volume(const std::string& host, const std::string& path);
  std::vector<std::shared_ptr<Volume>> all_volumes();
  // The lag on the volume named `volume_name` (Volume::name()) of every replica its copies are
  // placed on, its copy's state and last error, by replica name (a placed replica never seen
  // since start is missing). Takes no volume mutex, so it answers while anything holds the
  // volume (a baseline scan for another replica, a snapshot taking its cut).
  std::vector<ReplicaStatus> replica_lags(const std::string& volume_name);

  // Places the volume's copies on `replicas` (names): each of them the Hub knows gets a stream
  // (a baseline, or resumed), each other replica loses its stream of the volume. Kept for a
  // volume not open yet, which gets its streams when it opens.
  void set_placement(const std::string& volume_name, const std::set<std::string>& replicas);
  std::set<std::string> placement(const std::string& volume_name);
  // Every replica known since start, by name, whether it is connected, and its usage.
  struct ReplicaInfo {
    std::string name;
    bool connected = false;
    ReplicaUsage usage;
    int64_t away_since_ms = 0;  // while not connected: since when (its detach, or started_ms())
  };
  std::vector<ReplicaInfo> replicas();
  // When this Hub was made (backupd's start): a replica not seen since is away since then.
  int64_t started_ms() const { return started_ms_; }
  // Notified when a replica attaches, detaches, or first reports its usage: placement's cue.
  Notifier& replica_events() { return replica_events_; }

  // Marks the replica connected (EBUSY if it already is), then makes sure every volume has a
  // stream for it.
  Result<std::shared_ptr<Replica>> attach_replica(const std::string& name);
  // The replica of that name if it connected since start; null otherwise.
  std::shared_ptr<Replica> find_replica(const std::string& name);
  void detach_replica(Replica& replica);
  // The names of the replicas connected now.
  std::set<std::string> connected_replicas();

  // Wakes every replica session (on shutdown).
  void wake_all();

  // Replaces the stream's log with a scan of the mirror reconciled with what the replica holds
  // (the replica needs a baseline; have: its manifest, common/stream/reconcile.h). Returns how
  // many entries the replica already holds as they are; nullopt, changing nothing, while the
  // mirror is inside a node's baseline (mirror_syncing()): a scan then would hold entries that
  // baseline's end prunes from the mirror, and the replica would never learn of it.
  Result<std::optional<uint64_t>> rebaseline(ReplicaStream& stream, const changes::Manifest& have);
  // True between a node baseline's sync-begin and sync-end on the stream's mirror.
  bool mirror_syncing(ReplicaStream& stream);
  // The mirror changed under the streams without being fanned out (seeded from a snapshot,
  // server/seed.h): each of the volume's streams is given a scan of it, as a new stream is
  // (Volume::mu held). A replica that has not begun the stream yet reconciles as usual.
  Result<void> rescan_streams(Volume& volume);
  // Called by the replica's session when the stream has nothing to send and the replica's
  // position was taken on this connection: if the replica now holds exactly the mirror (nothing
  // in flight, the log empty, the mirror between batches), saves its ResumePoint unless it is
  // the one saved already. Skipped while the volume's mutex is busy (a scan, a snapshot taking its
  // cut): the session calls again at its next idle pass. Session thread only.
  void note_current(ReplicaStream& stream);

 private:
  // Builds the replica's stream for the volume, unless the volume already has one: resumed from
  // the replica's ResumePoint if the mirror is still where it was, else from a baseline scan.
  // Idempotent, so racing callers are harmless.
  Result<void> ensure_stream(const std::shared_ptr<Volume>& volume, Replica& replica);
  // Removes the replica's stream of the volume, if any.
  void drop_stream(Volume& volume, Replica& replica);
  bool placed(const std::string& volume_name, const std::string& replica);  // mu_ held
  // volumes_on_disk's walk of root (STATE/volumes), adding to out.
  void list_hosts(const std::filesystem::path& root, std::error_code& ec,
                  std::vector<std::pair<std::string, std::string>>& out);
  void show(const std::shared_ptr<progress::Meter>& meter);

  const std::string state_dir_;
  progress::Display* const display_;
  const size_t max_queued_ops_;
  const std::shared_ptr<ForwardBudget> forward_budget_;
  ArchiveStoreMaker make_store_;  // null: LocalArchiveStore in the volume directory
  const int64_t started_ms_ = wall_ms();
  std::mutex mu_;
  // Guarded by mu_.
  std::map<std::string, std::shared_ptr<Volume>> volumes_;  // by Volume::name()
  std::map<std::string, std::shared_ptr<Replica>> replicas_;
  std::map<std::string, std::set<std::string>> placed_;  // volume name -> replica names
  Notifier replica_events_;
};

}  // namespace bkp::server
