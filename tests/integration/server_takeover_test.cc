// Two backupd instances on one PostgreSQL catalog (issue 16, item 2; server/leases.h): a volume
// registered through either is listed by both with the server that serves it; when that server
// is killed (kill -9), the other takes the volume over once its lease (3 s here) expires: it
// dials the node, rebuilds its own mirror from the node's reconcile, and the changes made while
// nobody served it reach it; its runs go on there. A replicator given both servers keeps its
// copy of the volume equal to the source across the takeover, also when the first server only
// hangs (its session with the replicator still open). With the snapshots in a shared bucket
// (SeededTakeoverTest, label integration-scale: radosgw too), the new server first seeds its
// mirror from the newest snapshot (server/seed.h), and the node sends only what changed since.
#include <unistd.h>

#include <csignal>
#include <memory>
#include <regex>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/s3/s3_env.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/postgres_db.h"
#include "tests/testutil/shared_catalog_server.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::wait_until;

class ServerTakeoverTest : public ControlTest {
 protected:
  void SetUp() override {
    ControlTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto db = testutil::PostgresDb::for_test();
    ASSERT_TRUE(db) << db.error().message;
    if (!*db) GTEST_SKIP() << testutil::kNoPostgresServer;
    db_ = std::move(*db);
  }

  // Where server a or b listens for nodes and replicators.
  std::string address(const std::string& server) const {
    return "127.0.0.1:" + std::to_string(server == "a" ? port() : b_->port());
  }
  // "" once r1's copy equals the source; the last difference (and r1's log) otherwise.
  std::string wait_replica() {
    std::string diff;
    if (wait_until([&] { return (diff = compare_trees(src(), replica(0))).empty() || expired(); },
                   60s) &&
        diff.empty()) {
      return "";
    }
    return "r1's copy: " + diff + "\n" + log_text("r1");
  }
  std::string socket_of(const std::string& server) const {
    return server == "a" ? control_socket() : b_->control_socket();
  }
  std::string mirror_of(const std::string& server) const {
    return server == "a" ? mirror() : b_->mirror(node_name, src());
  }
  std::string log_of(const std::string& server) {
    return server == "a" ? log_text("backupd") : b_->process().log();
  }

  // `bkptool --json ARGS` through server a's or b's control socket; the document, or null.
  Json ask(const std::string& server, const std::vector<std::string>& args) {
    std::vector<std::string> argv{binaries().bkptool, "--server", socket_of(server), "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = testutil::run_command(argv, 60s);
    return Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  }
  // Who serves the volume, as `list` on server `asked` says ("" nobody, "?" not listed).
  std::string served_by(const std::string& asked) {
    auto owners = testutil::served_by(binaries().bkptool, socket_of(asked));
    return owners && owners->contains(src()) ? owners->at(src()) : "?";
  }

  // Servers a and b on the test's database, r1 following both, the node (accepting both)
  // mounted and its volume registered.
  void start_servers_and_node() {
    // Server a is the fixture's backupd, server b one of its own; the node accepts both.
    const std::string a_config = scratch_dir("config-a") + "/backupd.toml";
    put(a_config, testutil::shared_catalog_config(db_->url(), "a", 3, extra_config_));
    backupd_args = {"--config", a_config};
    ASSERT_TRUE(start_server());
    auto b = testutil::SharedCatalogServer::start({.backupd = binaries().backupd,
                                                   .name = "b",
                                                   .catalog_url = db_->url(),
                                                   .lease_seconds = 3,
                                                   .extra_config = extra_config_,
                                                   .dir = scratch_dir("server-b"),
                                                   .log_path = log_path("backupd-b")});
    ASSERT_TRUE(b) << b.error().message;
    b_ = std::move(*b);
    backupfs_args = {"--server-id", b_->id()};
    // r1 follows both servers (the catalog, shared, already authorises it).
    replicator_args[0] = {"--server", address("b"), "--server-id", b_->id()};
    ASSERT_TRUE(start_replicator(0));
    ASSERT_TRUE(mount_source());
    ASSERT_TRUE(register_volume());
  }

  // Waits until both servers list the volume with the same server, which holds all of it, as
  // r1's copy does: that server ("a" or "b").
  std::string converged_owner() {
    std::string owner;
    EXPECT_TRUE(wait_until(
        [&] {
          owner = served_by("a");
          return (owner == "a" || owner == "b") && served_by("b") == owner &&
                 compare_trees(src(), mirror_of(owner)) == "" &&
                 compare_trees(src(), replica(0)) == "";
        },
        60s))
        << "served by '" << owner << "'\n" << log_of("a") << log_of("b");
    return owner;
  }

  // start_servers_and_node(), a mix of changes, converged_owner(): the volume's server, or ""
  // (the test failed or was skipped).
  std::string start_and_converge() {
    start_servers_and_node();
    if (IsSkipped() || HasFatalFailure()) return "";
    apply_mix(src(), 20);
    const std::string owner = converged_owner();
    return HasFailure() ? "" : owner;
  }

  // Kills the server with SIGKILL.
  void kill_9(const std::string& server) {
    if (server == "a") {
      ASSERT_TRUE(kill_server());
    } else {
      b_->process().signal(SIGKILL);
      ASSERT_TRUE(b_->process().wait_exit(10s));
    }
  }

  // Waits until `server` serves the volume and its mirror equals the source.
  void expect_taken_over_by(const std::string& server) {
    ASSERT_TRUE(wait_until(
        [&] { return served_by(server) == server && compare_trees(src(), mirror_of(server)) == ""; },
        90s))
        << "not taken over: served by '" << served_by(server) << "', "
        << compare_trees(src(), mirror_of(server)) << "\n"
        << log_of(server);
  }

  // A run on `server`, written, then a restore through it equal to the source.
  void expect_run_and_restore(const std::string& server) {
    auto run = ask(server, {"run", node_name, src()});
    ASSERT_TRUE(run.is_object() && run["run"].is_object()) << run.dump();
    EXPECT_EQ(run["run"]["status"], "written") << run.dump();
    const std::string out = scratch_dir("restored");
    auto restored = testutil::run_command(
        {binaries().bkptool, "--server", socket_of(server), "restore", node_name, src(), "--to", out},
        60s);
    ASSERT_EQ(restored.exit_code(), 0) << restored.output;
    EXPECT_EQ(compare_trees(src(), out), "");
  }

  std::string extra_config_;                  // more of both servers' backupd.toml
  std::unique_ptr<testutil::PostgresDb> db_;           // dropped after the servers stopped
  std::unique_ptr<testutil::SharedCatalogServer> b_;  // server b; stopped before db_ is dropped
};

TEST_F(ServerTakeoverTest, WhenTheServingBackupdDiesTheOtherTakesTheVolumeOverWithNothingLost) {
  const std::string owner = start_and_converge();
  if (owner.empty()) return;
  const std::string other = owner == "a" ? "b" : "a";
  auto listed = testutil::run_command(
      {binaries().bkptool, "--server", socket_of(other), "list"}, 60s);
  EXPECT_NE(listed.out.find("served by backupd " + owner), std::string::npos) << listed.output;
  auto before = ask(owner, {"run", node_name, src()});
  ASSERT_TRUE(before.is_object() && before["run"].is_object()) << before.dump();
  ASSERT_EQ(before["run"]["status"], "written") << before.dump();

  // kill -9 of the serving one; changes go on meanwhile.
  kill_9(owner);
  ASSERT_FALSE(HasFatalFailure());
  const auto killed = std::chrono::steady_clock::now();
  write_big_file(src("after-kill.bin"), 3 * kMiB, 5);
  apply_mix(src("later"), 10);
  expect_taken_over_by(other);
  ASSERT_FALSE(HasFatalFailure());
  const auto took = std::chrono::steady_clock::now() - killed;
  RecordProperty("takeover_ms",
                 static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  // The replica follows the volume to its new server.
  EXPECT_EQ(wait_replica(), "");
  EXPECT_NE(log_text("r1").find("moved: " + address(other) + " select"), std::string::npos)
      << "r1's log does not say which server the volume moved to\n" << log_text("r1");

  // Its runs go on there, and write what the node holds: its new mirror's change counter
  // starts past the one the last snapshot (the other server's) was cut at.
  EXPECT_NE(log_of(other).find("a mirror new here counts"), std::string::npos);
  expect_run_and_restore(other);
  if (owner == "b") b_.reset();  // already dead; ClusterTest's backupd stops in TearDown
}

// A server that hangs (SIGSTOP: its connections stay open, so r1's session with it does not
// end) loses the volume once its lease expires and the node gives up on its acks. The other
// server's Select hands the tree over on r1 at once, from the session that still holds it
// (replicator/trees.h), and r1's copy follows the source through the new server. Once the hung
// server runs again, its stale session gives way and the copy stays current.
TEST_F(ServerTakeoverTest, AHungServersVolumeIsHandedOverOnTheReplicator) {
  const std::string owner = start_and_converge();
  if (owner.empty()) return;
  const std::string other = owner == "a" ? "b" : "a";
  testutil::Daemon& hung = owner == "a" ? *backupd() : b_->process();
  hung.signal(SIGSTOP);
  // Until SIGCONT, only EXPECTs: the teardown needs it running.
  apply_mix(src("later"), 10);
  EXPECT_TRUE(wait_until(
      [&] {
        return (served_by(other) == other && compare_trees(src(), mirror_of(other)) == "") ||
               expired();
      },
      80s))
      << "not taken over: served by '" << served_by(other) << "', "
      << compare_trees(src(), mirror_of(other));
  EXPECT_EQ(wait_replica(), "");
  EXPECT_NE(log_text("r1").find("moved: " + address(other) + " selected it while the session with " +
                                address(owner) + " still held it"),
            std::string::npos)
      << log_text("r1");
  hung.signal(SIGCONT);

  append(src("later/after-resume.txt"), "the hung server is back\n");
  EXPECT_TRUE(wait_until([&] { return compare_trees(src(), mirror_of(other)) == "" || expired(); },
                         30s))
      << compare_trees(src(), mirror_of(other));
  EXPECT_EQ(wait_replica(), "");
}

class SeededTakeoverTest : public ServerTakeoverTest {};

TEST_F(SeededTakeoverTest, TheNewServerSeedsItsMirrorFromTheBucketAndTheNodeSendsOnlyChanges) {
  std::string why;
  auto c = server::test_s3_credentials(&why);
  if (!c) GTEST_SKIP() << why;
  const std::string secret = scratch_dir("s3") + "/s3.toml";
  put(secret, server::s3_credentials_toml(*c), 0600);
  extra_config_ = "snapshot_store = \"s3://bkp-seed-" + std::to_string(::getpid()) +
                  "/backups\"\nsnapshot_store_credentials = \"" + secret + "\"\n";
  const std::string owner = start_and_converge();
  if (owner.empty()) return;
  constexpr uint64_t kBig = 16 * kMiB;
  write_big_file(src("big.bin"), kBig, 3);
  ASSERT_EQ(converged_owner(), owner);
  const std::string other = owner == "a" ? "b" : "a";
  auto before = ask(owner, {"run", node_name, src()});
  ASSERT_TRUE(before.is_object() && before["run"].is_object()) << before.dump();
  ASSERT_EQ(before["run"]["status"], "written") << before.dump();

  kill_9(owner);
  ASSERT_FALSE(HasFatalFailure());
  write_big_file(src("after-kill.bin"), kMiB, 5);
  apply_mix(src("later"), 10);
  expect_taken_over_by(other);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(wait_replica(), "") << "r1's copy after the seeded mirror's rescan";
  EXPECT_NE(log_of(other).find("mirror seeded from snapshot " +
                               before["run"]["snapshot"].get<std::string>()),
            std::string::npos)
      << log_of(other);

  // The node's last baseline, the one to the new server: the snapshot's files were there.
  static const std::regex kBaseline(
      R"(baseline: \d+ ops \((\d+) entries already on backupd\), \d+ files, (\d+) bytes of data)");
  const std::string node_log = log_text("backupfs");
  std::smatch last;
  for (auto it = std::sregex_iterator(node_log.begin(), node_log.end(), kBaseline);
       it != std::sregex_iterator(); ++it) {
    last = *it;
  }
  ASSERT_FALSE(last.empty()) << node_log;
  EXPECT_GT(std::stoull(last[1]), 0u) << last.str();
  EXPECT_LT(std::stoull(last[2]), kBig) << "the snapshot's big file was sent again: " << last.str();
  expect_run_and_restore(other);
  // Each run once in the shared history, both written (hourly schedule: no other run).
  Json history = ask(other, {"history", node_name, src()});
  ASSERT_TRUE(history.is_object() && history["runs"].is_array()) << history.dump();
  ASSERT_EQ(history["runs"].size(), 2u) << history.dump();
  for (const Json& r : history["runs"]) EXPECT_EQ(r["status"], "written") << history.dump();
  EXPECT_NE(history["runs"][0]["snapshot"], history["runs"][1]["snapshot"]) << history.dump();
  if (owner == "b") b_.reset();
}

}  // namespace
}  // namespace bkp::it
