// DelayRelay (delay_relay.h) on a real loopback connection: the bytes arrive whole, in order,
// no sooner than the delay, both ways, and a close is passed on; a held connection stops at
// exactly the byte it was told to, its close included, until released.
#include "tests/testutil/delay_relay.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace bkp::testutil {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

UniqueFd listen_any(uint16_t* port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::listen(fd.get(), 4), 0);
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

UniqueFd connect_to(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// Reads exactly n bytes (or until the peer closes).
std::string read_n(int fd, size_t n) {
  std::string out;
  char buf[4096];
  while (out.size() < n) {
    ssize_t r = ::read(fd, buf, std::min(sizeof buf, n - out.size()));
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

TEST(DelayRelayTest, BytesTakeTheDelayEachWayAndACloseIsPassedOn) {
  uint16_t target = 0;
  UniqueFd server = listen_any(&target);
  auto relay = DelayRelay::start(target, 50ms);
  ASSERT_TRUE(relay) << relay.error().message;
  UniqueFd client = connect_to((*relay)->port());
  UniqueFd accepted(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);

  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  auto sent = Clock::now();
  ASSERT_EQ(::send(client.get(), "ping", 4, 0), 4);
  EXPECT_EQ(read_n(accepted.get(), 4), "ping");
  EXPECT_GE(Clock::now() - sent, 50ms);

  sent = Clock::now();
  ASSERT_EQ(::send(accepted.get(), big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  EXPECT_EQ(read_n(client.get(), big.size()), big) << "whole and in order";
  EXPECT_GE(Clock::now() - sent, 50ms);

  ::shutdown(client.get(), SHUT_WR);
  char c;
  EXPECT_EQ(::read(accepted.get(), &c, 1), 0) << "the client's close reaches the server";
}

TEST(DelayRelayTest, AHeldConnectionStopsAtItsByteUntilReleased) {
  uint16_t target = 0;
  UniqueFd server = listen_any(&target);
  auto relay = DelayRelay::start(target, 0ms);
  ASSERT_TRUE(relay) << relay.error().message;
  (*relay)->hold_after(1000);
  UniqueFd client = connect_to((*relay)->port());
  UniqueFd accepted(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);

  std::string bytes(3000, 'b');
  ASSERT_EQ(::send(accepted.get(), bytes.data(), bytes.size(), 0), 3000);
  accepted.reset();  // the target goes away behind the held bytes
  EXPECT_EQ(read_n(client.get(), 1000), std::string(1000, 'b'));
  ASSERT_TRUE((*relay)->wait_held(10s));
  char c;
  EXPECT_EQ(::recv(client.get(), &c, 1, MSG_DONTWAIT), -1) << "nothing passes while held";
  (*relay)->release();
  EXPECT_EQ(read_n(client.get(), 5000), std::string(2000, 'b')) << "the rest, then the close";
}

}  // namespace
}  // namespace bkp::testutil
