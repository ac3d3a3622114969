// Bad input (DESIGN.md invariant 8): a client that sends random bytes, or a frame header
// announcing a 4 GiB payload, is disconnected promptly with a logged error, without backupd
// waiting for (or allocating) the payload, while the well-behaved node keeps replicating.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"
#include "common/wire/frame.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using Clock = std::chrono::steady_clock;

UniqueFd connect_local(uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fd.reset();
  return fd;
}

// Sends what the peer accepts; a peer that hangs up mid-way is fine (that is the point).
void send_some(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// True once the peer closed the connection (EOF or reset) within timeout. Anything it sends
// first (an Error frame) is read and dropped.
bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return true;  // ECONNRESET
  }
  return false;
}

void put_le(std::vector<uint8_t>& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

class GarbageTest : public ClusterTest {};

TEST_F(GarbageTest, BadClientsAreDroppedWhileTheNodeKeepsReplicating) {
  ASSERT_TRUE(start_all());
  put(src("before.txt"), "written before the attack\n");
  ASSERT_EQ(wait_converged(), "");
  size_t errors_before = server_error_lines();

  // Client 1: 64 KiB of random bytes.
  UniqueFd random_client = connect_local(port());
  ASSERT_TRUE(random_client) << "connect: " << strerror(errno);
  std::vector<uint8_t> junk = testutil::random_bytes(64 * 1024, 0xBAD);
  junk[3] = 0x7F;  // whatever is read as a length is far beyond the maximum frame
  send_some(random_client.get(), junk);

  // Client 2: a well-formed header announcing a payload of 0xFFFFFFFF bytes, then silence.
  UniqueFd huge_client = connect_local(port());
  ASSERT_TRUE(huge_client) << "connect: " << strerror(errno);
  std::vector<uint8_t> header;
  put_le(header, 0xFFFFFFFFu, 4);
  header.push_back(static_cast<uint8_t>(wire::MsgType::kHello));
  header.push_back(0);
  put_le(header, 0, 2);
  put_le(header, 1, 8);
  put_le(header, 0x0123456789ABCDEFull, 8);
  ASSERT_EQ(header.size(), wire::kHeaderSize);
  send_some(huge_client.get(), header);

  // Meanwhile the application keeps writing.
  put(src("during.txt"), "written while bad clients were connected\n");

  EXPECT_TRUE(closed_by_peer(random_client.get(), 10s))
      << "backupd kept a connection open after 64 KiB of random bytes";
  EXPECT_TRUE(closed_by_peer(huge_client.get(), 10s))
      << "backupd kept a connection open after a header announcing 4 GiB (waiting for it?)";
  ASSERT_TRUE(backupd()->alive()) << "backupd died on bad input";

  EXPECT_TRUE(testutil::wait_until(
      [&] { return server_error_lines() >= errors_before + 2 || expired(); }, 10s))
      << "expected an error line in backupd's log per bad client; got "
      << server_error_lines() - errors_before;

  put(src("after.txt"), "written after the attack\n");
  append(src("before.txt"), "and changed after it\n");
  ASSERT_EQ(wait_converged(), "");
}

// A flood of connections that never say hello (300, more than backupd's 256 connection slots)
// used to lock bkptool and the replicators out; each address now gets only a few such
// connections at a time, the oldest dropped for a newer one, so real clients still get in.
TEST_F(GarbageTest, IdleConnectionsCannotLockOutBkptoolOrReplicas) {
  ASSERT_TRUE(start_server());
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 300; ++i) {
    UniqueFd fd = connect_local(port());
    ASSERT_TRUE(fd) << "connection " << i << ": " << strerror(errno);
    idle.push_back(std::move(fd));
  }
  auto t0 = Clock::now();
  auto r = bkptool({"status"}, 20s);
  EXPECT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_LT(Clock::now() - t0, 10s) << "bkptool waited for the flood to time out";
  ASSERT_TRUE(start_replicators());
  EXPECT_TRUE(testutil::wait_until(
      [&] { return log_text("backupd").find("replica r1 connected") != std::string::npos; }, 20s,
      20ms))
      << "replica r1 never got in";
}

}  // namespace
}  // namespace bkp::it
