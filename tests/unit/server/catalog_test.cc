// backupd's catalog, on both engines (/sqlite, /postgres: catalog_engine.h): a version 1 SQLite
// catalog (volumes named by their address) opens with every registration's address equal to its
// name; a run whose row could not be inserted when it began is stored whole once it ends; a
// catalog of a newer schema is refused. Several catalogs on one database (backupd instances
// sharing PostgreSQL) see each other's rows, create a fresh database's schema once between them,
// and win or retry their conflicting transactions; a dropped connection is reopened by the next
// call. The PostgreSQL engine's own pieces: placeholders, and URIs named without passwords.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "server/catalog.h"
#include "server/catalog_schema.h"
#include "server/postgres.h"
#include "server/sqlite.h"
#include "tests/testutil/temp_dir.h"
#include "tests/unit/server/catalog_engine.h"

namespace bkp::server {
namespace {

using CatalogTest = CatalogEngineTest;
using CatalogPostgresTest = CatalogEngineTest;  // what only PostgreSQL does

constexpr const char* kVersion1 = R"sql(
CREATE TABLE registrations(host TEXT NOT NULL, path TEXT NOT NULL, port INTEGER NOT NULL,
  every_seconds INTEGER NOT NULL, registered_at INTEGER NOT NULL, PRIMARY KEY(host, path));
CREATE TABLE snapshots(host TEXT NOT NULL, path TEXT NOT NULL, id TEXT NOT NULL,
  bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, change_counter INTEGER,
  deleted_at INTEGER, PRIMARY KEY(host, path, id));
CREATE TABLE runs(id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, path TEXT NOT NULL,
  started_at INTEGER NOT NULL, ended_at INTEGER, status TEXT, snapshot TEXT,
  snapshot_bytes INTEGER NOT NULL DEFAULT 0, duration_ms INTEGER NOT NULL DEFAULT 0,
  changed_bytes INTEGER NOT NULL DEFAULT 0, changed_files INTEGER NOT NULL DEFAULT 0, error TEXT);
INSERT INTO registrations VALUES('127.0.0.1', '/srv/app', 7701, 60, 1000);
INSERT INTO runs(host, path, started_at, ended_at, status) VALUES('127.0.0.1', '/srv/app', 2000, 2500, 'unchanged');
PRAGMA user_version=1;
)sql";

RunRecord failed_run(int64_t id, int64_t started_at, const char* error) {
  RunRecord r;
  r.id = id;
  r.host = "web1";
  r.path = "/srv/app";
  r.started_at = started_at;
  r.ended_at = started_at + 10;
  r.status = RunStatus::kFailed;
  r.duration_ms = 10;
  r.changed_bytes = 4096;
  r.changed_files = 3;
  r.error = error;
  return r;
}

Registration web(int n) {
  return Registration{fmt::format("web{}", n), fmt::format("10.0.0.{}", n), 7702, "/srv/app", 300,
                      5000};
}

std::vector<std::string> hosts_of(Catalog& c) {
  std::vector<std::string> out;
  auto regs = c.registrations();
  EXPECT_TRUE(regs) << regs.error().message;
  if (regs) {
    for (const auto& r : *regs) out.push_back(r.host);
  }
  return out;
}

// SQLite only: PostgreSQL catalogs began at version 5.
TEST(CatalogSqliteTest, AVersion1CatalogKeepsItsRegistrationsNamedByTheirAddress) {
  testutil::TempDir tmp("bkp-catalog");
  std::string path = tmp.sub("catalog.db");
  {
    auto db = Sqlite::open(path);
    ASSERT_TRUE(db) << db.error().message;
    ASSERT_TRUE((*db)->exec(kVersion1));
  }
  auto catalog = Catalog::open(path);
  ASSERT_TRUE(catalog) << catalog.error().message;
  auto regs = (*catalog)->registrations();
  ASSERT_TRUE(regs) << regs.error().message;
  ASSERT_EQ(regs->size(), 1u);
  EXPECT_EQ((*regs)[0].host, "127.0.0.1");
  EXPECT_EQ((*regs)[0].address, "127.0.0.1");
  EXPECT_EQ((*regs)[0].port, 7701);
  EXPECT_EQ((*regs)[0].every_seconds, 60);
  auto runs = (*catalog)->runs("127.0.0.1", "/srv/app", 0);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].status, RunStatus::kUnchanged);

  // A new registration stores its address apart from its name, and both come back.
  ASSERT_TRUE((*catalog)->add_registration(Registration{"web1", "10.0.0.7", 7702, "/srv/app", 300, 5000}));
  catalog->reset();
  auto reopened = Catalog::open(path);
  ASSERT_TRUE(reopened) << reopened.error().message;
  auto web1 = (*reopened)->registration("web1", "/srv/app");
  ASSERT_TRUE(web1 && *web1);
  EXPECT_EQ((*web1)->address, "10.0.0.7");
  EXPECT_EQ((*web1)->port, 7702);
}

TEST_P(CatalogTest, ARunThatCouldNotBeginIsStoredWholeWhenItEnds) {
  auto catalog = open_catalog();
  ASSERT_TRUE(catalog);
  Catalog& c = *catalog;
  auto begun = c.begin_run("web1", "/srv/app", 1000);
  ASSERT_TRUE(begun) << begun.error().message;
  ASSERT_TRUE(c.record_run(failed_run(*begun, 1000, "node unreachable")));
  ASSERT_TRUE(c.record_run(failed_run(0, 2000, "catalog: database or disk is full")));
  EXPECT_EQ(c.flush_unrecorded(), 0u);

  auto runs = c.runs("web1", "/srv/app", 0);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 2u);
  const RunRecord& newest = (*runs)[0];
  EXPECT_GT(newest.id, *begun);
  EXPECT_EQ(newest.started_at, 2000);
  EXPECT_EQ(newest.status, RunStatus::kFailed);
  EXPECT_EQ(newest.error, "catalog: database or disk is full");
  EXPECT_EQ(newest.changed_files, 3);
  EXPECT_EQ(newest.changed_bytes, 4096);
  EXPECT_EQ((*runs)[1].error, "node unreachable");
  auto last = c.last_run("web1", "/srv/app");
  ASSERT_TRUE(last && *last);
  EXPECT_EQ((*last)->started_at, 2000);
}

// Several servers on one catalog: each closes at startup only the runs it left open, and the
// server taking a volume over closes those its last server left open; a run or verify whose
// insert arrives twice (sent again after a lost connection) is stored once.
TEST_P(CatalogTest, OpenRunsAreClosedByTheirServerOrTheOneTakingTheVolumeOver) {
  auto a = Catalog::open(where(), "a");
  auto b = Catalog::open(where(), "b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE((*a)->begin_run("web1", "/srv/app", 1000));
  ASSERT_TRUE((*b)->begin_run("web2", "/srv/app", 1000));
  auto closed = (*a)->close_own_open_runs(2000, "interrupted");
  ASSERT_TRUE(closed) << closed.error().message;
  EXPECT_EQ(*closed, 1);
  auto finished = [&](const char* host) {
    auto runs = (*a)->runs(host, "/srv/app", 0);
    return runs ? runs->size() : size_t{99};
  };
  EXPECT_EQ(finished("web1"), 1u);
  EXPECT_EQ(finished("web2"), 0u);  // b's run goes on

  ASSERT_TRUE((*a)->begin_run("web1", "/srv/app", 3000));
  auto others = (*b)->close_others_open_runs("web2", "/srv/app", 4000, "taken over");
  ASSERT_TRUE(others) << others.error().message;
  EXPECT_EQ(*others, 0);  // its own
  others = (*b)->close_others_open_runs("web1", "/srv/app", 4000, "taken over");
  ASSERT_TRUE(others) << others.error().message;
  EXPECT_EQ(*others, 1);
  auto last = (*a)->last_run("web1", "/srv/app");
  ASSERT_TRUE(last && *last);
  EXPECT_EQ((*last)->error, "taken over");

  RunRecord twice = failed_run(0, 5000, "node unreachable");
  twice.token = "0123456789abcdef";
  ASSERT_TRUE((*a)->record_run(twice));
  ASSERT_TRUE((*a)->record_run(twice));
  auto runs = (*b)->runs("web1", "/srv/app", 0);
  ASSERT_TRUE(runs) << runs.error().message;
  EXPECT_EQ(runs->size(), 3u);  // 1000, 3000 and 5000 once
}

// Every other call once, so that each statement's SQL is run by both engines: snapshots with
// their digests and copies, verifies, run counts, startup's closing of open runs, and the
// registration's fields.
TEST_P(CatalogTest, SnapshotsVerifiesAndRunsReadBackAsWritten) {
  auto catalog = open_catalog();
  ASSERT_TRUE(catalog);
  Catalog& c = *catalog;
  ASSERT_TRUE(c.add_registration(web(1)));
  EXPECT_TRUE(*c.set_copies("web1", "/srv/app", 2));
  EXPECT_FALSE(*c.set_copies("web9", "/srv/app", 2));
  ASSERT_TRUE(c.set_node_id("web1", "/srv/app", "NODE-ID"));
  auto reg = c.registration("web1", "/srv/app");
  ASSERT_TRUE(reg && *reg);
  EXPECT_EQ((*reg)->copies, 2);
  EXPECT_EQ((*reg)->node_id, "NODE-ID");
  EXPECT_EQ((*reg)->registered_at, 5000);

  PartDigest digest{};
  digest.fill(0xab);
  ASSERT_TRUE(c.add_snapshot("web1", "/srv/app", SnapshotRecord{"20261126T010203.000Z", 100, 1000, 7}));
  ASSERT_TRUE(c.add_snapshot("web1", "/srv/app", SnapshotRecord{"20261127T010203.000Z", 200, 2000}));
  ASSERT_TRUE(c.set_digests("web1", "/srv/app", "20261126T010203.000Z", 4096, {digest, digest}));
  ASSERT_TRUE(c.mark_deleted("web1", "/srv/app", {"20261127T010203.000Z"}, 3000));
  ASSERT_TRUE(c.note_copies("web1", "/srv/app", "r1", {"20261126T010203.000Z"}, true, 3000));
  ASSERT_TRUE(c.note_copies("web1", "/srv/app", "r1", {"20261126T010203.000Z"}, false, 3001));
  auto live = c.snapshots("web1", "/srv/app", /*include_deleted=*/false);
  ASSERT_TRUE(live) << live.error().message;
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].change_counter, 7);
  EXPECT_EQ((*live)[0].part_size, 4096u);
  EXPECT_EQ((*live)[0].digests, (std::vector<PartDigest>{digest, digest}));
  auto all = c.snapshots("web1", "/srv/app", /*include_deleted=*/true);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].deleted_at, 3000);
  EXPECT_EQ(*c.last_snapshot_counter("web1", "/srv/app"), -1);  // the newest has none
  auto copies = c.snapshot_copies("web1", "/srv/app");
  ASSERT_TRUE(copies) << copies.error().message;
  EXPECT_EQ((*copies)["20261126T010203.000Z"], std::vector<std::string>{"r1"});

  ASSERT_TRUE(c.record_verify(VerifyRecord{0, "web1", "/srv/app", 10, 20, VerifyResult::kDiffers,
                                           "node", 3, "node: 3 differ"}));
  auto verifies = c.verify_runs("web1", "/srv/app");
  ASSERT_TRUE(verifies) << verifies.error().message;
  ASSERT_EQ(verifies->size(), 1u);
  EXPECT_EQ((*verifies)[0].result, VerifyResult::kDiffers);
  EXPECT_EQ((*verifies)[0].summary, "node: 3 differ");

  auto begun = c.begin_run("web1", "/srv/app", 1000);
  ASSERT_TRUE(begun) << begun.error().message;
  ASSERT_TRUE(c.begin_run("web1", "/srv/app", 5000));
  auto closed = c.close_own_open_runs(4000, "interrupted");
  ASSERT_TRUE(closed) << closed.error().message;
  EXPECT_EQ(*closed, 2);
  auto runs = c.runs("web1", "/srv/app", 0);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[1].duration_ms, 3000);
  EXPECT_EQ((*runs)[0].duration_ms, 0);  // began after the stop: never negative
  auto counts = c.run_counts("web1", "/srv/app", 2000);
  ASSERT_TRUE(counts) << counts.error().message;
  EXPECT_EQ(*counts, (std::map<RunStatus, uint64_t>{{RunStatus::kFailed, 1}}));

  EXPECT_TRUE(*c.has_volume("web1", "/srv/app"));
  ASSERT_TRUE(c.remove_registration("web1", "/srv/app", /*purge=*/false));
  EXPECT_TRUE(*c.has_volume("web1", "/srv/app"));  // its history stays
  ASSERT_TRUE(c.remove_registration("web1", "/srv/app", /*purge=*/true));
  EXPECT_FALSE(*c.has_volume("web1", "/srv/app"));
}

TEST_P(CatalogTest, ACatalogOfANewerSchemaIsRefused) {
  ASSERT_TRUE(open_catalog());
  auto db = connect();
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->exec(GetParam() == Database::Engine::kSqlite
                           ? "PRAGMA user_version=99"
                           : "UPDATE schema_version SET version = 99"));
  auto refused = Catalog::open(where());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, EPROTO);
  EXPECT_NE(refused.error().message.find("schema version 99 is newer than this backupd"),
            std::string::npos) << refused.error().message;
}

// A version 6 catalog (before runs named their server) upgrades in place: its open run, of no
// server, is closed by whichever server starts, and runs begin with tokens after it.
TEST_P(CatalogTest, AVersion6CatalogUpgradesAndItsOpenRunsAreAnyServers) {
  ASSERT_TRUE(open_catalog());
  {
    auto db = connect();
    ASSERT_TRUE(db);
    ASSERT_TRUE(db->exec(
        "DROP INDEX runs_by_token; DROP INDEX verify_runs_by_token; "
        "ALTER TABLE runs DROP COLUMN server; ALTER TABLE runs DROP COLUMN token; "
        "ALTER TABLE verify_runs DROP COLUMN token; "
        "INSERT INTO runs(host, path, started_at) VALUES('web1', '/srv/app', 1000)"));
    ASSERT_TRUE(db->exec(GetParam() == Database::Engine::kSqlite
                             ? "PRAGMA user_version=6"
                             : "UPDATE schema_version SET version = 6"));
  }
  auto a = Catalog::open(where(), "a");
  ASSERT_TRUE(a) << a.error().message;
  ASSERT_TRUE((*a)->begin_run("web1", "/srv/app", 2000));
  ASSERT_TRUE((*a)->record_verify(VerifyRecord{0, "web1", "/srv/app", 10, 20,
                                               VerifyResult::kClean, "node", 0, ""}));
  auto closed = (*a)->close_own_open_runs(3000, "interrupted");
  ASSERT_TRUE(closed) << closed.error().message;
  EXPECT_EQ(*closed, 2) << "the version 6 run and a's own";
  auto again = Catalog::open(where(), "b");
  ASSERT_TRUE(again) << again.error().message;  // already at the latest version
}

TEST_P(CatalogTest, TwoCatalogsOnOneDatabaseSeeEachOthersRegistrations) {
  auto a = open_catalog();
  auto b = open_catalog();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->add_registration(web(1)));
  ASSERT_TRUE(b->add_registration(web(2)));
  EXPECT_EQ(hosts_of(*a), (std::vector<std::string>{"web1", "web2"}));
  EXPECT_EQ(hosts_of(*b), (std::vector<std::string>{"web1", "web2"}));
  auto again = b->add_registration(web(1));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, EEXIST);
  ASSERT_TRUE(a->remove_registration("web2", "/srv/app", /*purge=*/true));
  EXPECT_EQ(hosts_of(*b), std::vector<std::string>{"web1"});
}

// Leases (server/leases.h): of two servers, one takes a free lease and the other cannot until
// it expires or is given up; renewals extend only live leases of their owner; owners() says
// who serves each registered volume; an unregistered volume's lease goes with it.
TEST_P(CatalogTest, ALeaseHasOneOwnerUntilItExpiresOrIsGivenUp) {
  auto a = open_catalog();
  auto b = open_catalog();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->add_registration(web(1)));
  ASSERT_TRUE(a->heartbeat("a", 1000));
  ASSERT_TRUE(b->heartbeat("b", 1500));
  EXPECT_EQ(*a->live_servers(1200), std::vector<std::string>{"b"});
  EXPECT_EQ(*b->live_servers(0), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ((*a->owners(1000))["web1:/srv/app"], "");

  EXPECT_TRUE(*a->take_lease("web1", "/srv/app", "a", 1000, 2000));
  EXPECT_FALSE(*b->take_lease("web1", "/srv/app", "b", 1999, 3000)) << "a holds it until 2000";
  EXPECT_EQ((*b->owners(1999))["web1:/srv/app"], "a");
  EXPECT_TRUE(*a->take_lease("web1", "/srv/app", "a", 1999, 2500)) << "taking it again renews";
  EXPECT_EQ(*a->renew_leases("a", 2400, 3400), std::set<std::string>{"web1:/srv/app"});
  EXPECT_EQ(*b->renew_leases("b", 2400, 3400), std::set<std::string>{});
  // a stops renewing: past 3400 the lease is nobody's, and b takes it.
  EXPECT_EQ((*b->owners(3401))["web1:/srv/app"], "");
  EXPECT_EQ(*a->renew_leases("a", 3401, 4401), std::set<std::string>{}) << "expired: not renewed";
  EXPECT_TRUE(*b->take_lease("web1", "/srv/app", "b", 3401, 4401));
  EXPECT_FALSE(*a->take_lease("web1", "/srv/app", "a", 3500, 4500));
  // Given up, it is free at once.
  ASSERT_TRUE(a->release_lease("web1", "/srv/app", "a"));  // a cannot give up b's lease
  EXPECT_EQ((*a->owners(3500))["web1:/srv/app"], "b");
  ASSERT_TRUE(b->release_lease("web1", "/srv/app", "b"));
  EXPECT_EQ((*a->owners(3500))["web1:/srv/app"], "");
  EXPECT_TRUE(*a->take_lease("web1", "/srv/app", "a", 3500, 4500));
  ASSERT_TRUE(a->remove_registration("web1", "/srv/app", /*purge=*/false));
  ASSERT_TRUE(a->add_registration(web(1)));
  EXPECT_EQ((*b->owners(3600))["web1:/srv/app"], "") << "a new registration starts unleased";
}

// Two instances rewriting the same volume's rows at once: on PostgreSQL one of each conflicting
// pair of transactions fails to serialize and runs again; every call succeeds, and the rows
// are those of a last writer, never a mixture.
TEST_P(CatalogTest, ConflictingTransactionsOfTwoCatalogsAllSucceed) {
  auto first = open_catalog();
  auto second = open_catalog();
  ASSERT_TRUE(first && second);
  constexpr int kRounds = 30;
  auto writer = [](Catalog& c, const std::string& replica) {
    for (int i = 0; i < kRounds; ++i) {
      auto placed = c.set_placement("web1", "/srv/app", {replica, replica + "b"}, i);
      EXPECT_TRUE(placed) << placed.error().message;
      auto dropped = c.add_drops({"r1", "r2"}, "web1", "/srv/app", i % 2 == 0, i);
      EXPECT_TRUE(dropped) << dropped.error().message;
    }
  };
  std::thread t1(writer, std::ref(*first), "x");
  std::thread t2(writer, std::ref(*second), "y");
  t1.join();
  t2.join();
  auto placements = first->placements();
  ASSERT_TRUE(placements) << placements.error().message;
  const auto& replicas = (*placements)["web1:/srv/app"];
  EXPECT_TRUE(replicas == (std::set<std::string>{"x", "xb"}) ||
              replicas == (std::set<std::string>{"y", "yb"}));
  auto drops = second->drops();
  ASSERT_TRUE(drops) << drops.error().message;
  ASSERT_EQ(drops->size(), 2u);
  EXPECT_TRUE((*drops)[0].purge);  // a purge, once queued, stays
}

TEST_P(CatalogPostgresTest, CatalogsOpeningAFreshDatabaseAtOnceAllSucceed) {
  constexpr int kInstances = 4;
  std::vector<std::unique_ptr<Catalog>> catalogs(kInstances);
  std::vector<std::thread> threads;
  for (auto& c : catalogs) {
    threads.emplace_back([&c, this] {
      auto opened = Catalog::open(where());
      EXPECT_TRUE(opened) << opened.error().message;
      if (opened) c = std::move(*opened);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& c : catalogs) ASSERT_TRUE(c);
  ASSERT_TRUE(catalogs[0]->add_registration(web(1)));
  EXPECT_EQ(hosts_of(*catalogs[kInstances - 1]), std::vector<std::string>{"web1"});
  auto db = connect();
  ASSERT_TRUE(db);
  auto versions = db->prepare("SELECT COUNT(*), MAX(version) FROM schema_version");
  ASSERT_TRUE(versions);
  ASSERT_TRUE(*(*versions)->step());
  EXPECT_EQ((*versions)->int64(0), 1);
  EXPECT_EQ((*versions)->int64(1), kCatalogSchemaVersion);
}

// Terminates every other session on the test's database and waits until they are gone.
void kill_other_sessions(Database& db) {
  ASSERT_TRUE(db.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()"));
  auto others = db.prepare("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND pid <> pg_backend_pid()");
  ASSERT_TRUE(others);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    auto step = (*others)->step();
    ASSERT_TRUE(step && *step) << (step ? "no row" : step.error().message);
    int64_t n = (*others)->int64(0);
    ASSERT_TRUE((*others)->run());
    if (n == 0) return;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << n << " session(s) still there";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST_P(CatalogPostgresTest, AConnectionKilledUnderneathIsReopenedByTheNextCall) {
  auto catalog = open_catalog();
  auto killer = connect();
  ASSERT_TRUE(catalog && killer);

  kill_other_sessions(*killer);
  auto added = catalog->add_registration(web(1));  // one statement: sent again after PQreset
  ASSERT_TRUE(added) << added.error().message;

  kill_other_sessions(*killer);
  auto placed = catalog->set_placement("web1", "/srv/app", {"r1"}, 1);  // a transaction
  ASSERT_TRUE(placed) << placed.error().message;

  auto other = open_catalog();
  ASSERT_TRUE(other);
  EXPECT_EQ(hosts_of(*other), std::vector<std::string>{"web1"});
  auto placements = other->placements();
  ASSERT_TRUE(placements) << placements.error().message;
  EXPECT_EQ((*placements)["web1:/srv/app"], std::set<std::string>{"r1"});
}

// The connection is reset once and the statement fails again: the call returns the error, and
// the finished run is kept in memory rather than lost.
TEST_P(CatalogPostgresTest, ACatalogThatStaysAwayFailsTheCallAndTheRunIsKept) {
  auto catalog = open_catalog();
  ASSERT_TRUE(catalog);
  auto begun = catalog->begin_run("web1", "/srv/app", 1000);
  ASSERT_TRUE(begun) << begun.error().message;
  drop_database();
  auto recorded = catalog->record_run(failed_run(*begun, 1000, "node unreachable"));
  ASSERT_FALSE(recorded);
  EXPECT_NE(recorded.error().message.find("catalog " + where()), std::string::npos)
      << recorded.error().message;
  EXPECT_EQ(catalog->flush_unrecorded(), 1u);
}

INSTANTIATE_TEST_SUITE_P(, CatalogTest, kCatalogEngines, catalog_engine_name);
INSTANTIATE_TEST_SUITE_P(, CatalogPostgresTest, ::testing::Values(Database::Engine::kPostgres),
                         catalog_engine_name);

TEST(CatalogPostgresUriTest, AnUnreachableServerIsAnErrorNamingTheCatalogWithoutItsPassword) {
  // Port 1 on loopback: nothing listens, the connection is refused at once.
  auto catalog = Catalog::open("postgresql://backupd:s3cret@127.0.0.1:1/catalog?password=s3cret");
  ASSERT_FALSE(catalog);
  const std::string& msg = catalog.error().message;
  EXPECT_TRUE(msg.starts_with(
      "catalog postgresql://backupd:***@127.0.0.1:1/catalog?password=***: cannot connect: "))
      << msg;
  EXPECT_EQ(msg.find("s3cret"), std::string::npos) << msg;
}

TEST(CatalogPostgresUriTest, PlaceholdersBecomeNumberedParametersOutsideQuotes) {
  EXPECT_EQ(postgres_placeholders("SELECT ? , ?, '?', \"a?\" FROM t WHERE x = ? -- ?\n AND y = ?"),
            "SELECT $1 , $2, '?', \"a?\" FROM t WHERE x = $3 -- ?\n AND y = $4");
  EXPECT_EQ(postgres_placeholders("x = ?2 AND y = ?1 AND z = ? AND w = 'it''s ?'"),
            "x = $2 AND y = $1 AND z = $3 AND w = 'it''s ?'");
}

TEST(CatalogPostgresUriTest, UrisAreShownWithoutPasswords) {
  EXPECT_EQ(redact_uri("postgresql://u:p%40ss@h:5432/db"), "postgresql://u:***@h:5432/db");
  EXPECT_EQ(redact_uri("postgres://u@h/db?sslmode=require&password=x&a=b"),
            "postgres://u@h/db?sslmode=require&password=***&a=b");
  EXPECT_EQ(redact_uri("postgresql://h:5432/db"), "postgresql://h:5432/db");
}

}  // namespace
}  // namespace bkp::server
