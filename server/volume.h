// Volume: one (host, path) pair on backupd — its mirror, its durable state, its counters, and the
// per-replica change logs its stream is fanned out into.
//
// Lock order (never take an earlier lock while holding a later one):
//   Hub::mu_  ->  Volume::mu  ->  Replica::mu
// Volume::mu is held by the node session while it applies one frame (and records it into every
// sink), by a baseline scan of the mirror for a replica, and by a scheduled run while it takes
// its cut (at a batch boundary: in_batch() false; a walk of the mirror's names, server/cut.h),
// which is what makes a snapshot one consistent cut; the archive itself is written without it.
// It is never held across network I/O, so a slow replica cannot slow a node.
// Catalog's mutex, Volume's status mutex and a Cut's mutex are leaves: taken under Volume::mu,
// never the reverse.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>

#include "common/changes/applier.h"
#include "common/changes/change_log.h"
#include "common/changes/transfer_progress.h"
#include "common/progress.h"
#include "common/result.h"
#include "common/stream/receiver.h"
#include "common/stream/sender.h"
#include "common/wire/messages.h"
#include "server/archive_store.h"
#include "server/forward_cache.h"

namespace bkp::server {

// The change counters the scheduler compares against the catalog, saved in the node stream's
// `state` file (stream::Receiver) with every commit.
struct VolumeState {
  uint64_t changes = 0;    // Op and Write frames ever applied; only grows
  uint64_t run_bytes = 0;  // Write bytes applied since the previous scheduled run
  uint64_t run_files = 0;  // distinct files touched since the previous scheduled run
};

// The latest NodeStatus of the volume's node, with the time it arrived.
struct NodeStatusSample {
  wire::NodeStatus status;
  int64_t received_ms = 0;  // CLOCK_REALTIME
};

// Counters since backupd started, written to `stats` after each commit.
struct VolumeStats {
  uint64_t wire_bytes = 0;  // bytes of frames received on node streams, headers included
  uint64_t data_bytes = 0;  // raw bytes of Write frames
  uint64_t ops = 0;
  uint64_t batches = 0;
};

// Where a replica stood the last time it held the whole mirror (Hub::note_current): its stream's
// instance, the batch it had committed, and the mirror's VolumeState::changes then. Kept in
// DIR/replicas/<replica>.resume so that a restarted backupd can resume the stream instead of
// reconciling (Hub::ensure_stream).
struct ResumePoint {
  uint64_t instance = 0;
  uint64_t committed = 0;
  uint64_t changes = 0;
  bool operator==(const ResumePoint&) const = default;
};

// Wakes a replica session when one of its logs gained something.
class Notifier {
 public:
  void notify();
  // True if notified since the last wait; returns after at most timeout otherwise.
  bool wait(std::chrono::milliseconds timeout);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool flag_ = false;
};

class Volume;

// What one replica still lacks of a volume (Hub::replica_lags), readable without the volume's
// mutex.
struct ReplicaLag {
  std::string replica;
  bool connected = false;
  uint64_t pending_ops = 0;    // in its log plus the batch being sent
  uint64_t pending_files = 0;
  uint64_t pending_bytes = 0;
  int64_t oldest_ns = 0;       // CLOCK_REALTIME of the oldest change it lacks; 0 if none
  bool baseline = false;       // it is receiving a baseline (or reconcile)
  progress::View transfer;     // the running episode (active) or the last one
};

// What one replica still needs of one volume. `log` is fed by the node session (under the
// volume's mutex) and replaced by a scan of the mirror when the replica needs a baseline;
// `sender` is driven only by the replica's session thread, of which there is at most one.
struct ReplicaStream {
  ReplicaStream(std::shared_ptr<Volume> v, std::string r, uint64_t id, std::shared_ptr<Notifier> n,
                size_t max_queued_ops = changes::kMaxQueuedOps)
      : volume(std::move(v)), replica(std::move(r)), instance(id), notifier(std::move(n)),
        log(max_queued_ops) {}

  std::shared_ptr<Volume> volume;
  const std::string replica;  // the replica's name
  // Random per stream (Select.instance): new to a replica = baseline. A stream resumed after a
  // restart keeps the one its ResumePoint names.
  const uint64_t instance;
  std::shared_ptr<Notifier> notifier;
  changes::ChangeLog log;
  stream::Sender sender{log};
  // Progress of this stream ("host:/path to replica"), fed by the replica session through
  // `progress` (session thread only).
  std::shared_ptr<progress::Meter> meter;
  std::optional<changes::SendProgress> progress;
  // Batches come from a baseline scan (progress label; the copy is not current before it ends).
  std::atomic<bool> baseline{false};
  // The ResumePoint last written for this stream (or resumed from); guarded by volume->mu.
  std::optional<ResumePoint> saved;

  // Its lag (everything but the replica's name and connection), without Volume::mu.
  ReplicaLag lag() const;
  // Nothing left in the log (a batch may still be in flight).
  bool log_empty() const;
};


class Volume {
 public:
  // Opens (creating if needed) DIR/{mirror,ids,replicas} and reads DIR/state.
  // archives: where its snapshots go (null: DIR/snapshots on this disk).
  // budget: shared by every volume's ForwardCache (null: the cache's own bound alone).
  static Result<std::shared_ptr<Volume>> open(const std::string& host, const std::string& path,
                                              const std::string& dir,
                                              std::unique_ptr<ArchiveStore> archives = nullptr,
                                              std::shared_ptr<ForwardBudget> budget = nullptr);

  const std::string& host() const { return host_; }
  const std::string& path() const { return path_; }
  // "host:/path", for log lines and map keys.
  const std::string& name() const { return name_; }
  // The volume directory: mirror/, ids/, snapshots/, replicas/, state, stats.
  const std::string& dir() const { return dir_; }
  // Where its snapshot archives are kept (server/archive_store.h); safe from any thread.
  ArchiveStore& archives() const { return *archives_; }
  // The running snapshot's scratch area (server/cut.h): its names and the old bytes it keeps.
  std::string cut_dir() const { return dir_ + "/cut"; }

  // Moves whenever a snapshot of the volume is written or rotated out, so a replica session
  // looks at the catalog's snapshots again only then (server/snapshot_copies.h). No lock.
  std::atomic<uint64_t> snapshot_epoch{0};

  std::mutex mu;
  // Everything below is guarded by mu.
  std::unique_ptr<changes::Applier> applier;  // set once by open(); open_id() needs no lock
  std::unique_ptr<stream::Receiver> receiver;  // the node stream into applier (set by open())
  // Progress of the node's stream into the mirror (set once by open(); has its own lock).
  std::shared_ptr<progress::Meter> ingest;
  VolumeState state;                          // as on disk after the last commit, plus changes
                                              // applied since (saved with the next commit)
  VolumeStats stats;
  bool node_connected = false;
  // True from the first Op/Write after a commit until the next commit: the mirror holds part
  // of a batch. Stays true if the node goes away mid-batch (the rest of it comes later).
  bool in_batch() const { return receiver->in_batch(); }
  std::condition_variable batch_done;  // notified at each commit and when a node session ends
  std::map<std::string, std::shared_ptr<ReplicaStream>> sinks;  // by replica name
  ForwardCache forward;  // the node's Write frames for the sinks (own lock, forward_cache.h)

  // Counts one applied frame into state.changes / run_bytes / run_files (mu held).
  void count_op(const wire::Op& op);
  void count_write(uint64_t id, uint64_t length);
  // Returns {run_bytes, run_files} and starts counting the next run from zero (mu held).
  std::pair<uint64_t, uint64_t> take_run_counts();
  // A run took its cut and lets ingest go on (mu held): returns {run_bytes, run_files} at the
  // cut, and from now on also counts what is applied after it, apart.
  std::pair<uint64_t, uint64_t> begin_run_counts();
  // That run ended (mu held). Succeeded: the next run counts what was applied after the cut.
  // Failed: it counts everything since the last run that succeeded, as if there were no cut.
  enum class RunEnd { kSucceeded, kFailed };
  void end_run_counts(RunEnd end);

  // Records one applied operation / write into every sink (mu held), after the forward cache
  // (forward_cache.h): a write as the node encoded it (the frame's flags, the payload after its
  // header).
  void fan_out(const wire::Op& op);
  void fan_out_write(const wire::Write& w, uint8_t flags, std::span<const uint8_t> body);
  void notify_sinks();

  // Commits the node stream's batch with the counters (mu held); the batch number to ack.
  Result<uint64_t> commit(const wire::Commit& c);
  // Rewrites `state` durably (temp file, fdatasync, rename) and `stats` (mu held).
  Result<void> save_state();
  Result<void> save_stats();

  // The replica's ResumePoint, if one was saved (mu held). Written without a sync: a lost or
  // stale one costs a reconcile, never a wrong resume (Hub::ensure_stream checks it). Only
  // open() creates DIR/replicas, so a save racing a purge fails instead of re-creating it.
  Result<std::optional<ResumePoint>> resume_point(const std::string& replica) const;
  Result<void> save_resume_point(const std::string& replica, const ResumePoint& p);
  Result<void> drop_resume_point(const std::string& replica);

  // Latest node status (own leaf mutex: readable while a run holds mu).
  void set_node_status(const wire::NodeStatus& status, int64_t now_ms);
  std::optional<NodeStatusSample> node_status() const;

 private:
  void counters_to_receiver();  // mu held
  std::string resume_point_path(const std::string& replica) const;

  Volume(std::string host, std::string path, std::string dir,
         std::shared_ptr<ForwardBudget> budget)
      : forward(kForwardCacheBytes, kForwardStale, std::move(budget)), host_(std::move(host)),
        path_(std::move(path)), dir_(std::move(dir)), name_(host_ + ":" + path_) {}

  // Counts one applied change of key (0: not a file worth counting) and bytes (mu held).
  void count(uint64_t key, uint64_t bytes);

  std::string host_, path_, dir_, name_;
  std::unique_ptr<ArchiveStore> archives_;  // set once by open()
  // Keys (file id, or a hash of the path for entries named only by path) of what was touched
  // since the previous run, guarded by mu. Bounded: past kMaxRunKeys, files are counted
  // without deduplication.
  std::unordered_set<uint64_t> run_keys_;
  // What was applied since the cut of a run still archiving (begin_run_counts), guarded by mu.
  struct AfterCut {
    uint64_t bytes = 0;
    uint64_t files = 0;
    std::unordered_set<uint64_t> keys;  // bounded like run_keys_
  };
  std::optional<AfterCut> after_cut_;
  mutable std::mutex status_mu_;
  std::optional<NodeStatusSample> status_;  // guarded by status_mu_
};

// Inverse of bkp::escape_path ("srv-my\x2dapp" -> "/srv/my-app"); nullopt if not an escape.
std::optional<std::string> unescape_path(std::string_view escaped);

}  // namespace bkp::server
