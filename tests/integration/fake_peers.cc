// Fake peers for frame-exact tests (see fake_peers.h).
#include "tests/integration/fake_peers.h"

#include <poll.h>
#include <sys/socket.h>

#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "common/net/messenger.h"
#include "common/net/socket.h"

namespace bkp::it {

wire::Op make(wire::OpKind kind, std::string path, std::string target, uint64_t id) {
  wire::Op o;
  o.kind = kind;
  o.path = std::move(path);
  o.target = std::move(target);
  o.id = id;
  o.mode = 0644;
  return o;
}

wire::Position StreamFrames::select(const std::string& path, uint64_t instance) {
  EXPECT_TRUE(net::send_now(conn_, wire::Select{"h", path, instance}));
  auto at = net::expect<wire::Position>(conn_, kFakePeerTimeoutMs);
  EXPECT_TRUE(at) << at.error().message;
  return at ? *at : wire::Position{};
}

void StreamFrames::op(const wire::Op& o) {
  std::vector<uint8_t> payload;
  wire::encode(o, payload);
  ASSERT_TRUE(conn_.send(wire::MsgType::kOp, 0, payload));
}

void StreamFrames::write(uint64_t id, const std::string& data) {
  std::vector<uint8_t> payload;
  wire::WriteEncoder().encode(id, 0, std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(data.data()), data.size()), payload);
  ASSERT_TRUE(conn_.send(wire::MsgType::kWrite, 0, payload));
}

bool StreamFrames::commit(uint64_t batch) {
  if (!net::send_now(conn_, wire::Commit{batch})) return false;
  auto ack = net::expect<wire::Ack>(conn_, kFakePeerTimeoutMs);
  return ack && ack->batch == batch;
}

FakeBackupd::FakeBackupd(const std::string& identity) {
  net::HostPort bound;
  auto listener = net::tcp_listen({"127.0.0.1", 0}, &bound);
  if (!listener) {
    ADD_FAILURE() << listener.error().message;
    return;
  }
  listener_ = std::move(*listener);
  port_ = bound.port;
  auto tls = net::TlsConfig::load(identity, "fake-backupd");
  if (!tls) {
    ADD_FAILURE() << tls.error().message;
    return;
  }
  tls_ = *tls;
}

std::unique_ptr<net::Conn> FakeBackupd::accept() {
  pollfd p{listener_.get(), POLLIN, 0};
  if (!tls_ || poll(&p, 1, kFakePeerTimeoutMs) != 1) {
    ADD_FAILURE() << "no replicator connected";
    return nullptr;
  }
  auto conn = net::Conn::open(UniqueFd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC)));
  if (!conn) {
    ADD_FAILURE() << conn.error().message;
    return nullptr;
  }
  if (auto secured = (*conn)->secure(*tls_, net::TlsSide::kServer, kFakePeerTimeoutMs); !secured) {
    ADD_FAILURE() << secured.error().message;
    return nullptr;
  }
  if (auto hello = net::expect<wire::Hello>(**conn, kFakePeerTimeoutMs); !hello) {
    ADD_FAILURE() << hello.error().message;
    return nullptr;
  }
  if (!net::send_now(**conn, wire::HelloOk{})) {
    ADD_FAILURE() << "cannot answer the replicator's Hello";
    return nullptr;
  }
  return std::move(*conn);
}

}  // namespace bkp::it
