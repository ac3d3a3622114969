// backupd's catalog: a version 1 catalog (volumes named by their address) opens as version 2
// with every registration's address equal to its name, and a run whose row could not be
// inserted when it began is stored whole once it ends.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "server/catalog.h"
#include "server/sqlite.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

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

TEST(CatalogTest, AVersion1CatalogKeepsItsRegistrationsNamedByTheirAddress) {
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

TEST(CatalogTest, ARunThatCouldNotBeginIsStoredWholeWhenItEnds) {
  testutil::TempDir tmp("bkp-catalog");
  auto catalog = Catalog::open(tmp.sub("catalog.db"));
  ASSERT_TRUE(catalog) << catalog.error().message;
  Catalog& c = **catalog;
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

}  // namespace
}  // namespace bkp::server
