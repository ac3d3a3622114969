// Volumes are named by their node (issue 9, item 7): `bkptool register ADDRESS PORT PATH` reaches
// the node at an address, and the node's Hello names the volume (backupfs --host).
//
// - Two nodes behind one address (two backupfs on 127.0.0.1, --host web1 and --host web2, same
//   PATH) are two volumes: each has its own mirror, history and status by name. The second
//   node is a real second machine as far as paths go: it runs in a mount namespace of its own
//   where another directory is bind-mounted at PATH, so both serve "the same" path.
// - The address works in place of the name while it designates one volume, and is refused,
//   naming the candidates, when it designates several.
// - A different node answering at a registered address later is refused, with an error in
//   backupd's log and in the volume's status, and nothing of it reaches any mirror.
#include <unistd.h>

#include <memory>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

class NamesTest : public ControlTest {
 protected:
  // backupfs --host NAME over `dir`, seen at src() inside a mount namespace of its own; nothing
  // of it is visible here, and the namespace (with its mounts) goes when backupfs exits.
  // Started before src() is mounted here, so that namespace holds no copy of that mount.
  std::unique_ptr<testutil::Daemon> start_namespaced_node(const std::string& name,
                                                          const std::string& dir,
                                                          uint16_t* port) {
    std::string port_file = scratch_dir("ports") + "/" + name;
    auto node = std::make_unique<testutil::Daemon>(
        "backupfs-" + name,
        std::vector<std::string>{"/usr/bin/unshare", "--mount", "--propagation", "private", "--",
                                 "/bin/sh", "-c",
                                 R"(mount --bind "$1" "$2" && exec "$3" "$2" --listen 127.0.0.1:0 )"
                                 R"(--port-file "$4" --host "$5" --server-id "$6" --state-dir "$7" -f)",
                                 "sh", dir, src(), binaries().backupfs, port_file, name,
                                 server_id(), node_state_dir()},
        log_path("backupfs-" + name));
    std::optional<uint16_t> got;
    testutil::wait_until(
        [&] {
          got = testutil::read_port_file(port_file);
          return got || !node->alive() || expired();
        },
        20s, 20ms);
    EXPECT_TRUE(got) << name << " wrote no port file:\n" << node->log_tail();
    *port = got.value_or(0);
    return node;
  }
};

TEST_F(NamesTest, TwoNodesBehindOneAddressAreTwoVolumesNamedByTheirHosts) {
  if (access("/usr/bin/unshare", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/unshare";
  node_name = "web1";
  put(src("who"), "web1\n");
  std::string other = scratch_dir("web2-src");
  put(other + "/who", "web2\n");
  ASSERT_TRUE(start_server());
  uint16_t web2_port = 0;
  auto web2 = start_namespaced_node("web2", other, &web2_port);
  ASSERT_NE(web2_port, 0);
  ASSERT_TRUE(mount_source());

  auto reg1 = bkptool({"register", kHost, std::to_string(node_port()), src(), "--every", "1h"});
  ASSERT_EQ(reg1.exit_code(), 0) << reg1.output;
  EXPECT_NE(reg1.err.find("registered web1:" + src() + " (node at 127.0.0.1:" +
                          std::to_string(node_port()) + ")"),
            std::string::npos)
      << reg1.err;
  auto reg2 = bkptool({"register", kHost, std::to_string(web2_port), src(), "--every", "1h"});
  ASSERT_EQ(reg2.exit_code(), 0) << reg2.output;
  EXPECT_NE(reg2.err.find("registered web2:" + src()), std::string::npos) << reg2.err;
  // The same node again is a duplicate, before backupd even asks it.
  auto again = bkptool({"register", kHost, std::to_string(web2_port), src(), "--every", "1h"});
  EXPECT_EQ(again.exit_code(), 5) << again.output;
  EXPECT_NE(again.err.find("already registered as web2:" + src()), std::string::npos) << again.err;

  // Each node's tree lands in its own mirror, named by the node.
  std::string why;
  EXPECT_TRUE(testutil::wait_until(
      [&] {
        auto a = testutil::read_file(volume_dir("web1") + "/mirror/who");
        auto b = testutil::read_file(volume_dir("web2") + "/mirror/who");
        return expired() || (a == "web1\n" && b == "web2\n");
      },
      60s))
      << "mirrors of web1 and web2 never held their own trees";

  // list shows names and addresses apart.
  auto all = volumes(&why);
  ASSERT_TRUE(all) << why;
  ASSERT_EQ(all->size(), 2u) << all->dump(2);
  for (const auto& v : *all) {
    EXPECT_EQ(v.value("address", ""), kHost) << v.dump();
    EXPECT_EQ(v.value("path", ""), src()) << v.dump();
    uint16_t expected = v.value("host", "") == "web1" ? node_port() : web2_port;
    EXPECT_EQ(v.value("port", 0), expected) << v.dump();
  }

  // status and history by name.
  auto s2 = bkptool_json({"status", "web2", src()}, &why);
  ASSERT_TRUE(s2) << why;
  ASSERT_EQ((*s2)["volumes"].size(), 1u);
  EXPECT_EQ((*s2)["volumes"][0].value("host", ""), "web2");
  EXPECT_EQ((*s2)["volumes"][0].value("port", 0), web2_port);
  auto h1 = bkptool_json({"history", "web1", src()}, &why);
  ASSERT_TRUE(h1) << why;
  EXPECT_EQ(h1->value("host", ""), "web1");
  // Exit 9: it wants 3 copies and no replicator runs here (the answer is printed all the same).
  auto human = bkptool({"status", "web2", src()});
  EXPECT_EQ(human.exit_code(), 9) << human.output;
  EXPECT_EQ(human.out.rfind("web2:" + src() + "\n", 0), 0u) << human.out;

  // The address designates two volumes with that path: refused, naming both.
  auto ambiguous = bkptool({"history", kHost, src()});
  EXPECT_EQ(ambiguous.exit_code(), 4) << ambiguous.output;
  EXPECT_NE(ambiguous.err.find("(web1, web2)"), std::string::npos) << ambiguous.err;

  // Once web2 is unregistered the address designates web1 alone, and works in its place.
  auto unreg = bkptool({"unregister", kHost, src()});
  EXPECT_EQ(unreg.exit_code(), 4) << "still ambiguous: " << unreg.output;
  unreg = bkptool({"unregister", "web2", src()});
  ASSERT_EQ(unreg.exit_code(), 0) << unreg.output;
  EXPECT_NE(unreg.err.find("unregistered web2:" + src()), std::string::npos) << unreg.err;
  auto by_address = bkptool_json({"status", kHost, src()}, &why);
  ASSERT_TRUE(by_address) << why;
  EXPECT_EQ((*by_address)["volumes"][0].value("host", ""), "web1");
  auto history = bkptool_json({"history", kHost, src()}, &why);
  ASSERT_TRUE(history) << why;
  EXPECT_EQ(history->value("host", ""), "web1");

  EXPECT_EQ(testutil::describe_status(web2->stop(15s)), "exit 0") << web2->log_tail();
}

TEST_F(NamesTest, AnotherNodeAtTheRegisteredAddressIsRefused) {
  node_name = "web1";
  uint16_t port = free_port();
  ASSERT_NE(port, 0);
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(mount_source(port));
  ASSERT_TRUE(register_volume());
  std::string why;
  ASSERT_TRUE(wait_connected(60s, &why)) << why;

  // Another node, web3, now answers at 127.0.0.1:port with the same path.
  ASSERT_TRUE(unmount_source());
  put(src("web3-only"), "never backed up as web1\n");
  node_name = "web3";
  ASSERT_TRUE(mount_source(port));
  node_name = "web1";

  const std::string refusal = "calls itself web3, not web1";
  EXPECT_TRUE(testutil::wait_until(
      [&] { return expired() || log_text("backupd").find(refusal) != std::string::npos; }, 60s))
      << "backupd never refused web3";
  std::string line;
  std::string log = log_text("backupd");
  size_t at = log.find(refusal);
  if (at != std::string::npos) {
    size_t begin = log.rfind('\n', at);
    line = log.substr(begin == std::string::npos ? 0 : begin + 1,
                      log.find('\n', at) - (begin == std::string::npos ? 0 : begin + 1));
  }
  EXPECT_NE(line.find("error"), std::string::npos) << "not logged as an error: " << line;

  auto s = bkptool_json({"status", "web1", src()}, &why);
  ASSERT_TRUE(s) << why;
  const Json& v = (*s)["volumes"][0];
  EXPECT_FALSE(v.value("connected", true)) << v.dump();
  EXPECT_NE(v.value("last_error", "").find(refusal), std::string::npos) << v.dump();
  EXPECT_FALSE(testutil::read_file(volume_dir("web1") + "/mirror/web3-only"));
  EXPECT_NE(access(volume_dir("web3").c_str(), F_OK), 0) << "web3 got a volume directory";
}

}  // namespace
}  // namespace bkp::it
