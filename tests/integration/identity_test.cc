// Identities on the links backupd dials and the one replicators dial (issue 10): each end checks
// the other's certificate fingerprint against what the operator pinned, so neither a machine
// that answers at a node's address nor a server posing as backupd gets or gives any data.
//
// - register --node-id: a node presenting another identity is refused (exit 8, wrong_identity,
//   naming the identity it presented) and nothing is registered; without --node-id the identity
//   presented now is pinned and shown.
// - a node whose identity changed afterwards is not attached again (the link's error names the
//   identity), and nothing written meanwhile reaches the mirror; with the pinned identity back
//   it converges.
// - a node that was not told backupd's identity refuses it (exit 8, naming backupd's identity).
// - a replicator told another server identity refuses backupd and receives nothing.
#include <filesystem>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

class IdentityTest : public ControlTest {
 protected:
  std::string node_identity_file() const { return node_state_dir() + "/identity.pem"; }
};

TEST_F(IdentityTest, RegisterPinsTheNodeIdentityAndALaterImpostorIsNotAttached) {
  put(src("a.txt"), "first\n");
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(mount_source());
  const std::string port = std::to_string(node_port());

  auto wrong = bkptool({"register", kHost, port, src(), "--every", "1h", "--node-id",
                        replica_id(0)});
  EXPECT_EQ(wrong.exit_code(), 8) << wrong.output;
  EXPECT_NE(wrong.err.find("presents identity " + node_id()), std::string::npos) << wrong.output;
  auto listed = volumes();
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty()) << listed->dump();

  auto bad_id = bkptool({"register", kHost, port, src(), "--every", "1h", "--node-id", "XYZ"});
  EXPECT_EQ(bad_id.exit_code(), 2) << bad_id.output;

  auto pinned = bkptool({"register", kHost, port, src(), "--every", "1h"});
  ASSERT_EQ(pinned.exit_code(), 0) << pinned.output;
  EXPECT_NE(pinned.output.find("node identity " + node_id()), std::string::npos) << pinned.output;
  auto v = volume();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->value("node_id", ""), node_id());
  EXPECT_EQ(wait_converged(), "");

  // The node comes back with another identity: backupd does not attach it.
  ASSERT_TRUE(unmount_source());
  const std::string saved = scratch_dir("saved") + "/identity.pem";
  std::filesystem::copy_file(node_identity_file(), saved);
  std::filesystem::remove(node_identity_file());
  ASSERT_TRUE(mount_source(node_port()));
  put(src("b.txt"), "written while an impostor holds the address\n");
  std::string last_error;
  EXPECT_TRUE(testutil::wait_until(
      [&] {
        auto now = volume();
        if (now && (*now)["last_error"].is_string()) last_error = (*now)["last_error"];
        return last_error.find("presents identity") != std::string::npos || expired();
      },
      60s, 100ms))
      << "last error: " << last_error;
  EXPECT_NE(last_error.find(node_id()), std::string::npos) << last_error;
  EXPECT_FALSE(std::filesystem::exists(mirror() + "/b.txt"));

  // The real node (its identity restored) is attached again and catches up.
  ASSERT_TRUE(unmount_source());
  std::filesystem::remove(node_identity_file());
  std::filesystem::copy_file(saved, node_identity_file());
  ASSERT_TRUE(mount_source(node_port()));
  EXPECT_EQ(wait_converged(), "");
}

TEST_F(IdentityTest, ANodeRefusesABackupdItWasNotToldAbout) {
  ASSERT_TRUE(mount_source());
  // backupd starts with another identity than the one the node was given (--server-id).
  std::filesystem::remove(state_dir() + "/identity.pem");
  ASSERT_TRUE(start_server());
  auto r = bkptool({"register", kHost, std::to_string(node_port()), src(), "--every", "1h"});
  EXPECT_EQ(r.exit_code(), 8) << r.output;
  EXPECT_NE(r.err.find("not authorised on this node"), std::string::npos) << r.output;
  EXPECT_NE(r.err.find("--server-id"), std::string::npos) << r.output;
  EXPECT_NE(mount()->process().log().find("refused"), std::string::npos);
}

TEST_F(IdentityTest, AReplicatorRefusesAServerWithAnotherIdentity) {
  put(src("a.txt"), "data a stranger replicator must not get\n");
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  ASSERT_EQ(wait_converged(), "");
  // Told the node's identity as the server's: backupd's is not it.
  std::string root = scratch_dir("r-wrong");
  testutil::Daemon wrong("r-wrong",
                         {binaries().replicator, "--server", "127.0.0.1:" + std::to_string(port()),
                          "--server-id", node_id(), "--root", root, "--name", "rw"},
                         log_path("r-wrong"));
  EXPECT_TRUE(testutil::wait_until(
      [&] {
        return wrong.log().find("presents identity") != std::string::npos || !wrong.alive() ||
               expired();
      },
      30s, 50ms))
      << wrong.log_tail();
  EXPECT_TRUE(wrong.alive()) << wrong.log_tail();
  EXPECT_FALSE(std::filesystem::exists(root + "/" + kHost)) << "the replicator wrote a tree";
  wrong.stop(10s);
}

}  // namespace
}  // namespace bkp::it
