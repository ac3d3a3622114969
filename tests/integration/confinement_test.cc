// A hostile backupd cannot make a replicator write or delete outside its --root (issue 10).
// The attack that worked: volumes /srv and /srv/app of one host shared directories on the
// replica (ROOT/host/srv and ROOT/host/srv/app), so /srv's baseline could put a symlink
// `app -> /elsewhere` where /srv/app's tree lived, and the next baseline of /srv/app pruned
// /elsewhere and wrote its files there, as root. Here a fake backupd written from
// docs/PROTOCOL.md plays exactly that against a real replicator; nothing outside the root may
// change, and each volume must land in its own escaped directory. Also other findings of the
// hostile-peer review that are about what a process accepts (a config that is not a file).
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/changes/applier.h"
#include "common/net/conn.h"
#include "common/net/messenger.h"
#include "common/net/tls.h"
#include "common/net/socket.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::it {
namespace {

using wire::Op;
using wire::OpKind;

constexpr int kTimeoutMs = 10000;

class FakeServer {
 public:
  explicit FakeServer(net::Conn& conn) : conn_(conn) {}

  // Selects a volume with a new stream instance; the replica must ask for a baseline.
  void select(const std::string& path, uint64_t instance) {
    ASSERT_TRUE(net::send_now(conn_, wire::Select{"h", path, instance}));
    auto at = net::expect<wire::Position>(conn_, kTimeoutMs);
    ASSERT_TRUE(at) << at.error().message;
    ASSERT_EQ(at->need_baseline, 1);
  }
  void op(const Op& o) {
    std::vector<uint8_t> payload;
    wire::encode(o, payload);
    ASSERT_TRUE(conn_.send(wire::MsgType::kOp, 0, payload));
  }
  void write(uint64_t id, const std::string& data) {
    std::vector<uint8_t> payload;
    wire::WriteEncoder().encode(id, 0, std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(data.data()), data.size()), payload);
    ASSERT_TRUE(conn_.send(wire::MsgType::kWrite, 0, payload));
  }
  // Commit{1}; true if the replica acknowledged it.
  bool commit() {
    if (!net::send_now(conn_, wire::Commit{1})) return false;
    auto ack = net::expect<wire::Ack>(conn_, kTimeoutMs);
    return ack && ack->batch == 1;
  }

 private:
  net::Conn& conn_;
};

Op make(OpKind kind, std::string path, std::string target = "", uint64_t id = 0) {
  Op o;
  o.kind = kind;
  o.path = std::move(path);
  o.target = std::move(target);
  o.id = id;
  o.mode = 0644;
  return o;
}

TEST(ConfinementTest, AHostileBackupdCannotLeadAReplicatorOutsideItsRoot) {
  testutil::TempDir tmp("bkp-confine");
  std::string root = tmp.mkdir("root"), outside = tmp.mkdir("outside");
  put(outside + "/keep.txt", "must survive");
  net::HostPort bound;
  auto listener = net::tcp_listen({"127.0.0.1", 0}, &bound);
  ASSERT_TRUE(listener) << listener.error().message;
  // The replicator trusts this server (a compromised backupd): confinement must hold anyway.
  auto tls = net::TlsConfig::load(tmp.sub("server.pem"), "hostile");
  ASSERT_TRUE(tls) << tls.error().message;
  testutil::Daemon replicator(
      "replicator",
      {Binaries::find().replicator, "--server", "127.0.0.1:" + std::to_string(bound.port),
       "--server-id", (*tls)->id(), "--root", root, "--name", "victim"},
      tmp.sub("replicator.log"));
  pollfd p{listener->get(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, kTimeoutMs), 1) << replicator.log_tail();
  auto conn = net::Conn::open(UniqueFd(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC)));
  ASSERT_TRUE(conn) << conn.error().message;
  auto secured = (*conn)->secure(**tls, net::TlsSide::kServer, kTimeoutMs);
  ASSERT_TRUE(secured) << secured.error().message;
  auto hello = net::expect<wire::Hello>(**conn, kTimeoutMs);
  ASSERT_TRUE(hello) << hello.error().message;
  ASSERT_TRUE(net::send_now(**conn, wire::HelloOk{}));
  FakeServer server(**conn);

  // /srv's baseline puts a symlink where /srv/app's tree used to live.
  server.select("/srv", 1);
  server.op(make(OpKind::kSyncBegin, ""));
  server.op(make(OpKind::kSymlink, "app", outside));
  server.op(make(OpKind::kSyncEnd, ""));
  ASSERT_TRUE(server.commit()) << replicator.log_tail();
  // /srv/app's baseline: a file, then a second baseline that prunes everything it did not name.
  for (uint64_t instance : {2, 3}) {
    server.select("/srv/app", instance);
    server.op(make(OpKind::kSyncBegin, ""));
    if (instance == 2) {
      server.op(make(OpKind::kCreate, "planted.txt", "", 7));
      server.write(7, "written through the symlink?");
    }
    server.op(make(OpKind::kSyncEnd, ""));
    ASSERT_TRUE(server.commit()) << replicator.log_tail();
  }
  ::shutdown((*conn)->fd(), SHUT_RDWR);
  replicator.stop();

  EXPECT_EQ(slurp(outside + "/keep.txt"), "must survive");
  EXPECT_FALSE(std::filesystem::exists(outside + "/planted.txt"));
  // Each volume has a directory of its own; the symlink stays an inert entry of /srv's tree.
  struct stat st{};
  ASSERT_EQ(lstat((root + "/h/srv/app").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_TRUE(std::filesystem::is_directory(root + "/h/srv-app"));
}

// The same defence one level down: a tree directory whose parent became a symlink is refused,
// not followed.
TEST(ConfinementTest, AnApplierNeverOpensItsTreeThroughASymlink) {
  testutil::TempDir tmp("bkp-confine");
  std::string outside = tmp.mkdir("outside");
  std::string base = tmp.mkdir("base");
  ASSERT_EQ(symlink(outside.c_str(), (base + "/host").c_str()), 0);
  auto a = changes::Applier::open(base, "host/tree", "ids");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, ELOOP) << a.error().message;
  EXPECT_TRUE(std::filesystem::is_empty(outside));
}

}  // namespace
}  // namespace bkp::it

namespace bkp::it {
namespace {

// A config path that is a directory parsed as an empty file, so backupd ran with defaults.
TEST(ConfigTest, ADirectoryGivenAsTheConfigIsRefusedWithTheConfigExitCode) {
  testutil::TempDir tmp("bkp-config");
  auto r = testutil::run_command({Binaries::find().backupd, "--config", tmp.path(), "--state-dir",
                                  tmp.sub("state"), "--listen", "127.0.0.1:0"},
                                 std::chrono::seconds(10));
  ASSERT_TRUE(WIFEXITED(r.status)) << r.output;
  EXPECT_EQ(WEXITSTATUS(r.status), 78) << r.output;
  EXPECT_NE(r.output.find("not a regular file"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bkp::it
