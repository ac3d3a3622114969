// backupfs's port, seen from backupd's side (docs/PROTOCOL.md "Connections and roles"): the test
// plays backupd with the real wire code, against a real mount, and no real backupd at all, so
// every answer of the node can be checked frame by frame.
//
// - An Attach for another path gets Error{ENOENT, "this node serves SRC, not /other"}, then close.
// - Random bytes, or a connection that says nothing for 10 s, are closed, and meanwhile a real
//   Attach is served at once (the port is never held by one bad peer).
// - A good Attach gets Hello{role node, name, path, instance}; the node ships a baseline and its
//   changes, each batch preceded by a NodeStatus carrying the lag, and an idle NodeStatus about
//   once a second.
// - A second backupd while one is attached gets Error{EBUSY}.
// - A batch not acknowledged when the connection broke is sent again, with the same number, to
//   the next backupd that attaches; after an unmount with nobody attached backupfs exits at once.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <thread>
#include <vector>

#include "common/files.h"
#include "common/net/conn.h"
#include "common/net/identity.h"
#include "common/net/socket.h"
#include "common/net/tls.h"
#include "common/wire/messages.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using Clock = std::chrono::steady_clock;

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// What a batch looked like on the wire.
struct Batch {
  std::vector<wire::NodeStatus> statuses;  // received before its Commit
  std::vector<wire::Op> ops;
  uint64_t data_bytes = 0;
  uint64_t number = 0;
};

// One connection to the node's port, playing backupd.
class FakeBackupd {
 public:
  // Connects, and with an identity file runs the TLS handshake as that identity; nullptr (with a
  // failure recorded) if the node does not accept. Without one the connection stays plaintext:
  // what a peer that does not speak TLS sends.
  static std::unique_ptr<FakeBackupd> connect(uint16_t port, const std::string& identity = "") {
    auto sock = net::tcp_connect({"127.0.0.1", port}, 3000);
    if (!sock) {
      ADD_FAILURE() << "connect to the node: " << sock.error().message;
      return nullptr;
    }
    int fd = sock->get();
    auto conn = net::Conn::open(std::move(*sock));
    if (!conn) {
      ADD_FAILURE() << conn.error().message;
      return nullptr;
    }
    if (!identity.empty()) {
      auto tls = net::TlsConfig::load(identity, "fake-backupd");
      auto secured = tls ? (*conn)->secure(**tls, net::TlsSide::kClient, 10000)
                         : tl::unexpected(tls.error());
      if (!secured) {
        ADD_FAILURE() << "TLS handshake with the node: " << secured.error().message;
        return nullptr;
      }
    }
    return std::unique_ptr<FakeBackupd>(new FakeBackupd(std::move(*conn), fd));
  }

  template <class Msg>
  bool send(wire::MsgType type, const Msg& msg) {
    std::vector<uint8_t> payload;
    wire::encode(msg, payload);
    return conn_->send(type, 0, payload) && conn_->flush();
  }
  bool attach(const std::string& path) {
    wire::Attach a;
    a.path = path;
    a.server_id = 0x5EB5EB5EB5EB5EB5ull;
    return send(wire::MsgType::kAttach, a);
  }
  Result<wire::Frame> recv(int timeout_ms = 10000) { return conn_->recv(timeout_ms); }

  // The node's answer to an Attach: its Hello, or the error it sent.
  Result<wire::Hello> await_hello() {
    auto f = BKP_TRY(recv());
    if (f.type == wire::MsgType::kError) {
      auto e = BKP_TRY(wire::decode_error(f.payload));
      return fail(static_cast<int>(e.code), e.text);
    }
    if (f.type != wire::MsgType::kHello) return fail(EPROTO, wire::type_name(f.type));
    return wire::decode_hello(f.payload);
  }

  // Takes the node's ManifestRequest (it reconciles before a baseline) and answers that this
  // fake holds nothing.
  Result<void> answer_manifest() {
    auto f = BKP_TRY(recv());
    if (f.type != wire::MsgType::kManifestRequest) return fail(EPROTO, wire::type_name(f.type));
    if (!send(wire::MsgType::kManifest, wire::Manifest{{}, 1})) return fail(EPIPE, "send Manifest");
    return {};
  }

  // Frames up to and including the next Commit (statuses, ops and writes on the way). A
  // ManifestRequest (the node reconciles before a baseline) gets an empty manifest: this fake
  // holds nothing.
  Result<Batch> await_batch(int timeout_ms = 20000) {
    Batch b;
    while (true) {
      auto f = BKP_TRY(recv(timeout_ms));
      switch (f.type) {
        case wire::MsgType::kManifestRequest:
          if (!send(wire::MsgType::kManifest, wire::Manifest{{}, 1})) return fail(EPIPE, "send Manifest");
          break;
        case wire::MsgType::kNodeStatus:
          b.statuses.push_back(BKP_TRY(wire::decode_node_status(f.payload)));
          break;
        case wire::MsgType::kOp:
          b.ops.push_back(BKP_TRY(wire::decode_op(f.payload)));
          break;
        case wire::MsgType::kWrite:
          b.data_bytes += BKP_TRY(wire::decode_write(f.flags, f.payload)).data.size();
          break;
        case wire::MsgType::kCommit:
          b.number = BKP_TRY(wire::decode_commit(f.payload)).batch;
          return b;
        default:
          return fail(EPROTO, std::string("unexpected ") + wire::type_name(f.type));
      }
    }
  }

  // True if the node closed the connection within timeout (frames before that are dropped).
  bool closed_by_peer(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto f = conn_->recv(200);
      if (!f && f.error().code != ETIMEDOUT) return true;
    }
    return false;
  }

  int fd() const { return fd_; }

 private:
  FakeBackupd(std::unique_ptr<net::Conn> conn, int fd) : conn_(std::move(conn)), fd_(fd) {}
  std::unique_ptr<net::Conn> conn_;
  int fd_;
};

bool has_op(const Batch& b, wire::OpKind kind, const std::string& path) {
  for (const auto& op : b.ops) {
    if (op.kind == kind && op.path == path) return true;
  }
  return false;
}

// The batch's operations from the log, without the per-file Attr by id that send_batch derives
// from the file when it ships.
std::vector<wire::Op> recorded_ops(const Batch& b) {
  std::vector<wire::Op> out;
  for (const auto& op : b.ops) {
    if (!(op.kind == wire::OpKind::kAttr && op.id != 0)) out.push_back(op);
  }
  return out;
}

class AttachTest : public ClusterTest {
 protected:
  // The identity the node was told to serve (backupd's own, which this test borrows).
  std::string backupd_identity() const { return state_dir() + "/identity.pem"; }
};

TEST_F(AttachTest, NodeServesOneBackupdForItsOwnPathAndReportsItsLag) {
  put(src("before.txt"), "present before the mount\n");
  ASSERT_TRUE(mount_source());
  const std::string log_before = mount()->process().log();

  // Another path: ENOENT with the documented sentence, then close.
  {
    auto wrong = FakeBackupd::connect(node_port(), backupd_identity());
    ASSERT_TRUE(wrong);
    ASSERT_TRUE(wrong->attach("/not/this"));
    auto hello = wrong->await_hello();
    ASSERT_FALSE(hello) << "the node accepted an Attach for another path";
    EXPECT_EQ(hello.error().code, ENOENT);
    EXPECT_EQ(hello.error().message, "this node serves " + src() + ", not /not/this");
    EXPECT_TRUE(wrong->closed_by_peer(5s));
  }

  // Random bytes, and a peer that says nothing: both closed, neither delays a real Attach.
  auto silent = FakeBackupd::connect(node_port());
  ASSERT_TRUE(silent);
  auto silent_since = Clock::now();
  auto junk_peer = FakeBackupd::connect(node_port());
  ASSERT_TRUE(junk_peer);
  auto junk = testutil::random_bytes(64 * 1024, 0xBAD);
  ASSERT_GT(::send(junk_peer->fd(), junk.data(), junk.size(), MSG_NOSIGNAL), 0);
  EXPECT_TRUE(junk_peer->closed_by_peer(10s)) << "the node kept a connection that sent junk";

  auto first = FakeBackupd::connect(node_port(), backupd_identity());
  ASSERT_TRUE(first);
  auto t0 = Clock::now();
  ASSERT_TRUE(first->attach(src()));
  auto hello = first->await_hello();
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_LT(Clock::now() - t0, 3s) << "a silent peer delayed the Attach of a real one";
  EXPECT_EQ(hello->role, wire::Role::kNode);
  EXPECT_EQ(hello->name, kHost);
  EXPECT_EQ(hello->path, src());
  EXPECT_NE(hello->instance, 0u);

  // Baseline: the pre-existing file, preceded by a NodeStatus.
  ASSERT_TRUE(first->send(wire::MsgType::kHelloOk, wire::HelloOk{wire::kVersion, wire::Position{0, 1, 0}}));
  auto baseline = first->await_batch();
  ASSERT_TRUE(baseline) << baseline.error().message;
  ASSERT_FALSE(baseline->statuses.empty()) << "no NodeStatus before the baseline's Commit";
  EXPECT_GE(baseline->statuses.front().pending_files, 1u);
  EXPECT_GT(baseline->statuses.front().oldest_ns, 0);
  EXPECT_TRUE(has_op(*baseline, wire::OpKind::kCreate, "before.txt"));
  ASSERT_TRUE(first->send(wire::MsgType::kAck, wire::Ack{baseline->number}));

  // A second backupd while the first is attached: EBUSY.
  {
    auto second = FakeBackupd::connect(node_port(), backupd_identity());
    ASSERT_TRUE(second);
    ASSERT_TRUE(second->attach(src()));
    auto refused = second->await_hello();
    ASSERT_FALSE(refused) << "the node accepted a second backupd";
    EXPECT_EQ(refused.error().code, EBUSY);
    EXPECT_EQ(refused.error().message, "another backupd is attached");
  }

  // A change (the create and the data may come in separate batches): each batch is preceded
  // by a NodeStatus that counts what is pending and dates the oldest of it.
  int64_t before_write = now_ns();
  put(src("new.txt"), std::string(100000, 'x'));
  int64_t after_write = now_ns();
  std::vector<Batch> batches;
  uint64_t data = 0;
  bool created = false;
  while (!(created && data >= 100000) && batches.size() < 10) {
    auto b = first->await_batch();
    ASSERT_TRUE(b) << b.error().message;
    ASSERT_FALSE(b->statuses.empty()) << "no NodeStatus before the Commit of " << b->number;
    created = created || has_op(*b, wire::OpKind::kCreate, "new.txt");
    data += b->data_bytes;
    ASSERT_TRUE(first->send(wire::MsgType::kAck, wire::Ack{b->number}));
    batches.push_back(std::move(*b));
  }
  ASSERT_TRUE(created);
  EXPECT_EQ(data, 100000u);
  const wire::NodeStatus& lag = batches.front().statuses.front();
  EXPECT_GE(lag.pending_ops, 1u);
  EXPECT_GE(lag.oldest_ns, before_write);
  EXPECT_LE(lag.oldest_ns, after_write);
  for (const auto& b : batches) {
    if (b.data_bytes > 0) {
      EXPECT_GE(b.statuses.front().pending_bytes, b.data_bytes);
      EXPECT_GE(b.statuses.front().pending_files, 1u);
    }
  }

  // Idle: a NodeStatus about once a second, with nothing pending.
  auto idle = first->recv(3000);
  ASSERT_TRUE(idle) << idle.error().message;
  ASSERT_EQ(idle->type, wire::MsgType::kNodeStatus) << wire::type_name(idle->type);
  auto idle_status = wire::decode_node_status(idle->payload);
  ASSERT_TRUE(idle_status);
  EXPECT_EQ(idle_status->pending_ops, 0u);
  EXPECT_EQ(idle_status->pending_files, 0u);
  EXPECT_EQ(idle_status->oldest_ns, 0);

  // The silent peer was cut at its deadline (10 s), not before 9 s and not much after.
  EXPECT_TRUE(silent->closed_by_peer(15s)) << "the node kept a silent connection";
  auto silent_for = Clock::now() - silent_since;
  EXPECT_GT(silent_for, 9s);
  EXPECT_LT(silent_for, 15s);

  // Every refusal is one log line naming the peer and the reason.
  std::string log = mount()->process().log().substr(log_before.size());
  EXPECT_NE(log.find("this node serves " + src() + ", not /not/this"), std::string::npos) << log;
  EXPECT_NE(log.find("another backupd is attached"), std::string::npos) << log;
  EXPECT_NE(log.find("no TLS handshake within 10 s"), std::string::npos) << log;
  ASSERT_TRUE(mount()->process().alive());
}

TEST_F(AttachTest, UnacknowledgedBatchIsResentToTheNextBackupd) {
  ASSERT_TRUE(mount_source());
  auto first = FakeBackupd::connect(node_port(), backupd_identity());
  ASSERT_TRUE(first);
  ASSERT_TRUE(first->attach(src()));
  auto hello = first->await_hello();
  ASSERT_TRUE(hello) << hello.error().message;
  ASSERT_TRUE(first->send(wire::MsgType::kHelloOk, wire::HelloOk{wire::kVersion, wire::Position{0, 1, 0}}));
  auto baseline = first->await_batch();
  ASSERT_TRUE(baseline) << baseline.error().message;
  ASSERT_TRUE(first->send(wire::MsgType::kAck, wire::Ack{baseline->number}));

  put(src("kept.txt"), "shipped twice\n");
  auto lost = first->await_batch();
  ASSERT_TRUE(lost) << lost.error().message;
  ASSERT_TRUE(has_op(*lost, wire::OpKind::kCreate, "kept.txt"));
  first.reset();  // gone without acknowledging

  // The next backupd (same instance, nothing committed past the baseline) gets it again.
  std::unique_ptr<FakeBackupd> next;
  Result<wire::Hello> again = fail(EIO, "not tried");
  testutil::wait_until(
      [&] {
        next = FakeBackupd::connect(node_port(), backupd_identity());
        if (!next || !next->attach(src())) return true;
        again = next->await_hello();
        return again || again.error().code != EBUSY || expired();
      },
      10s, 100ms);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->instance, hello->instance);
  ASSERT_TRUE(next->send(wire::MsgType::kHelloOk,
                         wire::HelloOk{wire::kVersion, wire::Position{baseline->number, 0, 0}}));
  auto resent = next->await_batch();
  ASSERT_TRUE(resent) << resent.error().message;
  EXPECT_EQ(resent->number, lost->number);
  // The same recorded operations; each file's trailing Attr by id carries its attributes at
  // sending time, which may have moved on.
  EXPECT_EQ(recorded_ops(*resent), recorded_ops(*lost));
  ASSERT_TRUE(next->send(wire::MsgType::kAck, wire::Ack{resent->number}));
  next.reset();

  // Unmounted with a change recorded and no backupd attached: nobody to drain to, so backupfs
  // exits at once.
  put(src("unsent.txt"), "recorded, never shipped\n");
  auto t0 = Clock::now();
  ASSERT_TRUE(unmount_source());
  EXPECT_LT(Clock::now() - t0, 5s) << "backupfs waited to drain with nobody attached";
}

// The command line: --listen is required and checked, --server is gone, and a port in use fails
// the start before anything is mounted.
// The "stolen ack" (issue 10): an impostor attaches while backupd is away, claims backupd's own
// position and acknowledges a batch it never stores. When the real backupd returns with its
// older position, the node must not skip that batch: a receiver behind what it acknowledged
// gets a reconcile, and the change arrives.
TEST_F(AttachTest, AChangeAnImpostorAcknowledgedStillReachesTheRealBackupd) {
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  put(src("before.txt"), "before");
  ASSERT_EQ(wait_converged(), "");
  uint16_t port = this->port();
  ASSERT_TRUE(stop_server());
  auto state = read_key_values(volume_dir() + "/state");
  ASSERT_TRUE(state) << state.error().message;
  uint64_t committed = (*state)["committed"];

  std::unique_ptr<FakeBackupd> impostor;
  Result<wire::Hello> hello = fail(EIO, "not tried");
  testutil::wait_until(
      [&] {
        impostor = FakeBackupd::connect(node_port(), backupd_identity());
        if (!impostor || !impostor->attach(src())) return true;
        hello = impostor->await_hello();
        return hello || hello.error().code != EBUSY || expired();
      },
      10s, 100ms);
  ASSERT_TRUE(hello) << hello.error().message;
  ASSERT_TRUE(impostor->send(wire::MsgType::kHelloOk,
                             wire::HelloOk{wire::kVersion, wire::Position{committed, 0, 0}}));
  put(src("stolen.txt"), "acknowledged by the impostor, never stored\n");
  auto batch = impostor->await_batch();
  ASSERT_TRUE(batch) << batch.error().message;
  ASSERT_TRUE(has_op(*batch, wire::OpKind::kCreate, "stolen.txt"));
  ASSERT_TRUE(impostor->send(wire::MsgType::kAck, wire::Ack{batch->number}));
  impostor.reset();

  ASSERT_TRUE(start_server(port));
  EXPECT_EQ(wait_converged(), "");
  EXPECT_EQ(slurp(mirror() + "/stolen.txt"), "acknowledged by the impostor, never stored\n");
}

TEST_F(AttachTest, CommandLineIsCheckedBeforeMounting) {
  const std::string backupfs = Binaries::find().backupfs;
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string phrase;
  };
  const Case cases[] = {
      {{src(), "--server-id", server_id()}, 2, "--listen is required"},
      {{src(), "--listen", "127.0.0.1:0"}, 2, "--server-id is required"},
      {{src(), "--listen", "127.0.0.1:0", "--server-id", "ABCD"}, 2, "is not an identity"},
      {{src(), "--server", "127.0.0.1:7700"}, 2, "unknown flag --server"},
      {{src(), "--listen", "abc"}, 2, "port 'abc'"},
      {{src(), "--listen", "127.0.0.1:70000"}, 2, "port '70000'"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv{backupfs};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = testutil::run_command(argv, 10s);
    EXPECT_EQ(r.exit_code(), c.exit_code) << r.output;
    EXPECT_NE(r.err.find(c.phrase), std::string::npos) << r.err;
  }

  auto taken = net::tcp_listen({"127.0.0.1", 0}, nullptr);
  ASSERT_TRUE(taken) << taken.error().message;
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(taken->get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto r = testutil::run_command(
      {backupfs, src(), "--listen", "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), "-f",
       "--server-id", server_id(), "--state-dir", node_state_dir()},
      10s);
  EXPECT_EQ(r.exit_code(), 1) << r.output;
  EXPECT_NE(r.err.find("listen on 127.0.0.1:"), std::string::npos) << r.err;
  EXPECT_FALSE(testutil::is_fuse_mounted(src())) << "mounted although the port was taken";
}

// A backupd the node was not told about (--server-id) completes no Attach: it gets
// Error{EACCES} naming its own identity, so the operator can authorise it if it is meant to be,
// and never a Hello, let alone data. A peer that speaks plaintext is told TLS is required.
// Meanwhile the node keeps serving the backupd it knows.
TEST_F(AttachTest, UnknownBackupdIdentityGetsNothing) {
  put(src("secret.txt"), "nothing an impostor may read\n");
  ASSERT_TRUE(mount_source());
  const std::string impostor_identity = scratch_dir("impostor") + "/identity.pem";
  auto impostor_id = net::load_or_create_identity(impostor_identity, "impostor");
  ASSERT_TRUE(impostor_id) << impostor_id.error().message;
  {
    auto impostor = FakeBackupd::connect(node_port(), impostor_identity);
    ASSERT_TRUE(impostor);
    (void)impostor->attach(src());  // the node may have closed already: that is the point
    auto hello = impostor->await_hello();
    ASSERT_FALSE(hello) << "the node answered an unknown backupd's Attach with its Hello";
    EXPECT_EQ(hello.error().code, EACCES) << hello.error().message;
    EXPECT_NE(hello.error().message.find(impostor_id->id), std::string::npos)
        << hello.error().message;
    EXPECT_NE(hello.error().message.find("--server-id"), std::string::npos)
        << hello.error().message;
    EXPECT_TRUE(impostor->closed_by_peer(5s));
  }
  {
    auto plaintext = FakeBackupd::connect(node_port());
    ASSERT_TRUE(plaintext);
    ASSERT_TRUE(plaintext->attach(src()));
    auto hello = plaintext->await_hello();
    ASSERT_FALSE(hello) << "the node answered a plaintext Attach";
    EXPECT_EQ(hello.error().code, EPROTO);
    EXPECT_NE(hello.error().message.find("requires TLS"), std::string::npos)
        << hello.error().message;
  }
  EXPECT_NE(mount()->process().log().find(impostor_id->id), std::string::npos)
      << "the node's log does not name the refused identity";

  auto real = FakeBackupd::connect(node_port(), backupd_identity());
  ASSERT_TRUE(real);
  ASSERT_TRUE(real->attach(src()));
  auto hello = real->await_hello();
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_EQ(hello->path, src());
}

// A batch that takes longer than a second reports progress: a NodeStatus between its frames
// names the file being shipped. Three files each larger than loopback's socket buffers (about
// 10 MiB at most) make sure the node is blocked inside one of them while we do not read, so the
// next file opens more than a second after the batch began, whatever the buffers hold.
TEST_F(AttachTest, LongBatchNamesTheFileBeingShipped) {
  mkdirs(src("d"));
  write_big_file(src("d/a.bin"), 24 * kMiB, 1);
  write_big_file(src("d/b.bin"), 24 * kMiB, 2);
  write_big_file(src("d/c.bin"), 24 * kMiB, 3);
  ASSERT_TRUE(mount_source());
  auto b = FakeBackupd::connect(node_port(), backupd_identity());
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->attach(src()));
  auto hello = b->await_hello();
  ASSERT_TRUE(hello) << hello.error().message;
  ASSERT_TRUE(b->send(wire::MsgType::kHelloOk, wire::HelloOk{wire::kVersion, wire::Position{0, 1, 0}}));
  auto asked = b->answer_manifest();
  ASSERT_TRUE(asked) << asked.error().message;
  // Read nothing for a moment: the node blocks on the full socket inside the first file.
  std::this_thread::sleep_for(1500ms);
  // The baseline is bounded (stream::kBatchLimits), so 72 MiB come as more than one batch.
  uint64_t data_bytes = 0;
  size_t statuses = 0;
  std::vector<std::string> named;
  for (int i = 0; i < 8 && data_bytes < 72 * kMiB; ++i) {
    auto batch = b->await_batch();
    ASSERT_TRUE(batch) << batch.error().message;
    data_bytes += batch->data_bytes;
    statuses += batch->statuses.size();
    for (const auto& st : batch->statuses) {
      if (!st.current_file.empty()) named.push_back(st.current_file);
    }
    ASSERT_TRUE(b->send(wire::MsgType::kAck, wire::Ack{batch->number}));
  }
  EXPECT_EQ(data_bytes, 72 * kMiB);
  ASSERT_FALSE(named.empty()) << "no NodeStatus named a file during a " << statuses
                              << "-status baseline";
  for (const auto& f : named) EXPECT_TRUE(f == "d/a.bin" || f == "d/b.bin" || f == "d/c.bin") << f;
}

}  // namespace
}  // namespace bkp::it
