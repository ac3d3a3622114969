// Connection edges shared by node and replica sessions. The handshake is strict because the
// first frame is where a port scanner, an old client or a confused peer shows itself: anything
// but a well-formed Hello of our magic and version ends the connection with a reason that names
// what was wrong, so the operator's log line is enough to tell which peer misbehaved and how.
#include "server/peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fmt/format.h>

namespace bkp::server {

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return fmt::format("{}:{}", buf, ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return fmt::format("[{}]:{}", buf, ntohs(a->sin6_port));
  }
  return "?";
}

Result<wire::Hello> recv_hello(net::Conn& conn, int timeout_ms, int deadline_ms) {
  auto frame = conn.recv(timeout_ms);
  if (!frame) {
    if (frame.error().code == ETIMEDOUT) {
      return fail(ETIMEDOUT, fmt::format("no hello within {} s", deadline_ms / 1000));
    }
    return tl::unexpected(frame.error());
  }
  if (frame->type != wire::MsgType::kHello) {
    return fail(EPROTO, fmt::format("first frame is {}, not hello", wire::type_name(frame->type)));
  }
  auto hello = wire::decode_hello(frame->payload);
  if (!hello) return tl::unexpected(hello.error().wrap("bad hello"));
  if (hello->magic != wire::kMagic) {
    return fail(EPROTO, fmt::format("bad magic {:#010x} in hello", hello->magic));
  }
  if (hello->version != wire::kVersion) {
    return fail(EPROTONOSUPPORT, fmt::format("protocol version {} not supported (this server speaks {})",
                                             hello->version, wire::kVersion));
  }
  if (hello->role != wire::Role::kNode && hello->role != wire::Role::kReplica &&
      hello->role != wire::Role::kControl) {
    return fail(EPROTONOSUPPORT,
                fmt::format("role {} not served here", static_cast<int>(hello->role)));
  }
  if (!hello->auth.empty()) {
    return fail(EPROTONOSUPPORT, "authentication is not supported by this server yet");
  }
  return hello;
}

}  // namespace bkp::server
