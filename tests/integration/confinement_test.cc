// A hostile backupd cannot make a replicator write or delete outside its --root (issue 10).
// The attack that worked: volumes /srv and /srv/app of one host shared directories on the
// replica (ROOT/host/srv and ROOT/host/srv/app), so /srv's baseline could put a symlink
// `app -> /elsewhere` where /srv/app's tree lived, and the next baseline of /srv/app pruned
// /elsewhere and wrote its files there, as root. Here a fake backupd written from
// docs/PROTOCOL.md plays exactly that against a real replicator; nothing outside the root may
// change, and each volume must land in its own escaped directory. The same attack from hostile
// nodes, through a real backupd and two real replicators (HostileNodeTest). Also other findings
// of the hostile-peer review that are about what a process accepts (a config that is not a file).
// A Drop with purge deletes exactly the named volume's copy, never through a symlink in it.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/changes/applier.h"
#include "common/net/conn.h"
#include "common/net/messenger.h"
#include "common/net/tls.h"
#include "common/net/socket.h"
#include "common/path.h"
#include "tests/integration/cluster.h"
#include "tests/integration/fake_peers.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using wire::Op;
using wire::OpKind;

constexpr int kTimeoutMs = kFakePeerTimeoutMs;

// Begins a batch that is never committed: SyncBegin and a mkdir of `name`, sent at once. "" or
// what failed.
std::string begin_batch(net::Conn& c, const std::string& name) {
  StreamFrames sender(c);
  sender.op(make(OpKind::kSyncBegin, ""));
  sender.op(make(OpKind::kMkdir, name));
  return c.flush() ? "" : "could not send the beginning of a batch";
}

TEST(ConfinementTest, AHostileBackupdCannotLeadAReplicatorOutsideItsRoot) {
  testutil::TempDir tmp("bkp-confine");
  std::string root = tmp.mkdir("root"), outside = tmp.mkdir("outside");
  put(outside + "/keep.txt", "must survive");
  // The replicator trusts this server (a compromised backupd): confinement must hold anyway.
  FakeBackupd hostile(tmp.sub("server.pem"));
  testutil::Daemon replicator(
      "replicator",
      {Binaries::find().replicator, "--server", "127.0.0.1:" + std::to_string(hostile.port()),
       "--server-id", hostile.id(), "--root", root, "--name", "victim"},
      tmp.sub("replicator.log"));
  auto conn = hostile.accept();
  ASSERT_TRUE(conn) << replicator.log_tail();
  StreamFrames server(*conn);

  // /srv's baseline puts a symlink where /srv/app's tree used to live.
  ASSERT_EQ(server.select("/srv", 1).need_baseline, 1);
  server.op(make(OpKind::kSyncBegin, ""));
  server.op(make(OpKind::kSymlink, "app", outside));
  server.op(make(OpKind::kSyncEnd, ""));
  ASSERT_TRUE(server.commit()) << replicator.log_tail();
  // /srv/app's baseline: a file, then a second baseline that prunes everything it did not name.
  for (uint64_t instance : {2, 3}) {
    ASSERT_EQ(server.select("/srv/app", instance).need_baseline, 1);
    server.op(make(OpKind::kSyncBegin, ""));
    if (instance == 2) {
      server.op(make(OpKind::kCreate, "planted.txt", "", 7));
      server.write(7, "written through the symlink?");
    }
    server.op(make(OpKind::kSyncEnd, ""));
    ASSERT_TRUE(server.commit()) << replicator.log_tail();
  }
  EXPECT_EQ(slurp(outside + "/keep.txt"), "must survive");
  EXPECT_FALSE(std::filesystem::exists(outside + "/planted.txt"));
  // Each volume has a directory of its own; the symlink stays an inert entry of /srv's tree.
  struct stat st{};
  ASSERT_EQ(lstat((root + "/h/srv/app").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_TRUE(std::filesystem::is_directory(root + "/h/srv-app"));

  // Purging /srv deletes its copy, the symlink as an entry: nothing behind it, nothing of
  // /srv/app, whose tree, id links and state stay.
  ASSERT_TRUE(net::send_now(*conn, wire::Drop{"h", "/srv", 1}));
  auto dropped = net::expect<wire::Dropped>(*conn, kTimeoutMs);
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_EQ(*dropped, (wire::Dropped{"h", "/srv", 0, ""}));
  EXPECT_EQ(slurp(outside + "/keep.txt"), "must survive");
  for (const char* gone : {"/h/srv", "/.ids/h/srv", "/.state/h/srv"}) {
    EXPECT_FALSE(std::filesystem::exists(root + gone)) << gone;
  }
  for (const char* kept : {"/h/srv-app", "/.ids/h/srv-app", "/.state/h/srv-app/state"}) {
    EXPECT_TRUE(std::filesystem::exists(root + kept)) << kept;
  }
  // A Drop naming no valid volume is a protocol error, not a deletion.
  ASSERT_TRUE(net::send_now(*conn, wire::Drop{"h", "srv/../..", 1}));
  auto refused = net::expect<wire::Dropped>(*conn, kTimeoutMs);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, EINVAL) << refused.error().message;
  EXPECT_TRUE(std::filesystem::exists(root + "/h/srv-app"));
  ::shutdown(conn->fd(), SHUT_RDWR);
  replicator.stop();
}

// The finding from the other side: a hostile *node* registered at /srv plants `app ->
// OUTSIDE` in its baseline while another volume is registered at /srv/app. Through the real
// backupd and both real replicators nothing is written or deleted outside their roots: every
// volume has an escaped directory of its own on backupd and on each replica, and the symlink
// stays an inert entry of /srv's copies.
class HostileNodeTest : public ClusterTest {
 protected:
  struct FakeNode {
    UniqueFd listener;
    uint16_t port = 0;
    std::thread thread;
    std::string error;  // what went wrong, if anything
  };
  // What a fake node does once backupd's HelloOk asked it for a baseline: "" or what went wrong.
  using Play = std::function<std::string(net::Conn&)>;

  // One fake node on 127.0.0.1 that sends a baseline of `ops` (file data for id 7 if `data` is
  // set) as batch 1.
  std::unique_ptr<FakeNode> fake_node(const std::string& path, std::vector<Op> ops,
                                      const std::string& data) {
    return fake_node(path, [ops = std::move(ops), data](net::Conn& c) -> std::string {
      StreamFrames sender(c);
      for (const Op& o : ops) sender.op(o);
      if (!data.empty()) sender.write(7, data);
      return sender.commit() ? "" : "batch 1 not acknowledged";
    });
  }

  // One fake node on 127.0.0.1: accepts backupd's attach (TLS with an identity of its own,
  // pinned by register on first contact), names itself kHost serving `path`, and plays `play`.
  std::unique_ptr<FakeNode> fake_node(const std::string& path, Play play) {
    auto node = std::make_unique<FakeNode>();
    net::HostPort bound;
    auto listener = net::tcp_listen({"127.0.0.1", 0}, &bound);
    if (!listener) {
      ADD_FAILURE() << listener.error().message;
      return node;
    }
    node->listener = std::move(*listener);
    node->port = bound.port;
    auto tls = net::TlsConfig::load(scratch_dir("fake-" + std::to_string(bound.port)) +
                                        "/identity.pem", "fake-node");
    if (!tls) {
      ADD_FAILURE() << tls.error().message;
      return node;
    }
    FakeNode* n = node.get();
    node->thread = std::thread([n, path, play = std::move(play), tls = *tls] {
      auto fail = [&](const std::string& what) { n->error = what; };
      pollfd p{n->listener.get(), POLLIN, 0};
      if (poll(&p, 1, kTimeoutMs) != 1) return fail("backupd never connected");
      auto conn = net::Conn::open(UniqueFd(::accept4(n->listener.get(), nullptr, nullptr, SOCK_CLOEXEC)));
      if (!conn) return fail(conn.error().message);
      net::Conn& c = **conn;
      if (auto ok = c.secure(*tls, net::TlsSide::kServer, kTimeoutMs); !ok) return fail(ok.error().message);
      if (!net::expect<wire::Attach>(c, kTimeoutMs)) return fail("no Attach");
      wire::Hello hello;
      hello.name = kHost;
      hello.path = path;
      hello.instance = 0x1234 + n->port;
      if (!net::send_now(c, hello)) return fail("send Hello");
      auto ok = net::expect<wire::HelloOk>(c, kTimeoutMs);
      if (!ok || ok->position.need_baseline != 1) return fail("no HelloOk asking for a baseline");
      fail(play(c));
    });
    return node;
  }

  void finish(FakeNode& node) {
    if (node.thread.joinable()) node.thread.join();
    EXPECT_EQ(node.error, "");
  }
};

TEST_F(HostileNodeTest, ANestedVolumeSymlinkLeadsNoCopyOutsideItsRoot) {
  const std::string outside = scratch_dir("outside");
  put(outside + "/keep.txt", "must survive");
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(start_replicators());
  const std::string parent = "/bkp-hostile/srv", child = "/bkp-hostile/srv/app";

  auto first = fake_node(parent,
                         {make(OpKind::kSyncBegin, ""), make(OpKind::kSymlink, "app", outside),
                          make(OpKind::kSyncEnd, "")},
                         "");
  auto r = bkptool({"register", kHost, std::to_string(first->port), parent, "--every", "1h"});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  finish(*first);
  auto second = fake_node(child,
                          {make(OpKind::kSyncBegin, ""), make(OpKind::kCreate, "planted.txt", "", 7),
                           make(OpKind::kSyncEnd, "")},
                          "written through the symlink?");
  r = bkptool({"register", kHost, std::to_string(second->port), child, "--every", "1h"});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  finish(*second);

  std::vector<std::string> copies = {state_dir() + "/volumes/" + kHost};
  for (int i = 0; i < 2; ++i) copies.push_back(replica_root(i) + "/" + kHost);
  auto planted = [&](const std::string& base) {
    std::string dir = base == copies[0] ? base + "/" + escape_path(child) + "/mirror"
                                        : base + "/" + escape_path(child);
    return std::filesystem::exists(dir + "/planted.txt");
  };
  EXPECT_TRUE(testutil::wait_until(
      [&] {
        return (planted(copies[0]) && planted(copies[1]) && planted(copies[2])) || expired();
      },
      30s, 50ms))
      << "the second volume's file did not reach every copy";
  EXPECT_EQ(slurp(outside + "/keep.txt"), "must survive");
  EXPECT_FALSE(std::filesystem::exists(outside + "/planted.txt"));
  for (const auto& base : copies) {
    std::string tree = base == copies[0] ? base + "/" + escape_path(parent) + "/mirror"
                                         : base + "/" + escape_path(parent);
    struct stat st{};
    ASSERT_EQ(lstat((tree + "/app").c_str(), &st), 0) << tree;
    EXPECT_TRUE(S_ISLNK(st.st_mode)) << tree << "/app is not the inert symlink";
  }
  // Nothing more from these fakes: stop backupd's links to them before teardown.
  r = bkptool({"unregister", kHost, parent});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
  r = bkptool({"unregister", kHost, child});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
}

// The hostile-peer review, 2026-12-02: a node that stopped in the middle of a batch held its
// volume for good (backupd waited for the rest without limit), and `bkptool run`, which waits for
// a batch boundary, waited with it. Now backupd cuts a node silent inside a batch after the stall
// limit (60 s; 1 s here), and the run fails saying why.
TEST_F(HostileNodeTest, ANodeSilentInTheMiddleOfABatchIsCutAndTheRunFailsInsteadOfWaiting) {
  backupd_env = {"BKP_TEST_STALL_MS=1000"};
  ASSERT_TRUE(start_server());
  const std::string path = "/bkp-hostile/stall";
  auto node = fake_node(path, [](net::Conn& c) -> std::string {
    if (auto failed = begin_batch(c, "half"); !failed.empty()) return failed;
    auto next = c.recv(3 * kTimeoutMs);  // and then nothing: backupd must say why and close
    if (!next) return next.error().code == ETIMEDOUT ? "backupd never cut the silent node" : "";
    std::string text(next->payload.begin(), next->payload.end());
    if (next->type != wire::MsgType::kError || text.find("middle of a batch") == std::string::npos) {
      return "backupd sent something else than the reason for closing: " + text;
    }
    return "";
  });
  auto r = bkptool({"register", kHost, std::to_string(node->port), path, "--every", "1h"});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  const std::string half = state_dir() + "/volumes/" + kHost + "/" + escape_path(path) + "/mirror/half";
  ASSERT_TRUE(testutil::wait_until([&] { return std::filesystem::exists(half) || expired(); }, 30s,
                                   20ms))
      << log_text("backupd");
  r = bkptool({"run", kHost, path}, 30s);
  EXPECT_EQ(r.exit_code(), 1) << r.output;
  EXPECT_NE(r.output.find("in the middle of a batch"), std::string::npos) << r.output;
  finish(*node);
  EXPECT_NE(log_text("backupd").find("the node sent nothing for 1 s in the middle of a batch"),
            std::string::npos)
      << log_text("backupd");
  r = bkptool({"unregister", kHost, path});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
}

// need_baseline = 1 was advice until 2026-12-02: a node that skipped the baseline and sent
// ordinary operations had its batch applied and acknowledged, and from then on the stream was
// "known", so whatever the mirror lacked stayed missing. Now the batch is refused before any of
// it lands, and the next session is asked for the baseline again.
TEST_F(HostileNodeTest, ANodeThatSkipsTheBaselineItWasAskedForIsRefused) {
  ASSERT_TRUE(start_server());
  const std::string path = "/bkp-hostile/skip";
  auto node = fake_node(path, [](net::Conn& c) -> std::string {
    StreamFrames sender(c);
    sender.op(make(OpKind::kMkdir, "skipped"));
    if (!c.flush()) return "could not send the mkdir";
    auto answer = c.recv(kTimeoutMs);
    if (!answer) return "backupd closed without saying why: " + answer.error().message;
    std::string text(answer->payload.begin(), answer->payload.end());
    if (answer->type != wire::MsgType::kError ||
        text.find("a baseline was asked for: mkdir before sync-begin") == std::string::npos) {
      return "backupd answered something else than the refusal: " + text;
    }
    return "";
  });
  auto r = bkptool({"register", kHost, std::to_string(node->port), path, "--every", "1h"});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  finish(*node);
  EXPECT_FALSE(std::filesystem::exists(state_dir() + "/volumes/" + kHost + "/" +
                                       escape_path(path) + "/mirror/skipped"));
  r = bkptool({"unregister", kHost, path});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
}

// The hostile-peer review: a name a node sends is quoted in backupd's log, and one with a newline
// and a terminal escape sequence in it forged a whole "backupd error:" line of its own.
TEST_F(HostileNodeTest, ANameANodeSendsCannotForgeALogLine) {
  ASSERT_TRUE(start_server());
  const std::string path = "/bkp-hostile/forge";
  auto node = fake_node(path, [](net::Conn& c) -> std::string {
    if (auto failed = begin_batch(c, "nope\nbackupd error: FORGED LINE\x1b[31m/child");
        !failed.empty()) {
      return failed;
    }
    auto answer = c.recv(kTimeoutMs);  // an Error for the missing parent, or the close
    return answer && answer->type != wire::MsgType::kError ? "backupd accepted the bad mkdir" : "";
  });
  auto r = bkptool({"register", kHost, std::to_string(node->port), path, "--every", "1h"});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  finish(*node);
  ASSERT_TRUE(testutil::wait_until(
      [&] { return log_text("backupd").find("FORGED LINE") != std::string::npos || expired(); },
      30s, 20ms));
  std::string log = log_text("backupd");
  EXPECT_NE(log.find("nope\\x0abackupd error: FORGED LINE\\x1b[31m/child"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("\nbackupd error: FORGED"), std::string::npos) << log;
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << log;
  r = bkptool({"unregister", kHost, path});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
}

// The hostile-peer review: run as root outside its unit, backupd made its state directory 0755,
// so a device node or a set-user-id file a node sent (the copies keep the source's modes) was
// usable by every user of the backup server, and every mirrored file readable. Now no other user
// reaches anything under backupd's state directory or a replicator's root, even where those
// directories were made 0755 before (here: the test's own directories, opened up first).
TEST_F(HostileNodeTest, NoOtherUserOfTheMachineReachesTheCopies) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root, to act as another user";
  const std::string top = std::filesystem::path(state_dir()).parent_path();
  for (const std::string& dir : {top, state_dir(), replica_root(0), replica_root(1)}) {
    ASSERT_EQ(chmod(dir.c_str(), 0755), 0) << dir;
  }
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(start_replicators());
  const std::string path = "/bkp-hostile/private";
  Op dev = make(OpKind::kMknod, "dev");
  dev.mode = S_IFCHR | 0666;
  dev.rdev = makedev(1, 3);
  Op secret = make(OpKind::kCreate, "secret", "", 7);
  Op suid = make(OpKind::kCreate, "suid", "", 8);
  suid.mode = 04755;
  auto node = fake_node(path, {make(OpKind::kSyncBegin, ""), dev, secret, suid,
                               make(OpKind::kSyncEnd, "")},
                        "not for other users");
  auto r = bkptool({"register", kHost, std::to_string(node->port), path, "--every", "1h"});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  finish(*node);
  std::vector<std::string> trees = {state_dir() + "/volumes/" + kHost + "/" + escape_path(path) +
                                    "/mirror"};
  for (int i = 0; i < 2; ++i) trees.push_back(replica_root(i) + "/" + kHost + "/" + escape_path(path));
  ASSERT_TRUE(testutil::wait_until(
      [&] {
        for (const auto& t : trees) {
          if (!std::filesystem::exists(t + "/secret") || slurp(t + "/secret") != "not for other users") {
            return expired();
          }
        }
        return true;
      },
      30s, 50ms))
      << "the baseline did not reach every copy";
  // Nobody else may open any of it; the test's directory above them is open to everyone.
  for (const auto& t : trees) {
    struct stat st {};
    ASSERT_EQ(stat((t + "/secret").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u) << t << ": the copies keep the source's modes";
    // Everything the child needs is made before fork: it only makes system calls.
    const std::string file = t + "/secret", setuid_file = t + "/suid", device = t + "/dev";
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
          setresuid(65534, 65534, 65534) != 0) {
        _exit(10);
      }
      if (access(top.c_str(), X_OK) != 0) _exit(11);  // the test opened the way this far
      for (const std::string* f : {&file, &setuid_file}) {
        if (open(f->c_str(), O_RDONLY | O_CLOEXEC) >= 0 || errno != EACCES) _exit(12);
      }
      if (open(device.c_str(), O_WRONLY | O_CLOEXEC) >= 0 || errno != EACCES) _exit(13);
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << t << ": exit " << WEXITSTATUS(status) << " (11: the test's directory is closed; 12: a "
        << "file opened; 13: the device opened)";
  }
  for (const std::string& dir : {state_dir(), replica_root(0), replica_root(1)}) {
    struct stat st {};
    ASSERT_EQ(stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0007, 0u) << dir << " is open to others";
  }
  r = bkptool({"unregister", kHost, path});
  EXPECT_EQ(r.exit_code(), 0) << r.output;
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
