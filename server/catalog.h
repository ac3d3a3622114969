// Catalog: backupd's durable record of registrations, snapshots and scheduled runs, in SQLite
// at STATE/catalog.db, or in a PostgreSQL database that several backupd instances may share
// (`catalog` in backupd.toml; server/database.h).
//
// Schema (version 6, server/catalog_schema.h; every time is CLOCK_REALTIME in milliseconds
// since the epoch):
//   registrations(host, path, address, port, every_seconds, registered_at, node_id, copies)
//       PRIMARY KEY(host, path). host is the volume's name (the node's host name, from its
//       Hello); address and port are where backupd reaches the node. Version 1 had no address:
//       opening such a catalog adds the column with address = host (version 1 named volumes by
//       their address). copies: how many copies the volume wants, the mirror included (0:
//       backupd's default); versions before 4 get 0.
//   placements(host, path, replica, placed_at)  PRIMARY KEY(host, path, replica)
//       the replicas the volume's copies are placed on (server/placement.h); removed with the
//       registration.
//   snapshots(host, path, id, bytes, created_at, change_counter, deleted_at, part_size, digests)
//       one row per snapshot file ever written; deleted_at is set when rotation (or startup
//       recovery, for a file found missing) removed the file. change_counter is the volume's
//       change counter the archive was cut at (NULL: unknown, e.g. adopted at startup).
//       digests: the SHA-256 of every part_size bytes (common/part_digests.h), 64 hex digits
//       each, concatenated; part_size 0: not computed yet (version 4 and older, or adopted).
//   snapshot_copies(host, path, id, replica, stored_at)  PRIMARY KEY(host, path, id, replica)
//       which replicas hold a copy of which snapshot (as they last said, or since they stored
//       it); rows of rotated snapshots go when the replica next reports what it holds.
//   runs(id, host, path, started_at, ended_at, status, snapshot, snapshot_bytes, duration_ms,
//        changed_bytes, changed_files, error, server, token)
//       one row per scheduled run, inserted when the run starts (ended_at NULL) and closed when
//       it ends, so a run cut short by a crash is still there to be closed at startup (by the
//       server that made it, `server`: '' for a catalog of one). token: random, unique, so an
//       insert sent again after a lost connection finds its row instead of adding one (NULL
//       before version 7; verify_runs has one too).
//   replicas(name, first_seen_at)
//       every replica name that ever connected: any of them may hold a copy of any volume.
//   drops(replica, host, path, purge, queued_at)  PRIMARY KEY(replica, host, path)
//       a copy the replica must give up (server/drops.h), until it confirms; purge 1: delete it.
//   servers(name, seen_at)
//       every backupd serving volumes of a shared catalog, and when it last said it is alive
//       (server/leases.h). Version 5 and older: none.
//   leases(host, path, owner, expires_at)  PRIMARY KEY(host, path)
//       which server serves the volume, until when; owner '' or an expired lease: nobody.
//
// SQLite is in WAL mode with synchronous=FULL: a registration acknowledged to bkptool, and a
// run row, survive a power loss. Runs are minutes apart, so the fsync per transaction costs
// nothing that matters. On PostgreSQL every change of several rows is one SERIALIZABLE
// transaction, run again when a concurrent one won (for up to 5 s) or, once, when the
// connection dropped in its middle; single statements are atomic by themselves, with
// INSERT ... ON CONFLICT where two instances may insert the same row.
//
// A finished run whose row cannot be written (the catalog's disk is full, an I/O error) is not
// lost: it is kept in memory (at most kMaxUnrecordedRuns, the newest), listed by runs() as if it
// were stored, and written as soon as a write succeeds again, so `bkptool history` shows the
// failures of a full disk once space returns.
//
// Thread-safety: every method is safe to call from any thread (one internal mutex around the
// connection). Lock order: Catalog's mutex is a leaf; it is taken while holding Volume::mu
// (never the reverse).
#pragma once

#include <cstdint>
#include <map>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/result.h"
#include "server/database.h"

namespace bkp::server {

struct Registration {
  std::string host;     // the volume's name: the node's host name (backupfs --host)
  std::string address;  // where backupd reaches the node, as given to `register`
  uint16_t port = 0;
  std::string path;
  int64_t every_seconds = 0;
  int64_t registered_at = 0;  // ms
  std::string node_id;  // the node's identity (common/net/identity.h); "" until first attach
  int copies = 0;       // copies wanted, the mirror included; 0: backupd's default

  std::string key() const { return host + ":" + path; }  // same as Volume::name()
};

enum class RunStatus { kWritten, kUnchanged, kFailed };
const char* run_status_name(RunStatus status);  // "written", "unchanged", "failed"

struct RunRecord {
  int64_t id = 0;
  std::string host, path;
  int64_t started_at = 0;
  int64_t ended_at = 0;
  RunStatus status = RunStatus::kFailed;
  std::optional<std::string> snapshot;  // id of the snapshot written, if any
  int64_t snapshot_bytes = 0;
  int64_t duration_ms = 0;
  int64_t changed_bytes = 0;  // data bytes written to the volume since the previous run
  int64_t changed_files = 0;  // files touched since the previous run
  // Why it failed; for a written run, what its archive does not hold (sockets, entries the
  // format refused): "written with warnings".
  std::optional<std::string> error;
  std::string token;  // its row's token (catalog.h's runs table); set by the catalog
};

// A verify's outcome (server/verify.h): every copy checked and equal; some difference found;
// or something could not be checked (and nothing was found to differ).
enum class VerifyResult { kClean, kDiffers, kFailed };
const char* verify_result_name(VerifyResult result);  // "clean", "differs", "failed"

// One verify of a volume, listed by `history` beside the backup runs.
struct VerifyRecord {
  int64_t id = 0;
  std::string host, path;
  int64_t started_at = 0;  // ms
  int64_t ended_at = 0;
  VerifyResult result = VerifyResult::kFailed;
  std::string checked;      // what was compared, e.g. "node, replicas, snapshots, data"
  int64_t differences = 0;  // found, in all copies
  std::string summary;      // one line: per copy what differed or why it could not be checked
};

// Peers backupd accepts besides the nodes it registered: replicators (receive the volumes) and
// remote operators (bkptool over TCP). Known by identity.
enum class PeerKind { kReplica, kOperator };
const char* peer_kind_name(PeerKind kind);  // "replica", "operator"

struct PeerRecord {
  PeerKind kind = PeerKind::kReplica;
  std::string id;    // grouped fingerprint
  std::string name;  // a label for people; "" if none was given
  int64_t added_at = 0;  // ms
};

// A replica's copy of a volume that it must close (purge: delete), not yet confirmed.
struct DropRecord {
  std::string replica;
  std::string host, path;
  bool purge = false;
  int64_t queued_at = 0;  // ms

  bool operator==(const DropRecord&) const = default;
};

struct SnapshotRecord {
  std::string id;  // "20261126T010203.123Z"; the file is id + ".tgz"
  int64_t bytes = 0;
  int64_t created_at = 0;
  std::optional<int64_t> change_counter;
  std::optional<int64_t> deleted_at;
  uint32_t part_size = 0;           // 0: digests not computed yet
  std::vector<PartDigest> digests;  // one per part (common/part_digests.h)
  std::vector<std::string> copies;  // replicas holding a copy (Registry::present_snapshots)
};

// Finished runs kept in memory while the catalog cannot store them.
constexpr size_t kMaxUnrecordedRuns = 256;

class Catalog {
 public:
  // Opens or creates the database and its schema: `where` is a SQLite file or a PostgreSQL URI
  // (Database::open). An unreadable or unreachable database, or one of a newer schema, is an
  // error naming it.
  // server: this backupd's server_name when several share the catalog ('' otherwise), written
  // into the runs it makes.
  static Result<std::unique_ptr<Catalog>> open(const std::string& where,
                                               const std::string& server = "");
  // Tries once more to write the runs kept in memory; logs each one it cannot write.
  ~Catalog();

  // Registrations.
  Result<void> add_registration(const Registration& reg);  // EEXIST if already there
  Result<std::vector<Registration>> registrations();
  Result<std::optional<Registration>> registration(const std::string& host, const std::string& path);
  // Removes the registration; with purge also every snapshot and run row of the volume.
  Result<void> remove_registration(const std::string& host, const std::string& path, bool purge);
  // Pins the node identity of a registration (the first attach of one registered without it).
  Result<void> set_node_id(const std::string& host, const std::string& path, const std::string& id);
  // Sets the copies a registration wants (0: the default); false if it is not registered.
  Result<bool> set_copies(const std::string& host, const std::string& path, int copies);
  // Placements: every volume's replicas by Registration::key(); set_placement replaces one's.
  Result<std::map<std::string, std::set<std::string>>> placements();
  Result<void> set_placement(const std::string& host, const std::string& path,
                             const std::set<std::string>& replicas, int64_t now);
  // True if the volume has a registration or any snapshot or run row (kept after unregister).
  Result<bool> has_volume(const std::string& host, const std::string& path);

  // Runs. begin_run and record_run first write the runs kept in memory, if any.
  Result<int64_t> begin_run(const std::string& host, const std::string& path, int64_t started_at);
  // Stores a finished run: updates its row (run.id != 0) or inserts one (id 0: the run's row
  // could not be inserted when it began). If that fails the run is kept in memory (see above)
  // and the error is returned, for the log.
  Result<void> record_run(const RunRecord& run);
  // Writes the runs kept in memory. Returns how many are still kept (0: all written).
  size_t flush_unrecorded();
  // Finished runs of a volume, newest first (those kept in memory included); limit 0 = all.
  Result<std::vector<RunRecord>> runs(const std::string& host, const std::string& path, size_t limit);
  Result<std::optional<RunRecord>> last_run(const std::string& host, const std::string& path);
  // How many finished runs the volume has of each status (the ones kept in memory included),
  // of those started at or after since_ms.
  Result<std::map<RunStatus, uint64_t>> run_counts(const std::string& host, const std::string& path,
                                                   int64_t since_ms = 0);
  // Verifies (server/verify.h): stored one row each, listed newest first (limit 0: all).
  Result<void> record_verify(const VerifyRecord& run);
  Result<std::vector<VerifyRecord>> verify_runs(const std::string& host, const std::string& path,
                                                size_t limit = 0);
  // Closes the runs without an end that this server made (and those of catalogs older than
  // version 7, which do not say who made them) as failed with `error`, ended at `now`: at
  // startup. Returns how many.
  Result<int> close_own_open_runs(int64_t now, const std::string& error);
  // Closes the volume's runs without an end that other servers made: when its lease is taken
  // over (their server died, or handed it over after recording every run). Returns how many.
  Result<int> close_others_open_runs(const std::string& host, const std::string& path,
                                     int64_t now, const std::string& error);

  // Authorised peers. add_peer: EEXIST if that identity is already there (of either kind);
  // remove_peer: false if it was not there.
  Result<void> add_peer(const PeerRecord& peer);
  Result<bool> remove_peer(PeerKind kind, const std::string& id);
  Result<std::vector<PeerRecord>> peers(PeerKind kind);  // oldest first
  Result<bool> is_peer(PeerKind kind, const std::string& id);
  // Gives an authorised peer its name (PeerGate::claim_name); false if it is not there.
  Result<bool> name_peer(PeerKind kind, const std::string& id, const std::string& name);

  // Replicas and the copies they must drop (server/drops.h).
  Result<void> add_replica(const std::string& name, int64_t now);  // nothing if known already
  Result<std::vector<std::string>> replica_names();                 // sorted
  // Queues the drop for each replica in one transaction; a purge replaces a plain drop of the
  // same copy still queued, a plain drop never weakens a purge.
  Result<void> add_drops(const std::vector<std::string>& replicas, const std::string& host,
                         const std::string& path, bool purge, int64_t now);
  // The replica confirmed the drop as `purge` says: forgotten, unless a purge replaced it since.
  Result<void> remove_drop(const std::string& replica, const std::string& host,
                           const std::string& path, bool purge);
  Result<std::vector<DropRecord>> drops();  // by replica, host, path

  // Leases (server/leases.h). Marks the server alive at now.
  Result<void> heartbeat(const std::string& server, int64_t now);
  // The servers seen at or after `since`, sorted.
  Result<std::vector<std::string>> live_servers(int64_t since);
  // Who serves each registered volume, by Registration::key(): owner "" when nobody does (no
  // lease, or one that expired before now).
  Result<std::map<std::string, std::string>> owners(int64_t now);
  // Takes the volume's lease for server until `until`, if nobody holds it at now (none, given
  // up, expired) or server does already. True when server holds it afterwards. Atomic: of
  // servers racing for one lease, one wins.
  Result<bool> take_lease(const std::string& host, const std::string& path,
                          const std::string& server, int64_t now, int64_t until);
  // Extends to `until` every lease server holds at now; returns the keys of those volumes.
  Result<std::set<std::string>> renew_leases(const std::string& server, int64_t now, int64_t until);
  // Gives the lease up, if server holds it.
  Result<void> release_lease(const std::string& host, const std::string& path,
                             const std::string& server);

  // Snapshots.
  Result<void> add_snapshot(const std::string& host, const std::string& path, const SnapshotRecord& s);
  Result<void> mark_deleted(const std::string& host, const std::string& path,
                            const std::vector<std::string>& ids, int64_t now);
  // Newest first; with deleted = false only those not marked deleted.
  Result<std::vector<SnapshotRecord>> snapshots(const std::string& host, const std::string& path,
                                                bool include_deleted);
  // Records the part digests of a snapshot whose row had none.
  Result<void> set_digests(const std::string& host, const std::string& path, const std::string& id,
                           uint32_t part_size, const std::vector<PartDigest>& digests);
  // Snapshot copies on replicas: `ids` are held by `replica` (replace: and no others).
  Result<void> note_copies(const std::string& host, const std::string& path,
                           const std::string& replica, const std::vector<std::string>& ids,
                           bool replace, int64_t now);
  // Replicas holding each snapshot of the volume, by id.
  Result<std::map<std::string, std::vector<std::string>>> snapshot_copies(const std::string& host,
                                                                          const std::string& path);
  // The change counter of the newest snapshot ever written (deleted or not): nullopt if there
  // is none; an unknown counter (NULL) reads as -1, which no volume counter equals.
  Result<std::optional<int64_t>> last_snapshot_counter(const std::string& host, const std::string& path);

 private:
  Catalog(std::unique_ptr<Database> db, std::string server)
      : server_(std::move(server)), db_(std::move(db)) {}
  // Runs body in a transaction, again while it loses to a concurrent transaction (up to 5 s),
  // and once more if the connection dropped (mu_ held).
  Result<void> in_transaction(const std::function<Result<void>()>& body);
  // Writes one finished run (mu_ held).
  Result<void> write_run(const RunRecord& run);
  // Writes every kept run in one transaction; on success forgets them (mu_ held).
  Result<void> write_unrecorded();
  void keep_unrecorded(const RunRecord& run);  // mu_ held

  const std::string server_;
  std::mutex mu_;
  // Guarded by mu_.
  std::unique_ptr<Database> db_;
  std::deque<RunRecord> unrecorded_;  // finished runs not yet stored, oldest first
};

}  // namespace bkp::server
