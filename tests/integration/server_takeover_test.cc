// Two backupd instances on one PostgreSQL catalog (issue 16, item 2; server/leases.h): a volume
// registered through either is listed by both with the server that serves it; when that server
// is killed (kill -9), the other takes the volume over once its lease (3 s here) expires: it
// dials the node, rebuilds its own mirror from the node's reconcile, and the changes made while
// nobody served it reach it; its runs go on there.
#include <unistd.h>

#include <csignal>
#include <memory>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/postgres_db.h"
#include "tests/testutil/shared_catalog_server.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::wait_until;

class ServerTakeoverTest : public ControlTest {
 protected:
  std::string socket_of(const std::string& server) const {
    return server == "a" ? control_socket() : b_->control_socket();
  }
  std::string mirror_on(const std::string& server) const {
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

  std::unique_ptr<testutil::PostgresDb> db_;           // dropped after the servers stopped
  std::unique_ptr<testutil::SharedCatalogServer> b_;  // server b; stopped before db_ is dropped
};

TEST_F(ServerTakeoverTest, WhenTheServingBackupdDiesTheOtherTakesTheVolumeOverWithNothingLost) {
  auto db = testutil::PostgresDb::for_test();
  ASSERT_TRUE(db) << db.error().message;
  if (!*db) GTEST_SKIP() << testutil::kNoPostgresServer;
  db_ = std::move(*db);

  // Server a is the fixture's backupd, server b one of its own; the node accepts both.
  const std::string a_config = scratch_dir("config-a") + "/backupd.toml";
  put(a_config, testutil::shared_catalog_config(db_->url(), "a", 3));
  backupd_args = {"--config", a_config};
  ASSERT_TRUE(start_server());
  auto b = testutil::SharedCatalogServer::start({.backupd = binaries().backupd,
                                                 .name = "b",
                                                 .catalog_url = db_->url(),
                                                 .lease_seconds = 3,
                                                 .dir = scratch_dir("server-b"),
                                                 .log_path = log_path("backupd-b")});
  ASSERT_TRUE(b) << b.error().message;
  b_ = std::move(*b);
  backupfs_args = {"--server-id", b_->id()};

  ASSERT_TRUE(mount_source());
  ASSERT_TRUE(register_volume());
  apply_mix(src(), 20);
  // Both list it with the same server, which holds all of it.
  std::string owner;
  ASSERT_TRUE(wait_until(
      [&] {
        owner = served_by("a");
        return (owner == "a" || owner == "b") && served_by("b") == owner &&
               compare_trees(src(), mirror_on(owner)) == "";
      },
      60s))
      << "served by '" << owner << "'\n" << log_of("a") << log_of("b");
  const std::string other = owner == "a" ? "b" : "a";
  const std::string other_mirror = mirror_on(other);
  auto listed =
      testutil::run_command({binaries().bkptool, "--server", socket_of(other), "list"}, 60s);
  EXPECT_NE(listed.out.find("served by backupd " + owner), std::string::npos) << listed.output;
  auto before = ask(owner, {"run", node_name, src()});
  ASSERT_TRUE(before.is_object() && before["run"].is_object()) << before.dump();
  ASSERT_EQ(before["run"]["status"], "written") << before.dump();

  // kill -9 of the serving one; changes go on meanwhile.
  if (owner == "a") {
    ASSERT_TRUE(kill_server());
  } else {
    b_->process().signal(SIGKILL);
    ASSERT_TRUE(b_->process().wait_exit(10s));
  }
  const auto killed = std::chrono::steady_clock::now();
  write_big_file(src("after-kill.bin"), 3 * kMiB, 5);
  apply_mix(src("later"), 10);
  ASSERT_TRUE(wait_until(
      [&] { return served_by(other) == other && compare_trees(src(), other_mirror) == ""; }, 90s))
      << "not taken over: served by '" << served_by(other) << "', "
      << compare_trees(src(), other_mirror) << "\n"
      << log_of(other);
  const auto took = std::chrono::steady_clock::now() - killed;
  RecordProperty("takeover_ms",
                 static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));

  // Its runs go on there, and write what the node holds: its new mirror's change counter
  // starts past the one the last snapshot (the other server's) was cut at.
  EXPECT_NE(log_of(other).find("a mirror new here counts"), std::string::npos);
  auto run = ask(other, {"run", node_name, src()});
  ASSERT_TRUE(run.is_object() && run["run"].is_object()) << run.dump();
  EXPECT_EQ(run["run"]["status"], "written") << run.dump();
  const std::string out = scratch_dir("restored");
  auto restored = testutil::run_command(
      {binaries().bkptool, "--server", socket_of(other), "restore", node_name, src(), "--to", out},
      60s);
  ASSERT_EQ(restored.exit_code(), 0) << restored.output;
  EXPECT_EQ(compare_trees(src(), out), "");
  if (owner == "b") b_.reset();  // already dead; ClusterTest's backupd stops in TearDown
}

}  // namespace
}  // namespace bkp::it
