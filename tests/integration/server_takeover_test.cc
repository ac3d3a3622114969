// Two backupd instances on one PostgreSQL catalog (issue 16, item 2; server/leases.h): a volume
// registered through either is listed by both with the server that serves it; when that server
// is killed (kill -9), the other takes the volume over once its lease (3 s here) expires: it
// dials the node, rebuilds its own mirror from the node's reconcile, and the changes made while
// nobody served it reach it; its runs go on there. With the snapshots in a shared bucket
// (SeededTakeoverTest, label integration-scale: radosgw too), the new server first seeds its
// mirror from the newest snapshot (server/seed.h), and the node sends only what changed since.
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <memory>
#include <regex>

#include "common/path.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/s3/s3_env.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/postgres_db.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::wait_until;

class ServerTakeoverTest : public ControlTest {
 protected:
  // backupd.toml of server `name` on the test's database, leases of 3 s, and extra_config_.
  std::string config(const std::string& name) {
    const std::string path = scratch_dir("config-" + name) + "/backupd.toml";
    put(path, "catalog = \"" + db_->url() + "\"\nserver_name = \"" + name +
                  "\"\nlease_seconds = 3\n" + extra_config_);
    return path;
  }
  std::string b_state() const { return state_dir() + "-b"; }
  std::string b_socket() const { return b_state() + "/control.sock"; }
  std::string b_mirror() const {
    return b_state() + "/volumes/" + node_name + "/" + escape_path(src()) + "/mirror";
  }
  std::string socket_of(const std::string& server) const {
    return server == "a" ? control_socket() : b_socket();
  }
  std::string mirror_of(const std::string& server) const {
    return server == "a" ? mirror() : b_mirror();
  }
  std::string log_of(const std::string& server) {
    return server == "a" ? log_text("backupd") : b_->log();
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
    Json doc = ask(asked, {"list"});
    if (!doc.is_object() || !doc["volumes"].is_array()) return "?";
    for (const Json& v : doc["volumes"]) {
      if (v.value("path", "") == src() && v["served_by"].is_string()) return v["served_by"];
    }
    return "?";
  }

  // Servers a and b on a test database (the test is skipped without a PostgreSQL server), the
  // node (accepting both) mounted and its volume registered.
  void start_servers_and_node() {
    auto db = testutil::PostgresDb::for_test();
    ASSERT_TRUE(db) << db.error().message;
    if (!*db) GTEST_SKIP() << testutil::kNoPostgresServer;
    db_ = std::move(*db);
    // Server b: its own state and identity; the node accepts both servers.
    ::mkdir(b_state().c_str(), 0700);
    auto b_id = testutil::run_command({binaries().backupd, "--state-dir", b_state(), "--show-id"});
    ASSERT_EQ(b_id.exit_code(), 0) << b_id.output;
    std::string id = b_id.out.substr(0, b_id.out.find('\n'));
    backupfs_args = {"--server-id", id};
    backupd_args = {"--config", config("a")};
    ASSERT_TRUE(start_server());
    const std::string b_port_file = b_state() + "/port";
    b_ = std::make_unique<testutil::Daemon>(
        "backupd-b",
        std::vector<std::string>{binaries().backupd, "--config", config("b"), "--state-dir",
                                 b_state(), "--listen", "127.0.0.1:0", "--port-file", b_port_file,
                                 "--control-socket", b_socket(), "--http-listen", "off"},
        log_path("backupd-b"));
    ASSERT_TRUE(wait_until([&] { return testutil::read_port_file(b_port_file) || !b_->alive(); },
                           20s))
        << b_->log_tail();
    ASSERT_TRUE(b_->alive()) << b_->log_tail();
    ASSERT_TRUE(mount_source());
    ASSERT_TRUE(register_volume());
  }

  // Waits until both servers list the volume with the same server, which holds all of it: that
  // server ("a" or "b").
  std::string converged_owner() {
    std::string owner;
    EXPECT_TRUE(wait_until(
        [&] {
          owner = served_by("a");
          return (owner == "a" || owner == "b") && served_by("b") == owner &&
                 compare_trees(src(), mirror_of(owner)) == "";
        },
        60s))
        << "served by '" << owner << "'\n" << log_text("backupd") << b_->log_tail();
    return owner;
  }

  // Kills the server with SIGKILL.
  void kill_9(const std::string& server) {
    if (server == "a") {
      ASSERT_TRUE(kill_server());
    } else {
      b_->signal(SIGKILL);
      ASSERT_TRUE(b_->wait_exit(10s));
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
  std::unique_ptr<testutil::PostgresDb> db_;  // dropped after the servers stopped
  std::unique_ptr<testutil::Daemon> b_;       // server b; stopped before db_ is dropped
};

TEST_F(ServerTakeoverTest, WhenTheServingBackupdDiesTheOtherTakesTheVolumeOverWithNothingLost) {
  start_servers_and_node();
  if (IsSkipped() || HasFatalFailure()) return;
  apply_mix(src(), 20);
  const std::string owner = converged_owner();
  ASSERT_FALSE(HasFailure());
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

  // Its runs go on there, and write what the node holds: its new mirror's change counter
  // starts past the one the last snapshot (the other server's) was cut at.
  EXPECT_NE(log_of(other).find("a mirror new here counts"), std::string::npos);
  expect_run_and_restore(other);
  if (owner == "b") b_.reset();  // already dead; ClusterTest's backupd stops in TearDown
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
  start_servers_and_node();
  if (IsSkipped() || HasFatalFailure()) return;
  constexpr uint64_t kBig = 16 * kMiB;
  write_big_file(src("big.bin"), kBig, 3);
  apply_mix(src(), 20);
  const std::string owner = converged_owner();
  ASSERT_FALSE(HasFailure());
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
  if (owner == "b") b_.reset();
}

}  // namespace
}  // namespace bkp::it
