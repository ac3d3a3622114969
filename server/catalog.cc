// The catalog's SQL (see catalog.h for the schema and its guarantees), one text for SQLite and
// PostgreSQL alike (server/database.h): upserts rather than INSERT OR IGNORE/REPLACE, RETURNING
// rather than last_insert_rowid, CASE rather than SQLite's two-argument MAX.
//
// Statements are prepared per call: the catalog sees a handful of statements a minute, so a
// statement cache would only add state. Multi-row changes (purge, rotation) run in one
// transaction (in_transaction) so a crash leaves either all or none of them, and so that two
// backupd instances sharing a PostgreSQL catalog never interleave them. Rows are keyed by (host, path)
// rather than a volume id so that history survives unregister/register cycles of the same
// volume without any renumbering.
//
// Runs the catalog could not store wait in unrecorded_ and are written, oldest first and in one
// transaction, before the next run row is written: their ids then follow the order the runs
// happened in. A run that began (its row exists, still open) is stored by an update of that row,
// one that could not even begin by an insert.
#include "server/catalog.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <random>
#include <thread>
#include <utility>

#include "common/log.h"
#include "common/random.h"
#include "server/catalog_schema.h"

namespace bkp::server {
namespace {

// A transaction that lost to a concurrent one (PostgreSQL) runs again after a random pause of
// up to kRetryPauseMs, until it wins or kRetryFor has passed.
constexpr auto kRetryFor = std::chrono::seconds(5);
constexpr unsigned kRetryPauseMs = 20;

// Closes runs without an end as failed (?1 the time, ?2 why); a condition on which follows.
constexpr const char* kCloseOpenRuns =
    "UPDATE runs SET ended_at = ?1, status = 'failed', error = ?2, "
    "duration_ms = CASE WHEN ?1 > started_at THEN ?1 - started_at ELSE 0 END "
    "WHERE ended_at IS NULL AND ";

// A run's token (catalog.h): random, 16 hex digits.
std::string new_token() { return fmt::format("{:016x}", random_nonzero()); }

// LIMIT for "no limit": SQLite takes -1 for it, PostgreSQL does not.
int64_t row_limit(size_t limit) {
  return limit == 0 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(limit);
}

std::string digests_text(const std::vector<PartDigest>& digests) {
  std::string out;
  for (const auto& d : digests) out += to_hex(d);
  return out;
}

std::vector<PartDigest> digests_of(const std::string& text) {
  std::vector<PartDigest> out;
  for (size_t at = 0; at + 64 <= text.size(); at += 64) {
    if (auto d = digest_from_hex(std::string_view(text).substr(at, 64))) out.push_back(*d);
  }
  return out;
}

constexpr const char* kRunColumns =
    "id, host, path, started_at, ended_at, status, snapshot, snapshot_bytes, duration_ms, "
    "changed_bytes, changed_files, error";

RunStatus parse_status(const std::string& s) {
  if (s == "written") return RunStatus::kWritten;
  if (s == "unchanged") return RunStatus::kUnchanged;
  return RunStatus::kFailed;
}

RunRecord read_run(const Statement& st) {
  RunRecord r;
  r.id = st.int64(0);
  r.host = st.text(1);
  r.path = st.text(2);
  r.started_at = st.int64(3);
  r.ended_at = st.int64(4);
  r.status = parse_status(st.text(5));
  r.snapshot = st.opt_text(6);
  r.snapshot_bytes = st.int64(7);
  r.duration_ms = st.int64(8);
  r.changed_bytes = st.int64(9);
  r.changed_files = st.int64(10);
  r.error = st.opt_text(11);
  return r;
}

}  // namespace

const char* verify_result_name(VerifyResult result) {
  switch (result) {
    case VerifyResult::kClean: return "clean";
    case VerifyResult::kDiffers: return "differs";
    case VerifyResult::kFailed: return "failed";
  }
  return "failed";
}

const char* run_status_name(RunStatus status) {
  switch (status) {
    case RunStatus::kWritten: return "written";
    case RunStatus::kUnchanged: return "unchanged";
    case RunStatus::kFailed: return "failed";
  }
  return "failed";
}

Result<std::unique_ptr<Catalog>> Catalog::open(const std::string& where,
                                               const std::string& server) {
  auto db = BKP_TRY(Database::open(where));
  BKP_TRY_VOID(init_catalog_schema(*db));
  return std::unique_ptr<Catalog>(new Catalog(std::move(db), server));
}

Result<void> Catalog::in_transaction(const std::function<Result<void>()>& body) {
  const auto deadline = std::chrono::steady_clock::now() + kRetryFor;
  bool reconnected = false;
  while (true) {
    auto done = [&]() -> Result<void> {
      auto tx = BKP_TRY(Transaction::begin(*db_));
      BKP_TRY_VOID(body());
      return tx.commit();
    }();
    if (done) return done;
    int code = done.error().code;
    bool again = (code == EAGAIN && std::chrono::steady_clock::now() < deadline) ||
                 (code == ECONNRESET && !std::exchange(reconnected, true));
    if (!again) return done;
    log::debug("{}; running the transaction again", done.error().message);
    if (code == EAGAIN) {
      static thread_local std::minstd_rand jitter(std::random_device{}());
      std::this_thread::sleep_for(std::chrono::milliseconds(jitter() % kRetryPauseMs));
    }
  }
}

Catalog::~Catalog() {
  std::lock_guard lock(mu_);
  if (unrecorded_.empty()) return;
  if (auto written = write_unrecorded(); written) return;
  for (const auto& run : unrecorded_) {
    log::error("run of {}:{} started at {} ms could not be stored in the catalog and is lost: "
               "{} ({})", run.host, run.path, run.started_at, run_status_name(run.status),
               run.error.value_or("no error"));
  }
}

Result<void> Catalog::add_registration(const Registration& reg) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO registrations(host, path, address, port, every_seconds, registered_at, "
      "node_id, copies) VALUES(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"));
  st->bind(1, reg.host).bind(2, reg.path).bind(3, reg.address).bind(4, int64_t{reg.port})
      .bind(5, reg.every_seconds).bind(6, reg.registered_at).bind(7, reg.node_id)
      .bind(8, int64_t{reg.copies});
  BKP_TRY_VOID(st->run());
  if (st->changes() == 0) return fail(EEXIST, fmt::format("{} is already registered", reg.key()));
  return {};
}

Result<std::vector<Registration>> Catalog::registrations() {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT host, address, port, path, every_seconds, registered_at, node_id, copies "
      "FROM registrations ORDER BY host, path"));
  std::vector<Registration> out;
  while (BKP_TRY(st->step())) {
    out.push_back(Registration{st->text(0), st->text(1), static_cast<uint16_t>(st->int64(2)),
                               st->text(3), st->int64(4), st->int64(5), st->text(6),
                               static_cast<int>(st->int64(7))});
  }
  return out;
}

Result<std::optional<Registration>> Catalog::registration(const std::string& host,
                                                          const std::string& path) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT address, port, every_seconds, registered_at, node_id, copies FROM registrations "
      "WHERE host = ? AND path = ?"));
  st->bind(1, host).bind(2, path);
  if (!BKP_TRY(st->step())) return std::optional<Registration>();
  return Registration{host, st->text(0), static_cast<uint16_t>(st->int64(1)), path, st->int64(2),
                      st->int64(3), st->text(4), static_cast<int>(st->int64(5))};
}

Result<bool> Catalog::set_copies(const std::string& host, const std::string& path, int copies) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("UPDATE registrations SET copies = ? WHERE host = ? AND path = ?"));
  st->bind(1, int64_t{copies}).bind(2, host).bind(3, path);
  BKP_TRY_VOID(st->run());
  return st->changes() > 0;
}

Result<std::map<std::string, std::set<std::string>>> Catalog::placements() {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("SELECT host, path, replica FROM placements"));
  std::map<std::string, std::set<std::string>> out;
  while (BKP_TRY(st->step())) out[st->text(0) + ":" + st->text(1)].insert(st->text(2));
  return out;
}

Result<void> Catalog::set_placement(const std::string& host, const std::string& path,
                                    const std::set<std::string>& replicas, int64_t now) {
  std::lock_guard lock(mu_);
  return in_transaction([&]() -> Result<void> {
    auto st = BKP_TRY(db_->prepare("DELETE FROM placements WHERE host = ? AND path = ?"));
    st->bind(1, host).bind(2, path);
    BKP_TRY_VOID(st->run());
    for (const auto& replica : replicas) {
      auto insert = BKP_TRY(db_->prepare(
          "INSERT INTO placements(host, path, replica, placed_at) VALUES(?, ?, ?, ?)"));
      insert->bind(1, host).bind(2, path).bind(3, replica).bind(4, now);
      BKP_TRY_VOID(insert->run());
    }
    return {};
  });
}

Result<void> Catalog::set_node_id(const std::string& host, const std::string& path,
                                  const std::string& id) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("UPDATE registrations SET node_id = ? WHERE host = ? AND path = ?"));
  st->bind(1, id).bind(2, host).bind(3, path);
  return st->run();
}

const char* peer_kind_name(PeerKind kind) {
  return kind == PeerKind::kReplica ? "replica" : "operator";
}

Result<void> Catalog::add_peer(const PeerRecord& peer) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO peers(id, kind, name, added_at) VALUES(?, ?, ?, ?) ON CONFLICT DO NOTHING"));
  st->bind(1, peer.id).bind(2, std::string(peer_kind_name(peer.kind))).bind(3, peer.name)
      .bind(4, peer.added_at);
  BKP_TRY_VOID(st->run());
  if (st->changes() == 0) return fail(EEXIST, fmt::format("{} is already authorised", peer.id));
  return {};
}

Result<bool> Catalog::remove_peer(PeerKind kind, const std::string& id) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("DELETE FROM peers WHERE kind = ? AND id = ?"));
  st->bind(1, std::string(peer_kind_name(kind))).bind(2, id);
  BKP_TRY_VOID(st->run());
  return st->changes() > 0;
}

Result<std::vector<PeerRecord>> Catalog::peers(PeerKind kind) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT id, name, added_at FROM peers WHERE kind = ? ORDER BY added_at, id"));
  st->bind(1, std::string(peer_kind_name(kind)));
  std::vector<PeerRecord> out;
  while (BKP_TRY(st->step())) out.push_back(PeerRecord{kind, st->text(0), st->text(1), st->int64(2)});
  return out;
}

Result<bool> Catalog::is_peer(PeerKind kind, const std::string& id) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("SELECT 1 FROM peers WHERE kind = ? AND id = ?"));
  st->bind(1, std::string(peer_kind_name(kind))).bind(2, id);
  return st->step();
}

Result<bool> Catalog::name_peer(PeerKind kind, const std::string& id, const std::string& name) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("UPDATE peers SET name = ? WHERE kind = ? AND id = ?"));
  st->bind(1, name).bind(2, std::string(peer_kind_name(kind))).bind(3, id);
  BKP_TRY_VOID(st->run());
  return st->changes() > 0;
}

Result<void> Catalog::add_replica(const std::string& name, int64_t now) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO replicas(name, first_seen_at) VALUES(?, ?) ON CONFLICT DO NOTHING"));
  st->bind(1, name).bind(2, now);
  return st->run();
}

Result<std::vector<std::string>> Catalog::replica_names() {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("SELECT name FROM replicas ORDER BY name"));
  std::vector<std::string> out;
  while (BKP_TRY(st->step())) out.push_back(st->text(0));
  return out;
}

Result<void> Catalog::add_drops(const std::vector<std::string>& replicas, const std::string& host,
                                const std::string& path, bool purge, int64_t now) {
  std::lock_guard lock(mu_);
  return in_transaction([&]() -> Result<void> {
    for (const auto& replica : replicas) {
      auto st = BKP_TRY(db_->prepare(
          "INSERT INTO drops(replica, host, path, purge, queued_at) VALUES(?, ?, ?, ?, ?) "
          "ON CONFLICT(replica, host, path) DO UPDATE SET purge = CASE WHEN excluded.purge > "
          "drops.purge THEN excluded.purge ELSE drops.purge END, queued_at = excluded.queued_at"));
      st->bind(1, replica).bind(2, host).bind(3, path).bind(4, int64_t{purge}).bind(5, now);
      BKP_TRY_VOID(st->run());
    }
    return {};
  });
}

Result<void> Catalog::remove_drop(const std::string& replica, const std::string& host,
                                  const std::string& path, bool purge) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "DELETE FROM drops WHERE replica = ? AND host = ? AND path = ? AND purge <= ?"));
  st->bind(1, replica).bind(2, host).bind(3, path).bind(4, int64_t{purge});
  return st->run();
}

Result<std::vector<DropRecord>> Catalog::drops() {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT replica, host, path, purge, queued_at FROM drops ORDER BY replica, host, path"));
  std::vector<DropRecord> out;
  while (BKP_TRY(st->step())) {
    out.push_back(DropRecord{st->text(0), st->text(1), st->text(2), st->int64(3) != 0, st->int64(4)});
  }
  return out;
}

Result<void> Catalog::remove_registration(const std::string& host, const std::string& path,
                                          bool purge) {
  std::lock_guard lock(mu_);
  std::vector<const char*> tables = {"registrations", "placements", "leases"};
  if (purge) tables.insert(tables.end(), {"snapshots", "snapshot_copies", "runs", "verify_runs"});
  BKP_TRY_VOID(in_transaction([&]() -> Result<void> {
    for (const char* table : tables) {
      auto st = BKP_TRY(db_->prepare(fmt::format("DELETE FROM {} WHERE host = ? AND path = ?", table)));
      st->bind(1, host).bind(2, path);
      BKP_TRY_VOID(st->run());
    }
    return {};
  }));
  if (purge) {
    std::erase_if(unrecorded_, [&](const RunRecord& r) { return r.host == host && r.path == path; });
  }
  return {};
}

Result<void> Catalog::heartbeat(const std::string& server, int64_t now) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO servers(name, seen_at) VALUES(?, ?) "
      "ON CONFLICT(name) DO UPDATE SET seen_at = excluded.seen_at"));
  st->bind(1, server).bind(2, now);
  return st->run();
}

Result<std::vector<std::string>> Catalog::live_servers(int64_t since) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare("SELECT name FROM servers WHERE seen_at >= ? ORDER BY name"));
  st->bind(1, since);
  std::vector<std::string> out;
  while (BKP_TRY(st->step())) out.push_back(st->text(0));
  return out;
}

Result<std::map<std::string, std::string>> Catalog::owners(int64_t now) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT r.host, r.path, COALESCE(l.owner, ''), COALESCE(l.expires_at, 0) "
      "FROM registrations r LEFT JOIN leases l ON l.host = r.host AND l.path = r.path"));
  std::map<std::string, std::string> out;
  while (BKP_TRY(st->step())) {
    out[st->text(0) + ":" + st->text(1)] = st->int64(3) >= now ? st->text(2) : std::string();
  }
  return out;
}

Result<bool> Catalog::take_lease(const std::string& host, const std::string& path,
                                 const std::string& server, int64_t now, int64_t until) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO leases(host, path, owner, expires_at) VALUES(?1, ?2, ?3, ?4) "
      "ON CONFLICT(host, path) DO UPDATE SET owner = excluded.owner, "
      "expires_at = excluded.expires_at "
      "WHERE leases.owner = excluded.owner OR leases.owner = '' OR leases.expires_at < ?5"));
  st->bind(1, host).bind(2, path).bind(3, server).bind(4, until).bind(5, now);
  BKP_TRY_VOID(st->run());
  return st->changes() > 0;
}

Result<std::set<std::string>> Catalog::renew_leases(const std::string& server, int64_t now,
                                                    int64_t until) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "UPDATE leases SET expires_at = ?1 WHERE owner = ?2 AND expires_at >= ?3 "
      "RETURNING host, path"));
  st->bind(1, until).bind(2, server).bind(3, now);
  std::set<std::string> out;
  while (BKP_TRY(st->step())) out.insert(st->text(0) + ":" + st->text(1));
  return out;
}

Result<void> Catalog::release_lease(const std::string& host, const std::string& path,
                                    const std::string& server) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "UPDATE leases SET owner = '', expires_at = 0 WHERE host = ? AND path = ? AND owner = ?"));
  st->bind(1, host).bind(2, path).bind(3, server);
  return st->run();
}

Result<bool> Catalog::has_volume(const std::string& host, const std::string& path) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT 1 WHERE EXISTS(SELECT 1 FROM registrations WHERE host = ?1 AND path = ?2) "
      "OR EXISTS(SELECT 1 FROM snapshots WHERE host = ?1 AND path = ?2) "
      "OR EXISTS(SELECT 1 FROM runs WHERE host = ?1 AND path = ?2)"));
  st->bind(1, host).bind(2, path);
  return st->step();
}

Result<int64_t> Catalog::begin_run(const std::string& host, const std::string& path,
                                   int64_t started_at) {
  std::lock_guard lock(mu_);
  (void)write_unrecorded();  // kept if it fails; the insert below reports the same trouble
  // Sent twice (a lost connection, postgres.cc), the second finds the first's row.
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO runs(host, path, started_at, server, token) VALUES(?, ?, ?, ?, ?) "
      "ON CONFLICT(token) DO UPDATE SET token = excluded.token RETURNING id"));
  st->bind(1, host).bind(2, path).bind(3, started_at).bind(4, server_).bind(5, new_token());
  if (!BKP_TRY(st->step())) return fail(EIO, "catalog: INSERT INTO runs returned no id");
  int64_t id = st->int64(0);
  BKP_TRY_VOID(st->run());  // to the end, which completes the statement on SQLite
  return id;
}

Result<void> Catalog::record_run(const RunRecord& finished) {
  RunRecord run = finished;
  if (run.id == 0 && run.token.empty()) run.token = new_token();  // the same for every try
  std::lock_guard lock(mu_);
  auto written = write_unrecorded();
  if (written) written = write_run(run);
  if (!written) keep_unrecorded(run);
  return written;
}

size_t Catalog::flush_unrecorded() {
  std::lock_guard lock(mu_);
  if (!unrecorded_.empty()) {
    size_t kept = unrecorded_.size();
    if (write_unrecorded()) log::info("catalog: stored {} run(s) kept in memory", kept);
  }
  return unrecorded_.size();
}

Result<void> Catalog::write_run(const RunRecord& run) {
  auto st = BKP_TRY(db_->prepare(
      run.id != 0
          ? "UPDATE runs SET ended_at = ?1, status = ?2, snapshot = ?3, snapshot_bytes = ?4, "
            "duration_ms = ?5, changed_bytes = ?6, changed_files = ?7, error = ?8 WHERE id = ?9"
          : "INSERT INTO runs(ended_at, status, snapshot, snapshot_bytes, duration_ms, "
            "changed_bytes, changed_files, error, host, path, started_at, server, token) "
            "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
            "ON CONFLICT(token) DO NOTHING"));
  st->bind(1, run.ended_at).bind(2, run_status_name(run.status)).bind(3, run.snapshot)
      .bind(4, run.snapshot_bytes).bind(5, run.duration_ms).bind(6, run.changed_bytes)
      .bind(7, run.changed_files).bind(8, run.error);
  if (run.id != 0) {
    st->bind(9, run.id);
  } else {
    st->bind(9, run.host).bind(10, run.path).bind(11, run.started_at).bind(12, server_)
        .bind(13, run.token);
  }
  return st->run();
}

Result<void> Catalog::write_unrecorded() {
  if (unrecorded_.empty()) return {};
  BKP_TRY_VOID(in_transaction([&]() -> Result<void> {
    for (const auto& run : unrecorded_) BKP_TRY_VOID(write_run(run));
    return {};
  }));
  unrecorded_.clear();
  return {};
}

void Catalog::keep_unrecorded(const RunRecord& run) {
  unrecorded_.push_back(run);
  if (unrecorded_.size() > kMaxUnrecordedRuns) {
    const RunRecord& dropped = unrecorded_.front();
    log::error("run of {}:{} started at {} ms dropped: {} runs are waiting to be stored in the "
               "catalog already", dropped.host, dropped.path, dropped.started_at,
               kMaxUnrecordedRuns);
    unrecorded_.pop_front();
  }
}

Result<std::vector<RunRecord>> Catalog::runs(const std::string& host, const std::string& path,
                                             size_t limit) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(fmt::format(
      "SELECT {} FROM runs WHERE host = ? AND path = ? AND ended_at IS NOT NULL "
      "ORDER BY id DESC LIMIT ?", kRunColumns)));
  st->bind(1, host).bind(2, path).bind(3, row_limit(limit));
  std::vector<RunRecord> out;
  while (BKP_TRY(st->step())) out.push_back(read_run(*st));
  bool kept = false;
  for (const auto& run : unrecorded_) {
    if (run.host != host || run.path != path) continue;
    out.push_back(run);
    kept = true;
  }
  if (kept) {
    std::stable_sort(out.begin(), out.end(), [](const RunRecord& a, const RunRecord& b) {
      return a.started_at > b.started_at;
    });
    if (limit != 0 && out.size() > limit) out.resize(limit);
  }
  return out;
}

Result<std::optional<RunRecord>> Catalog::last_run(const std::string& host, const std::string& path) {
  auto runs = BKP_TRY(this->runs(host, path, 1));
  if (runs.empty()) return std::optional<RunRecord>();
  return std::optional<RunRecord>(std::move(runs.front()));
}

Result<std::map<RunStatus, uint64_t>> Catalog::run_counts(const std::string& host,
                                                           const std::string& path,
                                                           int64_t since_ms) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT status, COUNT(*) FROM runs WHERE host = ? AND path = ? AND ended_at IS NOT NULL "
      "AND started_at >= ? GROUP BY status"));
  st->bind(1, host).bind(2, path).bind(3, since_ms);
  std::map<RunStatus, uint64_t> out;
  while (BKP_TRY(st->step())) out[parse_status(st->text(0))] += static_cast<uint64_t>(st->int64(1));
  for (const auto& run : unrecorded_) {
    if (run.host == host && run.path == path && run.started_at >= since_ms) ++out[run.status];
  }
  return out;
}

Result<void> Catalog::record_verify(const VerifyRecord& run) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO verify_runs(host, path, started_at, ended_at, result, checked, differences, "
      "summary, token) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(token) DO NOTHING"));
  st->bind(1, run.host).bind(2, run.path).bind(3, run.started_at).bind(4, run.ended_at)
      .bind(5, verify_result_name(run.result)).bind(6, run.checked).bind(7, run.differences)
      .bind(8, run.summary).bind(9, new_token());
  return st->run();
}

Result<std::vector<VerifyRecord>> Catalog::verify_runs(const std::string& host,
                                                       const std::string& path, size_t limit) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT id, started_at, ended_at, result, checked, differences, summary FROM verify_runs "
      "WHERE host = ? AND path = ? ORDER BY id DESC LIMIT ?"));
  st->bind(1, host).bind(2, path).bind(3, row_limit(limit));
  std::vector<VerifyRecord> out;
  while (BKP_TRY(st->step())) {
    VerifyRecord r{st->int64(0), host, path, st->int64(1), st->int64(2), VerifyResult::kFailed,
                   st->text(4), st->int64(5), st->text(6)};
    const std::string result = st->text(3);
    if (result == "clean") r.result = VerifyResult::kClean;
    if (result == "differs") r.result = VerifyResult::kDiffers;
    out.push_back(std::move(r));
  }
  return out;
}

Result<int> Catalog::close_own_open_runs(int64_t now, const std::string& error) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(std::string(kCloseOpenRuns) + "(server = ?3 OR server = '')"));
  st->bind(1, now).bind(2, error).bind(3, server_);
  BKP_TRY_VOID(st->run());
  return st->changes();
}

Result<int> Catalog::close_others_open_runs(const std::string& host, const std::string& path,
                                            int64_t now, const std::string& error) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(std::string(kCloseOpenRuns) +
                                 "server <> ?3 AND host = ?4 AND path = ?5"));
  st->bind(1, now).bind(2, error).bind(3, server_).bind(4, host).bind(5, path);
  BKP_TRY_VOID(st->run());
  return st->changes();
}

Result<void> Catalog::add_snapshot(const std::string& host, const std::string& path,
                                   const SnapshotRecord& s) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "INSERT INTO snapshots(host, path, id, bytes, created_at, change_counter, deleted_at, "
      "part_size, digests) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(host, path, id) DO "
      "UPDATE SET bytes = excluded.bytes, created_at = excluded.created_at, change_counter = "
      "excluded.change_counter, deleted_at = excluded.deleted_at, part_size = "
      "excluded.part_size, digests = excluded.digests"));
  st->bind(1, host).bind(2, path).bind(3, s.id).bind(4, s.bytes).bind(5, s.created_at)
      .bind(6, s.change_counter).bind(7, s.deleted_at).bind(8, int64_t{s.part_size})
      .bind(9, digests_text(s.digests));
  return st->run();
}

Result<void> Catalog::set_digests(const std::string& host, const std::string& path,
                                  const std::string& id, uint32_t part_size,
                                  const std::vector<PartDigest>& digests) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "UPDATE snapshots SET part_size = ?, digests = ? WHERE host = ? AND path = ? AND id = ?"));
  st->bind(1, int64_t{part_size}).bind(2, digests_text(digests)).bind(3, host).bind(4, path)
      .bind(5, id);
  return st->run();
}

Result<void> Catalog::note_copies(const std::string& host, const std::string& path,
                                  const std::string& replica, const std::vector<std::string>& ids,
                                  bool replace, int64_t now) {
  std::lock_guard lock(mu_);
  return in_transaction([&]() -> Result<void> {
    if (replace) {
      auto st = BKP_TRY(db_->prepare(
          "DELETE FROM snapshot_copies WHERE host = ? AND path = ? AND replica = ?"));
      st->bind(1, host).bind(2, path).bind(3, replica);
      BKP_TRY_VOID(st->run());
    }
    for (const auto& id : ids) {
      auto st = BKP_TRY(db_->prepare(
          "INSERT INTO snapshot_copies(host, path, id, replica, stored_at) "
          "VALUES(?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"));
      st->bind(1, host).bind(2, path).bind(3, id).bind(4, replica).bind(5, now);
      BKP_TRY_VOID(st->run());
    }
    return {};
  });
}

Result<std::map<std::string, std::vector<std::string>>> Catalog::snapshot_copies(
    const std::string& host, const std::string& path) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT id, replica FROM snapshot_copies WHERE host = ? AND path = ? ORDER BY id, replica"));
  st->bind(1, host).bind(2, path);
  std::map<std::string, std::vector<std::string>> out;
  while (BKP_TRY(st->step())) out[st->text(0)].push_back(st->text(1));
  return out;
}

Result<void> Catalog::mark_deleted(const std::string& host, const std::string& path,
                                   const std::vector<std::string>& ids, int64_t now) {
  if (ids.empty()) return {};
  std::lock_guard lock(mu_);
  return in_transaction([&]() -> Result<void> {
    auto st = BKP_TRY(db_->prepare(
        "UPDATE snapshots SET deleted_at = ? WHERE host = ? AND path = ? AND id = ? "
        "AND deleted_at IS NULL"));
    for (const auto& id : ids) {
      st->bind(1, now).bind(2, host).bind(3, path).bind(4, id);
      BKP_TRY_VOID(st->run());
    }
    return {};
  });
}

Result<std::vector<SnapshotRecord>> Catalog::snapshots(const std::string& host,
                                                       const std::string& path,
                                                       bool include_deleted) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(fmt::format(
      "SELECT id, bytes, created_at, change_counter, deleted_at, part_size, digests "
      "FROM snapshots WHERE host = ? AND path = ? {} ORDER BY id DESC",
      include_deleted ? "" : "AND deleted_at IS NULL")));
  st->bind(1, host).bind(2, path);
  std::vector<SnapshotRecord> out;
  while (BKP_TRY(st->step())) {
    out.push_back(SnapshotRecord{st->text(0), st->int64(1), st->int64(2), st->opt_int64(3),
                                 st->opt_int64(4), static_cast<uint32_t>(st->int64(5)),
                                 digests_of(st->text(6))});
  }
  return out;
}

Result<std::optional<int64_t>> Catalog::last_snapshot_counter(const std::string& host,
                                                              const std::string& path) {
  std::lock_guard lock(mu_);
  auto st = BKP_TRY(db_->prepare(
      "SELECT change_counter FROM snapshots WHERE host = ? AND path = ? ORDER BY id DESC LIMIT 1"));
  st->bind(1, host).bind(2, path);
  if (!BKP_TRY(st->step())) return std::optional<int64_t>();
  return std::optional<int64_t>(st->opt_int64(0).value_or(-1));
}

}  // namespace bkp::server
