// Identities and TLS on a Conn: the fingerprint is stable and checked, two processes starting at
// once share one identity, a key readable by others is refused, frames cross an encrypted
// connection byte for byte in both directions (also fed and drained in odd slices, and with a
// frame's body encrypted from where it lies: Conn::send_parts), each side
// learns the other's identity, and a plaintext peer gets a clear refusal instead of garbage.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <thread>
#include <utility>
#include <vector>

#include "common/net/conn.h"
#include "common/net/identity.h"
#include "common/net/messenger.h"
#include "common/net/tls.h"
#include "tests/testutil/stream_ends.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::net {
namespace {

constexpr int kTimeoutMs = 10000;

Identity identity_at(const std::string& path) {
  auto id = load_or_create_identity(path, "test");
  EXPECT_TRUE(id) << id.error().message;
  return std::move(*id);
}

std::pair<std::unique_ptr<Conn>, std::unique_ptr<Conn>> conn_pair() {
  auto pair = testutil::conn_pair();
  EXPECT_TRUE(pair) << pair.error().message;
  return {std::move(pair->a), std::move(pair->b)};
}

TEST(IdentityTest, MadeOnceKeptPrivateAndStable) {
  testutil::TempDir dir;
  std::string path = dir.sub("identity.pem");
  Identity first = identity_at(path);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(first.id.size(), 52u + 12u);
  Identity again = identity_at(path);
  EXPECT_EQ(again.id, first.id);
  auto parsed = parse_id(first.id);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, first.id);
  std::string lower;
  for (char c : first.id) {
    if (c != '-') lower += static_cast<char>(std::tolower(c));
  }
  EXPECT_EQ(parse_id(lower).value_or(""), first.id);
  EXPECT_FALSE(parse_id(first.id.substr(1)));
  EXPECT_FALSE(parse_id(first.id.substr(0, first.id.size() - 1) + "1"));
  EXPECT_NE(identity_at(dir.sub("other.pem")).id, first.id);
}

TEST(IdentityTest, ConcurrentFirstStartsShareOneIdentity) {
  testutil::TempDir dir;
  std::string path = dir.sub("identity.pem");
  std::vector<std::string> ids(8);
  std::vector<std::thread> threads;
  for (auto& id : ids) {
    threads.emplace_back([&] { id = identity_at(path).id; });
  }
  for (auto& t : threads) t.join();
  for (const auto& id : ids) EXPECT_EQ(id, ids[0]);
}

TEST(IdentityTest, RefusesAKeyOthersCanRead) {
  testutil::TempDir dir;
  std::string path = dir.sub("identity.pem");
  identity_at(path);
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  auto id = load_or_create_identity(path, "test");
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, EACCES);
  EXPECT_NE(id.error().message.find("chmod 600"), std::string::npos) << id.error().message;
  auto dir_id = load_or_create_identity(dir.path(), "test");
  ASSERT_FALSE(dir_id);
  EXPECT_EQ(dir_id.error().code, EINVAL);
}

TEST(TlsTest, FramesCrossEncryptedAndEachSideKnowsTheOther) {
  testutil::TempDir dir;
  Identity server_id = identity_at(dir.sub("server.pem"));
  Identity client_id = identity_at(dir.sub("client.pem"));
  auto server_tls = TlsConfig::make(server_id);
  auto client_tls = TlsConfig::make(client_id);
  ASSERT_TRUE(server_tls && client_tls);
  auto [a, b] = conn_pair();
  std::vector<uint8_t> big(3u << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  // A frame sent whole, one whose 1 MiB body is encrypted from where it is (send_parts), one
  // whose small body is copied like any frame's, and a whole one after them.
  const std::span<const uint8_t> all(big);
  const std::vector<std::span<const uint8_t>> payloads = {
      all.subspan(0, 1u << 20), all.subspan(1u << 20, 1u << 20), all.subspan(2u << 20, 1000),
      all.subspan(2u << 20, 1u << 20)};
  std::thread server([&, &b = b] {
    ASSERT_TRUE(b->secure(**server_tls, TlsSide::kServer, kTimeoutMs));
    EXPECT_EQ(b->peer_id(), client_id.id);
    for (const auto& expected : payloads) {
      auto frame = b->recv(kTimeoutMs);
      ASSERT_TRUE(frame) << frame.error().message;
      ASSERT_EQ(frame->payload.size(), expected.size());
      EXPECT_TRUE(std::equal(frame->payload.begin(), frame->payload.end(), expected.begin()));
    }
    ASSERT_TRUE(send_now(*b, wire::ErrorMsg{42, "done"}));
  });
  ASSERT_TRUE(a->secure(**client_tls, TlsSide::kClient, kTimeoutMs));
  EXPECT_EQ(a->peer_id(), server_id.id);
  ASSERT_TRUE(a->send(wire::MsgType::kData, 0, payloads[0]));
  for (size_t i : {1, 2}) {
    ASSERT_TRUE(a->send_parts(wire::MsgType::kData, 0, payloads[i].first(20),
                              payloads[i].subspan(20)));
  }
  ASSERT_TRUE(a->send(wire::MsgType::kData, 0, payloads[3]));
  auto answer = expect<wire::HelloOk>(*a, kTimeoutMs);  // the Error frame comes back as one
  server.join();
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, 42);
  EXPECT_EQ(a->bytes_received(), b->bytes_sent());
  EXPECT_EQ(b->bytes_received(), a->bytes_sent());
}

// The sessions' own byte queues (tls.cc) under ciphertext that arrives in odd slices, is only
// partly sent before more is written, and outgrows their first buffer: both directions carry
// every byte in order, and nothing is left buffered at the end.
TEST(TlsTest, SessionsCarryAStreamFedAndDrainedInOddSlices) {
  testutil::TempDir dir;
  auto server_tls = TlsConfig::make(identity_at(dir.sub("server.pem")));
  auto client_tls = TlsConfig::make(identity_at(dir.sub("client.pem")));
  ASSERT_TRUE(server_tls && client_tls);
  auto client = TlsSession::make(**client_tls, TlsSide::kClient);
  auto server = TlsSession::make(**server_tls, TlsSide::kServer);
  ASSERT_TRUE(client && server);
  // Moves at most `slice` bytes of what from has waiting to to.
  auto move = [](TlsSession& from, TlsSession& to, size_t slice) {
    auto out = from.output();
    size_t n = std::min(slice, out.size());
    ASSERT_TRUE(to.feed(out.first(n)));
    from.consume(n);
  };
  bool client_done = false, server_done = false;
  for (int step = 0; step < 1000 && !(client_done && server_done); ++step) {
    auto c = (*client)->handshake();
    auto s = (*server)->handshake();
    ASSERT_TRUE(c && s) << (c ? s.error().message : c.error().message);
    client_done = *c;
    server_done = *s;
    move(**client, **server, 97);
    move(**server, **client, 97);
  }
  ASSERT_TRUE(client_done && server_done);
  while (!(*client)->output().empty() || !(*server)->output().empty()) {
    move(**client, **server, 4096);
    move(**server, **client, 4096);
  }

  std::vector<uint8_t> sent(3u << 20);
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  for (auto [from, to] : {std::pair{client->get(), server->get()}, {server->get(), client->get()}}) {
    std::vector<uint8_t> got;
    std::vector<uint8_t> room(6007);
    for (size_t at = 0; at < sent.size();) {
      size_t n = std::min<size_t>(300007, sent.size() - at);  // more than one record, odd size
      ASSERT_TRUE(from->encrypt(std::span(sent).subspan(at, n)));
      at += n;
      move(*from, *to, 7919);  // part of it now, the rest after the next records are written
      for (size_t r = 0; r < 50; ++r) {
        auto d = to->decrypt(room);
        ASSERT_TRUE(d) << d.error().message;
        got.insert(got.end(), room.begin(), room.begin() + static_cast<ptrdiff_t>(*d));
      }
    }
    for (int rounds = 0; rounds < 100000 && got.size() < sent.size(); ++rounds) {
      move(*from, *to, 7919);
      auto d = to->decrypt(room);
      ASSERT_TRUE(d) << d.error().message;
      got.insert(got.end(), room.begin(), room.begin() + static_cast<ptrdiff_t>(*d));
    }
    ASSERT_EQ(got.size(), sent.size());
    EXPECT_TRUE(got == sent);
    EXPECT_TRUE(from->output().empty());
    EXPECT_FALSE(to->has_buffered());
  }
}

TEST(TlsTest, PlaintextPeerIsToldTlsIsRequired) {
  testutil::TempDir dir;
  auto tls = TlsConfig::make(identity_at(dir.sub("server.pem")));
  ASSERT_TRUE(tls);
  auto [a, b] = conn_pair();
  std::thread server([&, &b = b] {
    auto secured = b->secure(**tls, TlsSide::kServer, kTimeoutMs);
    ASSERT_FALSE(secured);
    EXPECT_EQ(secured.error().code, EPROTO);
  });
  wire::Hello hello;
  ASSERT_TRUE(send_now(*a, hello));
  auto answer = expect<wire::HelloOk>(*a, kTimeoutMs);
  server.join();
  ASSERT_FALSE(answer);
  EXPECT_NE(answer.error().message.find("requires TLS"), std::string::npos)
      << answer.error().message;
}

TEST(TlsTest, ClientFacingPlaintextPeerSaysSo) {
  testutil::TempDir dir;
  auto tls = TlsConfig::make(identity_at(dir.sub("client.pem")));
  ASSERT_TRUE(tls);
  auto [a, b] = conn_pair();
  std::thread old_peer([&, &b = b] {
    (void)b->recv(kTimeoutMs);  // the ClientHello is no frame: EPROTO
    (void)send_error(*b, EPROTO, "bad frame");
  });
  auto secured = a->secure(**tls, TlsSide::kClient, kTimeoutMs);
  old_peer.join();
  ASSERT_FALSE(secured);
  EXPECT_NE(secured.error().message.find("plaintext"), std::string::npos)
      << secured.error().message;
}

// The hostile-peer review: a handshake that failed ended in a bare close, because the alert
// OpenSSL wrote stayed in our buffer; a peer without a certificate could not tell why. It now
// reads TLS 1.3's certificate_required alert before the close.
TEST(TlsTest, APeerWithoutACertificateIsToldWhyBeforeTheClose) {
  testutil::TempDir dir;
  auto tls = TlsConfig::make(identity_at(dir.sub("server.pem")));
  ASSERT_TRUE(tls);
  auto [a, b] = conn_pair();
  std::thread server([&, &b = b] {
    auto secured = b->secure(**tls, TlsSide::kServer, kTimeoutMs);
    EXPECT_FALSE(secured);
    ::shutdown(b->fd(), SHUT_RDWR);  // as backupd closes the connection
  });
  signal(SIGPIPE, SIG_IGN);  // a client writing into a closed socket fails, not dies
  // The client's reads are bounded by the server, which closes within kTimeoutMs whatever
  // happens. (Not by SO_RCVTIMEO: a socket read with a timeout returns EINTR, where it would
  // restart, when this process's io_uring work interrupts it, and the client gave up early.)
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                         &SSL_CTX_free);
  ASSERT_TRUE(ctx);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), &SSL_free);
  ASSERT_TRUE(ssl);
  SSL_set_fd(ssl.get(), a->fd());
  ERR_clear_error();
  char byte = 0;
  // TLS 1.3: the client's side of the handshake completes; the server's verdict comes after.
  if (SSL_connect(ssl.get()) == 1) (void)SSL_read(ssl.get(), &byte, 1);
  unsigned long err = ERR_peek_last_error();
  server.join();
  EXPECT_EQ(ERR_GET_REASON(err), SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
      << (err != 0 ? ERR_error_string(err, nullptr) : "no TLS error: a bare close");
}

}  // namespace
}  // namespace bkp::net
