// TCP helpers: address parsing, listening and connecting on IPv4/IPv6 with the options every
// backupfs connection wants (TCP_NODELAY, SO_KEEPALIVE, CLOEXEC).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::net {

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// "127.0.0.1:7700", "[::1]:7700", "localhost:7700". EINVAL with a clear message otherwise.
Result<HostPort> parse_host_port(std::string_view text);

// The port a bound socket has (0 if it cannot tell).
uint16_t local_port(int fd);
// The address a connected socket has on this host, numeric ("" if it cannot tell).
std::string local_host(int fd);
// "host:port", with an IPv6 host in brackets, as parse_host_port reads it back.
std::string format_host_port(const HostPort& where);

// Binds and listens; port 0 picks a free port, returned in HostPort::port.
Result<UniqueFd> tcp_listen(const HostPort& where, HostPort* bound);

// TCP_NODELAY, and a peer that vanished without closing (power loss, a cut cable) noticed
// within about a minute rather than the kernel's two hours (keepalive) or ~15 minutes
// (retransmissions): keepalive after 30 s idle, every 10 s, 3 probes, and TCP_USER_TIMEOUT 60 s
// for data sent and never acknowledged. TCP-level acknowledgements do not depend on the peer's
// application reading, so a busy but live peer is never cut by these. tcp_connect applies it;
// accept loops call it on new sockets.
void tune_socket(int fd);

// Connects with a timeout; the returned socket is blocking.
Result<UniqueFd> tcp_connect(const HostPort& where, int timeout_ms);

}  // namespace bkp::net
