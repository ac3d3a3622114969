// Who may control backupd and who may receive its volumes (README "Security"): on the TCP port
// only identities authorised from the local control socket are served, refused before any
// request is read, and a refused replicator is shown to the operator as waiting; the control
// socket itself is 0660 and serves bkptool only. Every peer here is a real process (bkptool) or
// a raw connection written from docs/PROTOCOL.md, as an attacker would write one.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "common/net/conn.h"
#include "common/net/messenger.h"
#include "common/net/socket.h"
#include "common/net/tls.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr int kTimeoutMs = 10000;
constexpr char kNotAuthorised[] = "is not authorised on this backupd";

std::unique_ptr<net::Conn> open_conn(UniqueFd fd) {
  auto conn = net::Conn::open(std::move(fd));
  EXPECT_TRUE(conn) << conn.error().message;
  return conn ? std::move(*conn) : nullptr;
}

std::unique_ptr<net::Conn> tcp_conn(uint16_t port) {
  auto fd = net::tcp_connect(net::HostPort{"127.0.0.1", port}, kTimeoutMs);
  EXPECT_TRUE(fd) << fd.error().message;
  return fd ? open_conn(std::move(*fd)) : nullptr;
}

std::unique_ptr<net::Conn> unix_conn(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof addr.sun_path - 1);
  EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << path;
  return open_conn(std::move(fd));
}

// Sends Hello{role, name} and returns backupd's first answer.
Result<wire::Frame> hello(net::Conn& conn, wire::Role role, const std::string& name) {
  wire::Hello h;
  h.role = role;
  h.name = name;
  BKP_TRY_VOID(net::send_now(conn, h));
  return conn.recv(kTimeoutMs);
}

// The text of an Error frame ("" and a test failure for anything else).
std::string error_text(const Result<wire::Frame>& frame) {
  EXPECT_TRUE(frame) << frame.error().message;
  if (!frame) return "";
  EXPECT_EQ(frame->type, wire::MsgType::kError) << wire::type_name(frame->type);
  auto err = wire::decode_error(frame->payload);
  return err ? err->text : "";
}

class ControlAuthTest : public ControlTest {
 protected:
  // backupd's identity, as the server's admin reads it.
  std::string server_id() {
    auto r = testutil::run_command({binaries().backupd, "--state-dir", state_dir(), "--show-id"});
    EXPECT_EQ(r.exit_code(), 0) << r.output;
    return r.out.substr(0, r.out.find('\n'));
  }

  // A remote operator: bkptool over TCP with its own identity file.
  std::string operator_identity() {
    if (identity_.empty()) identity_ = scratch_dir("operator") + "/identity.pem";
    auto r = testutil::run_command({binaries().bkptool, "--identity", identity_, "--show-id"});
    EXPECT_EQ(r.exit_code(), 0) << r.output;
    return r.out.substr(0, r.out.find('\n'));
  }

  testutil::CommandResult remote(const std::vector<std::string>& args,
                                 const std::string& pinned = "") {
    std::vector<std::string> argv{binaries().bkptool, "--server",
                                  "127.0.0.1:" + std::to_string(port()), "--server-id",
                                  pinned.empty() ? server_id() : pinned, "--identity", identity_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testutil::run_command(argv, std::chrono::seconds(60));
  }

  // The "pending_replicas" of `bkptool status --json` through the socket.
  Json pending_replicas() {
    std::string why;
    auto doc = bkptool_json({"status"}, &why);
    EXPECT_TRUE(doc) << why;
    return doc ? doc->value("pending_replicas", Json::array()) : Json::array();
  }

  std::string identity_;
};

TEST_F(ControlAuthTest, AnUnauthorisedOperatorCanDoNothingUntilAdded) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  put(src("file.txt"), std::string(10000, 'x'));
  std::string why;
  std::optional<Json> snaps;
  ASSERT_TRUE(testutil::wait_until(
      [&] {
        snaps = snapshots(&why);
        return expired() || (snaps && !snaps->empty());
      },
      60s, 300ms) && !expired()) << why;
  std::vector<std::string> archives = tgz_files();
  ASSERT_FALSE(archives.empty());
  std::string me = operator_identity();
  ASSERT_FALSE(me.empty());

  const std::vector<std::vector<std::string>> attempts = {
      {"list"},
      {"status"},
      {"restore", node_name, src(), "--to", scratch_dir("restored")},
      {"unregister", node_name, src()},
      {"unregister", node_name, src(), "--purge"}};
  for (const auto& args : attempts) {
    auto r = remote(args);
    EXPECT_NE(r.exit_code(), 0) << args[0] << ": " << r.output;
    EXPECT_NE(r.err.find(kNotAuthorised), std::string::npos) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find("bkptool operator add " + me), std::string::npos) << r.err;
  }
  EXPECT_TRUE(list_dir(scratch_dir("restored")).empty());
  ASSERT_TRUE(volume(&why)) << why;  // still registered
  for (const auto& name : archives) {
    struct stat st{};
    EXPECT_EQ(stat((snapshots_dir() + "/" + name).c_str(), &st), 0) << name << " was deleted";
  }

  auto added = bkptool({"operator", "add", me, "--name", "laptop"});
  ASSERT_EQ(added.exit_code(), 0) << added.output;
  EXPECT_NE(added.err.find("authorised operator " + me + " (laptop)"), std::string::npos)
      << added.err;
  auto again = bkptool({"operator", "add", me});
  EXPECT_EQ(again.exit_code(), 5) << again.output;
  auto listed = remote({"--json", "list"});
  ASSERT_EQ(listed.exit_code(), 0) << listed.output;
  Json doc = Json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << listed.out;
  EXPECT_EQ(doc["volumes"].size(), 1u) << doc.dump();

  // A backupd that is not the pinned one is refused before anything is sent.
  auto wrong = remote({"list"}, /*pinned=*/me);
  EXPECT_EQ(wrong.exit_code(), 8) << wrong.output;
  EXPECT_NE(wrong.err.find("presented identity " + server_id()), std::string::npos) << wrong.err;

  auto removed = bkptool({"operator", "remove", me});
  ASSERT_EQ(removed.exit_code(), 0) << removed.output;
  auto revoked = remote({"list"});
  EXPECT_NE(revoked.exit_code(), 0) << revoked.output;
  EXPECT_NE(revoked.err.find(kNotAuthorised), std::string::npos) << revoked.err;
  auto unknown = bkptool({"operator", "remove", me});
  EXPECT_EQ(unknown.exit_code(), 4) << unknown.output;
  auto bad = bkptool({"operator", "add", "not-an-id"});
  EXPECT_EQ(bad.exit_code(), 2) << bad.output;
}

TEST_F(ControlAuthTest, PlaintextIsRefusedAndTheSocketServesControlOnly) {
  ASSERT_TRUE(start_server());
  auto plain = tcp_conn(port());
  ASSERT_TRUE(plain);
  EXPECT_NE(error_text(hello(*plain, wire::Role::kControl, "bkptool")).find("requires TLS"),
            std::string::npos);

  struct stat st{};
  ASSERT_EQ(lstat(control_socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);

  auto local = unix_conn(control_socket());
  ASSERT_TRUE(local);
  EXPECT_NE(error_text(hello(*local, wire::Role::kReplica, "r9")).find("serves bkptool only"),
            std::string::npos);
  auto after = local->recv(kTimeoutMs);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, ECONNRESET) << after.error().message;

  ASSERT_TRUE(stop_server());
  EXPECT_NE(lstat(control_socket().c_str(), &st), 0) << "the socket outlived a clean stop";
}

TEST_F(ControlAuthTest, AnUnauthorisedReplicatorWaitsUntilAdded) {
  ASSERT_TRUE(start_server());
  auto identity = net::TlsConfig::load(scratch_dir("rogue") + "/identity.pem", "replicator");
  ASSERT_TRUE(identity) << identity.error().message;
  const std::string id = (*identity)->id();
  auto replicator = [&]() -> std::unique_ptr<net::Conn> {
    auto conn = tcp_conn(port());
    if (!conn) return nullptr;
    auto secured = conn->secure(**identity, net::TlsSide::kClient, kTimeoutMs);
    EXPECT_TRUE(secured) << secured.error().message;
    EXPECT_EQ(conn->peer_id(), server_id());
    return secured ? std::move(conn) : nullptr;
  };

  auto refused = replicator();
  ASSERT_TRUE(refused);
  std::string text = error_text(hello(*refused, wire::Role::kReplica, "rogue"));
  EXPECT_NE(text.find("replicator identity " + id + " (rogue) " + kNotAuthorised),
            std::string::npos) << text;
  EXPECT_NE(text.find("bkptool replica add " + id), std::string::npos) << text;

  Json pending = pending_replicas();
  ASSERT_EQ(pending.size(), 1u) << pending.dump();
  EXPECT_EQ(pending[0].value("id", ""), id);
  EXPECT_EQ(pending[0].value("name", ""), "rogue");
  EXPECT_EQ(pending[0].value("attempts", 0), 1);
  auto shown = bkptool({"status"});
  EXPECT_NE(shown.out.find("replicas waiting for authorisation"), std::string::npos) << shown.output;

  auto added = bkptool({"replica", "add", id});
  ASSERT_EQ(added.exit_code(), 0) << added.output;
  EXPECT_TRUE(pending_replicas().empty());
  auto accepted = replicator();
  ASSERT_TRUE(accepted);
  auto answer = hello(*accepted, wire::Role::kReplica, "rogue");
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_EQ(answer->type, wire::MsgType::kHelloOk) << wire::type_name(answer->type);

  // Removing the identity ends the session it has open now.
  std::string why;
  auto removed = bkptool_json({"replica", "remove", id}, &why);
  ASSERT_TRUE(removed) << why;
  EXPECT_EQ(removed->value("sessions_closed", 0), 1) << removed->dump();
  // A session begins with backupd asking for the replicator's usage (placement); after that,
  // only the close (or an Error) may come.
  auto after = accepted->recv(kTimeoutMs);
  if (after && after->type == wire::MsgType::kUsageRequest) after = accepted->recv(kTimeoutMs);
  EXPECT_FALSE(after && after->type != wire::MsgType::kError) << wire::type_name(after->type);
  auto again = replicator();
  ASSERT_TRUE(again);
  EXPECT_NE(error_text(hello(*again, wire::Role::kReplica, "rogue")).find(kNotAuthorised),
            std::string::npos);
}

// A replicator's name is bound to its identity (PeerGate::claim_name): copies, drops and
// restore sources follow names, so one authorised replicator must not take another's.
TEST_F(ControlAuthTest, AReplicatorGoesByTheNameItsIdentityWasGiven) {
  ASSERT_TRUE(start_server());
  auto load = [&](const std::string& name) {
    auto identity = net::TlsConfig::load(scratch_dir(name) + "/identity.pem", "replicator");
    EXPECT_TRUE(identity) << identity.error().message;
    return std::move(*identity);
  };
  auto named = load("named"), first = load("first");
  auto hello_as = [&](net::TlsConfig& identity, const std::string& name) {
    auto conn = tcp_conn(port());
    EXPECT_TRUE(conn);
    auto secured = conn->secure(identity, net::TlsSide::kClient, kTimeoutMs);
    EXPECT_TRUE(secured) << secured.error().message;
    return hello(*conn, wire::Role::kReplica, name);
  };
  auto bad_name = bkptool({"replica", "add", named->id(), "--name", "not a name"});
  EXPECT_EQ(bad_name.exit_code(), 2) << bad_name.output;
  ASSERT_EQ(bkptool({"replica", "add", named->id(), "--name", "ra"}).exit_code(), 0);
  auto taken = bkptool({"replica", "add", first->id(), "--name", "ra"});
  EXPECT_EQ(taken.exit_code(), 5) << taken.output;
  ASSERT_EQ(bkptool({"replica", "add", first->id()}).exit_code(), 0);

  // Authorised as ra: another name is refused, saying which one to use.
  std::string text = error_text(hello_as(*named, "rb"));
  EXPECT_NE(text.find("is authorised as 'ra', not 'rb': start it with --name ra"),
            std::string::npos) << text;
  // Added without a name: the other's name is refused, the first name of its own is kept.
  text = error_text(hello_as(*first, "ra"));
  EXPECT_NE(text.find("the name 'ra' belongs to replicator identity " + named->id()),
            std::string::npos) << text;
  auto answer = hello_as(*first, "rc");
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_EQ(answer->type, wire::MsgType::kHelloOk) << wire::type_name(answer->type);
  text = error_text(hello_as(*first, "rd"));
  EXPECT_NE(text.find("is authorised as 'rc'"), std::string::npos) << text;
  std::string why;
  auto list = bkptool_json({"replica", "list"}, &why);
  ASSERT_TRUE(list) << why;
  EXPECT_NE(list->dump().find("\"rc\""), std::string::npos) << list->dump();
}

}  // namespace
}  // namespace bkp::it
