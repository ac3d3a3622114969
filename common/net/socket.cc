// TCP plumbing shared by every binary: parse "host:port", listen, connect with a deadline.
// getaddrinfo handles names and both address families; sockets get TCP_NODELAY (frames are
// already batched by Conn), keepalive and a user timeout (to notice dead peers: socket.h).
#include "common/net/socket.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace bkp::net {
void tune_socket(int fd) {
  int one = 1, idle = 30, interval = 10, count = 3;
  unsigned user_timeout_ms = 60000;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

namespace {

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list) freeaddrinfo(list);
  }
};

Result<void> resolve(const HostPort& where, bool passive, AddrInfo& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  std::string port = std::to_string(where.port);
  int rc = getaddrinfo(where.host.empty() ? nullptr : where.host.c_str(), port.c_str(), &hints,
                       &out.list);
  if (rc != 0) return fail(EHOSTUNREACH, "resolve " + where.host + ": " + gai_strerror(rc));
  return {};
}

}  // namespace

Result<HostPort> parse_host_port(std::string_view text) {
  HostPort hp;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail(EINVAL, "address '" + std::string(text) + "' must look like [::1]:7700");
    }
    hp.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(EINVAL, "address '" + std::string(text) + "' must look like HOST:PORT");
    }
    hp.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || ptr != port.data() + port.size() || value > 65535 || port.empty()) {
    return fail(EINVAL, "port '" + std::string(port) + "' must be a number from 0 to 65535");
  }
  hp.port = static_cast<uint16_t>(value);
  return hp;
}

uint16_t local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

std::string local_host(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char host[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, nullptr, 0,
                  NI_NUMERICHOST) != 0) {
    return "";
  }
  return host;
}

std::string format_host_port(const HostPort& where) {
  if (where.host.find(':') != std::string::npos) {
    return fmt::format("[{}]:{}", where.host, where.port);
  }
  return fmt::format("{}:{}", where.host, where.port);
}

Result<UniqueFd> tcp_listen(const HostPort& where, HostPort* bound) {
  AddrInfo ai;
  BKP_TRY_VOID(resolve(where, true, ai));
  std::string last = "no address";
  for (addrinfo* a = ai.list; a; a = a->ai_next) {
    UniqueFd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) continue;
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || listen(fd.get(), 128) != 0) {
      last = std::strerror(errno);
      continue;
    }
    if (bound) {
      bound->host = where.host;
      bound->port = local_port(fd.get());
    }
    return fd;
  }
  return fail(EADDRNOTAVAIL,
              "listen on " + where.host + ":" + std::to_string(where.port) + ": " + last);
}

Result<UniqueFd> tcp_connect(const HostPort& where, int timeout_ms) {
  AddrInfo ai;
  BKP_TRY_VOID(resolve(where, false, ai));
  std::string target = where.host + ":" + std::to_string(where.port);
  std::string last = "no address";
  for (addrinfo* a = ai.list; a; a = a->ai_next) {
    UniqueFd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (!fd) continue;
    int rc = connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd.get(), POLLOUT, 0};
      do {  // a signal is no verdict on the connection (timeout_ms restarts: a rare signal)
        rc = poll(&p, 1, timeout_ms);
      } while (rc < 0 && errno == EINTR);
      if (rc == 0) {
        last = "timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last = std::strerror(err);
        continue;
      }
      rc = 0;
    }
    if (rc != 0) {
      last = std::strerror(errno);
      continue;
    }
    fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    tune_socket(fd.get());
    return fd;
  }
  return fail(ECONNREFUSED, "connect to " + target + ": " + last);
}

}  // namespace bkp::net
