// Two backupd instances on one PostgreSQL catalog (issue 16, item 2; server/leases.h): a volume
// registered through either is listed by both with the server that serves it; when that server
// is killed (kill -9), the other takes the volume over once its lease (3 s here) expires: it
// dials the node, rebuilds its own mirror from the node's reconcile, and the changes made while
// nobody served it reach it; its runs go on there. A replicator given both servers keeps its
// copy of the volume equal to the source across the takeover, also when the first server only
// hangs (its session with the replicator still open).
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <memory>

#include "common/path.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/postgres_db.h"
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

  // Servers a and b on the database, r1 following both, the volume registered and changed, and
  // once both list it with the same server (owner) whose mirror, like r1's copy, holds all of it.
  void start_both() {
    // Server b: its own state and identity; the node accepts both servers.
    ::mkdir(b_state().c_str(), 0700);
    auto b_id = testutil::run_command({binaries().backupd, "--state-dir", b_state(), "--show-id"});
    ASSERT_EQ(b_id.exit_code(), 0) << b_id.output;
    const std::string id = b_id.out.substr(0, b_id.out.find('\n'));
    backupfs_args = {"--server-id", id};
    backupd_args = {"--config", config("a")};
    ASSERT_TRUE(start_server());
    const std::string b_port_file = b_state() + "/port";
    b_ = std::make_unique<testutil::Daemon>(
        "backupd-b",
        std::vector<std::string>{binaries().backupd, "--config", config("b"), "--state-dir",
                                 b_state(), "--listen", "127.0.0.1:0", "--port-file",
                                 b_port_file, "--control-socket", b_socket(), "--http-listen",
                                 "off"},
        log_path("backupd-b"));
    ASSERT_TRUE(wait_until([&] { return testutil::read_port_file(b_port_file) || !b_->alive(); },
                           20s))
        << b_->log_tail();
    ASSERT_TRUE(b_->alive()) << b_->log_tail();
    b_port = testutil::read_port_file(b_port_file).value_or(0);
    // r1 follows both servers (the catalog, shared, already authorises it).
    replicator_args[0] = {"--server", address("b"), "--server-id", id};
    ASSERT_TRUE(start_replicator(0));

    ASSERT_TRUE(mount_source());
    ASSERT_TRUE(register_volume());
    apply_mix(src(), 20);
    ASSERT_TRUE(wait_until(
        [&] {
          owner = served_by("a");
          return (owner == "a" || owner == "b") && served_by("b") == owner &&
                 compare_trees(src(), owner == "a" ? mirror() : b_mirror()) == "" &&
                 compare_trees(src(), replica(0)) == "";
        },
        60s))
        << "served by '" << owner << "'\n" << log_text("backupd") << b_->log_tail();
  }

  // Where server a or b listens for nodes and replicators.
  std::string address(const std::string& server) const {
    return "127.0.0.1:" + std::to_string(server == "a" ? port() : b_port);
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

  // backupd.toml of server `name` on the test's database, leases of 3 s.
  std::string config(const std::string& name) {
    const std::string path = scratch_dir("config-" + name) + "/backupd.toml";
    put(path, "catalog = \"" + db_->url() + "\"\nserver_name = \"" + name +
                  "\"\nlease_seconds = 3\n");
    return path;
  }
  std::string b_state() const { return state_dir() + "-b"; }
  std::string b_socket() const { return b_state() + "/control.sock"; }
  std::string b_mirror() const {
    return b_state() + "/volumes/" + node_name + "/" + escape_path(src()) + "/mirror";
  }

  // `bkptool --json ARGS` through server a's or b's control socket; the document, or null.
  Json ask(const std::string& server, const std::vector<std::string>& args) {
    std::vector<std::string> argv{binaries().bkptool, "--server",
                                  server == "a" ? control_socket() : b_socket(), "--json"};
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

  std::unique_ptr<testutil::PostgresDb> db_;  // dropped after the servers stopped
  std::unique_ptr<testutil::Daemon> b_;       // server b; stopped before db_ is dropped
  uint16_t b_port = 0;                        // b's, for nodes and replicators
  std::string owner;                          // "a" or "b": the server of the volume
};

TEST_F(ServerTakeoverTest, WhenTheServingBackupdDiesTheOtherTakesTheVolumeOverWithNothingLost) {
  ASSERT_NO_FATAL_FAILURE(start_both());
  const std::string other = owner == "a" ? "b" : "a";
  const std::string other_mirror = other == "a" ? mirror() : b_mirror();
  auto listed = testutil::run_command(
      {binaries().bkptool, "--server", other == "a" ? control_socket() : b_socket(), "list"}, 60s);
  EXPECT_NE(listed.out.find("served by backupd " + owner), std::string::npos) << listed.output;
  auto before = ask(owner, {"run", node_name, src()});
  ASSERT_TRUE(before.is_object() && before["run"].is_object()) << before.dump();
  ASSERT_EQ(before["run"]["status"], "written") << before.dump();

  // kill -9 of the serving one; changes go on meanwhile.
  if (owner == "a") {
    ASSERT_TRUE(kill_server());
  } else {
    b_->signal(SIGKILL);
    ASSERT_TRUE(b_->wait_exit(10s));
  }
  const auto killed = std::chrono::steady_clock::now();
  write_big_file(src("after-kill.bin"), 3 * kMiB, 5);
  apply_mix(src("later"), 10);
  ASSERT_TRUE(wait_until(
      [&] { return served_by(other) == other && compare_trees(src(), other_mirror) == ""; }, 90s))
      << "not taken over: served by '" << served_by(other) << "', "
      << compare_trees(src(), other_mirror) << "\n"
      << (other == "a" ? log_text("backupd") : b_->log_tail());
  const auto took = std::chrono::steady_clock::now() - killed;
  RecordProperty("takeover_ms",
                 static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  // The replica follows the volume to its new server.
  EXPECT_EQ(wait_replica(), "");
  EXPECT_NE(log_text("r1").find("moved: " + address(other) + " select"), std::string::npos)
      << "r1's log does not say which server the volume moved to\n" << log_text("r1");

  // Its runs go on there, and write what the node holds: its new mirror's change counter
  // starts past the one the last snapshot (the other server's) was cut at.
  EXPECT_NE((other == "a" ? log_text("backupd") : b_->log()).find("a mirror new here counts"),
            std::string::npos);
  auto run = ask(other, {"run", node_name, src()});
  ASSERT_TRUE(run.is_object() && run["run"].is_object()) << run.dump();
  EXPECT_EQ(run["run"]["status"], "written") << run.dump();
  const std::string out = scratch_dir("restored");
  auto restored = testutil::run_command(
      {binaries().bkptool, "--server", other == "a" ? control_socket() : b_socket(), "restore",
       node_name, src(), "--to", out},
      60s);
  ASSERT_EQ(restored.exit_code(), 0) << restored.output;
  EXPECT_EQ(compare_trees(src(), out), "");
  if (owner == "b") b_.reset();  // already dead; ClusterTest's backupd stops in TearDown
}

// A server that hangs (SIGSTOP: its connections stay open, so r1's session with it does not
// end) loses the volume once its lease expires and the node gives up on its acks. The other
// server's Select hands the tree over on r1 at once, from the session that still holds it
// (trees.h), and r1's copy follows the source through the new server. Once the hung server runs
// again, its stale session gives way and the copy stays current.
TEST_F(ServerTakeoverTest, AHungServersVolumeIsHandedOverOnTheReplicator) {
  ASSERT_NO_FATAL_FAILURE(start_both());
  const std::string other = owner == "a" ? "b" : "a";
  const std::string other_mirror = other == "a" ? mirror() : b_mirror();
  testutil::Daemon& hung = owner == "a" ? *backupd() : *b_;
  hung.signal(SIGSTOP);
  // Until SIGCONT, only EXPECTs: the teardown needs it running.
  apply_mix(src("later"), 10);
  EXPECT_TRUE(wait_until(
      [&] {
        return (served_by(other) == other && compare_trees(src(), other_mirror) == "") ||
               expired();
      },
      80s))
      << "not taken over: served by '" << served_by(other) << "', "
      << compare_trees(src(), other_mirror);
  EXPECT_EQ(wait_replica(), "");
  EXPECT_NE(log_text("r1").find("moved: " + address(other) + " selected it while the session with " +
                                address(owner) + " still held it"),
            std::string::npos)
      << log_text("r1");
  hung.signal(SIGCONT);

  append(src("later/after-resume.txt"), "the hung server is back\n");
  EXPECT_TRUE(wait_until([&] { return compare_trees(src(), other_mirror) == "" || expired(); },
                         30s))
      << compare_trees(src(), other_mirror);
  EXPECT_EQ(wait_replica(), "");
}

}  // namespace
}  // namespace bkp::it
