// One replicator following two backupd (`replicator --server A --server B`): each server serves
// its own volume (its own SQLite catalog here) with a copy placed on the replicator, whose two
// sessions run at once: both replica trees converge to their sources, and later changes to both
// reach them; its log and /metrics name each server. With one of its servers down, the replicator still serves the other, and picks the
// down one up once it listens.
#include <sys/wait.h>

#include <httplib.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/path.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::describe_status;
using testutil::wait_until;

std::string address(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

class MultiServerTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    b_state_ = scratch_dir("state-b");
    src_b_ = scratch_dir("src-b");
    node_b_state_ = scratch_dir("node-b-state");
    auto id = testutil::run_command({binaries().backupd, "--state-dir", b_state_, "--show-id"}, 30s);
    ASSERT_EQ(id.exit_code(), 0) << id.output;
    b_id_ = id.out.substr(0, id.out.find('\n'));
    copies = "2";  // the mirror and the one replicator
  }

  void TearDown() override {
    if (mount_b_) {
      auto st = mount_b_->unmount();
      EXPECT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0)
          << "backupfs of src-b after unmount: "
          << (st ? describe_status(*st) : st.error().message);
      mount_b_.reset();
    }
    if (b_) {
      const int st = b_->stop(15s);
      EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "backupd b: " << describe_status(st);
      b_.reset();
    }
    ClusterTest::TearDown();
  }

  std::string b_socket() const { return b_state_ + "/control.sock"; }
  // r1's copy of the volume server b serves.
  std::string replica_b() const {
    return replica_root(0) + "/" + kHost + "/" + escape_path(src_b_);
  }

  // Server b on port (0: any), its own state and catalog; r1 authorised on it.
  ::testing::AssertionResult start_b(uint16_t port) {
    const std::string port_file = b_state_ + "/port";
    b_ = std::make_unique<testutil::Daemon>(
        "backupd-b",
        std::vector<std::string>{binaries().backupd, "--state-dir", b_state_, "--listen",
                                 address(port), "--port-file", port_file, "--control-socket",
                                 b_socket(), "--http-listen", "off"},
        log_path("backupd-b"));
    std::optional<uint16_t> got;
    wait_until([&] { return (got = testutil::read_port_file(port_file)) || !b_->alive(); }, 20s);
    if (!got) return ::testing::AssertionFailure() << "backupd b did not start\n" << b_->log_tail();
    b_port_ = *got;
    auto added = b_tool({"replica", "add", replica_id(0), "--name", "r1"});
    if (added.exit_code() != 0) {
      return ::testing::AssertionFailure() << "bkptool replica add on b: " << added.output;
    }
    return ::testing::AssertionSuccess();
  }

  // backupfs over src-b shipping to server b, and the volume registered there.
  ::testing::AssertionResult mount_and_register_b() {
    const std::string port_file = scratch_dir("node-b") + "/port";
    testutil::MountOptions opts;
    opts.binary = binaries().backupfs;
    opts.dir = src_b_;
    opts.args = {"--listen",    address(0),     "--port-file", port_file, "--host", kHost,
                 "--state-dir", node_b_state_, "--server-id", b_id_};
    opts.log_path = log_path("backupfs-b");
    auto m = testutil::MountedFs::mount(opts);
    if (!m) return ::testing::AssertionFailure() << m.error().message;
    mount_b_ = std::move(*m);
    std::optional<uint16_t> port;
    wait_until([&] { return (port = testutil::read_port_file(port_file)) ||
                            !mount_b_->process().alive(); },
               10s);
    if (!port) return ::testing::AssertionFailure() << "backupfs of src-b wrote no port file";
    auto r = b_tool({"register", kHost, std::to_string(*port), src_b_, "--every", "1h",
                     "--copies", copies});
    if (r.exit_code() != 0) return ::testing::AssertionFailure() << "register on b: " << r.output;
    return ::testing::AssertionSuccess();
  }

  // r1 follows server a (the fixture's) and b at b_port.
  ::testing::AssertionResult start_follower(uint16_t b_port) {
    replicator_args[0] = {"--server", address(b_port), "--server-id", b_id_};
    return start_replicator(0);
  }

  // "" once r1's copy of src-b equals it; the last difference otherwise.
  std::string wait_b_converged() {
    std::string last;
    wait_until([&] { return (last = compare_trees(src_b_, replica_b())).empty() || expired(); },
               90s);
    return last;
  }

  testutil::CommandResult b_tool(const std::vector<std::string>& args) {
    std::vector<std::string> argv{binaries().bkptool, "--server", b_socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    return testutil::run_command(argv, 60s);
  }

  std::string b_state_, src_b_, node_b_state_, b_id_;
  uint16_t b_port_ = 0;
  std::unique_ptr<testutil::Daemon> b_;
  std::unique_ptr<testutil::MountedFs> mount_b_;
};

TEST_F(MultiServerTest, OneReplicatorFollowsTwoServersAtOnce) {
  replicator_metrics = true;
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(start_b(0));
  ASSERT_TRUE(start_follower(b_port_));
  ASSERT_TRUE(mount_source());
  ASSERT_TRUE(register_volume());
  ASSERT_TRUE(mount_and_register_b());
  apply_mix(src(), 20);
  apply_mix(src_b_, 20);
  ASSERT_EQ(wait_converged(), "");
  ASSERT_EQ(wait_b_converged(), "");

  // Both sessions go on at once: changes to both volumes reach both trees.
  write_big_file(src("later.bin"), 2 * kMiB, 3);
  write_big_file(src_b_ + "/later.bin", 2 * kMiB, 4);
  apply_mix(src("more"), 5);
  apply_mix(src_b_ + "/more", 5);
  ASSERT_EQ(wait_converged(), "");
  ASSERT_EQ(wait_b_converged(), "");

  // The log names the server each tree came from.
  const std::string log = log_text("r1");
  EXPECT_NE(log.find("(selected by " + address(port()) + ")"), std::string::npos) << log;
  EXPECT_NE(log.find("(selected by " + address(b_port_) + ")"), std::string::npos) << log;
  // So does /metrics, each link up.
  uint16_t metrics_port = 0;
  ASSERT_TRUE(wait_until([&] { return (metrics_port = replica_metrics_port(0)) != 0; }, 30s));
  httplib::Client client("127.0.0.1", metrics_port);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics && metrics->status == 200);
  for (uint16_t p : {port(), b_port_}) {
    EXPECT_NE(metrics->body.find("\nreplicator_backupd_up{server=\"" + address(p) + "\"} 1\n"),
              std::string::npos)
        << metrics->body;
  }
}

TEST_F(MultiServerTest, WithOneServerDownTheReplicatorServesTheOther) {
  ASSERT_TRUE(start_server());
  const uint16_t b_port = free_port();  // server b is down
  ASSERT_TRUE(start_follower(b_port));
  ASSERT_TRUE(mount_source());
  ASSERT_TRUE(register_volume());
  apply_mix(src(), 20);
  ASSERT_EQ(wait_converged(), "");
  write_big_file(src("later.bin"), 2 * kMiB, 5);
  ASSERT_EQ(wait_converged(), "");
  const std::string down = address(b_port) + ": ";
  EXPECT_TRUE(wait_until(
      [&] {
        const std::string log = log_text("r1");
        const size_t at = log.find(down);
        return at != std::string::npos && log.find("retrying", at) != std::string::npos;
      },
      10s))
      << "r1 never said server b is unreachable\n" << log_text("r1");

  // Server b comes up: r1's loop for it, retrying all along, serves its volume too.
  ASSERT_TRUE(start_b(b_port));
  ASSERT_TRUE(mount_and_register_b());
  apply_mix(src_b_, 10);
  ASSERT_EQ(wait_b_converged(), "");
  append(src("more.txt"), "still served\n");
  ASSERT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
