// The node's port (see attach_listener.h): accept, give each connection its own handshake
// thread, and police the handshakes' deadlines from the accept thread.
//
// Why a thread per handshake: Conn::recv's timeout restarts with every chunk received, so a peer
// trickling one byte every few seconds would hold a single-threaded acceptor far beyond the
// 10 s the protocol allows, while the real backupd waits in the backlog. Here the accept thread
// wakes at least every kPollMs, shuts down the socket of any handshake past its deadline (its
// blocked recv then returns), and joins the threads that ended.
//
// The socket of a handshake is shut down through a duplicate descriptor the Handshake owns, so
// a descriptor number the handshake thread already closed can never be reused under us; once a
// handshake is finished (admitted or refused) the accept thread leaves its socket alone.
#include "fs/attach_listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "common/log.h"
#include "common/net/messenger.h"
#include "common/net/socket.h"

namespace bkp::fs {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kPollMs = 200;
constexpr int kLingerMs = 500;

// Sends Error{code, text}, then half-closes and reads until the peer closes (briefly), so the
// peer reads our error rather than a reset caused by bytes we left unread.
void refuse(net::Conn& conn, int code, const std::string& text) {
  if (!net::send_error(conn, code, text)) return;
  ::shutdown(conn.fd(), SHUT_WR);
  auto deadline = Clock::now() + std::chrono::milliseconds(kLingerMs);
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{conn.fd(), POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(conn.fd(), buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return;
  }
}

}  // namespace

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return fmt::format("{}:{}", buf, ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return fmt::format("[{}]:{}", buf, ntohs(a->sin6_port));
  }
  return "?";
}

AttachListener::AttachListener(UniqueFd listener, std::string path, net::Trust trust, Admit admit)
    : listen_fd_(std::move(listener)), path_(std::move(path)), trust_(std::move(trust)),
      admit_(std::move(admit)) {}

AttachListener::~AttachListener() { stop(); }

void AttachListener::start() {
  // Termination signals belong to the FUSE loop's thread; threads started from ours inherit
  // the mask.
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaddset(&block, sig);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  accept_thread_ = std::thread([this] { accept_loop(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void AttachListener::stop() {
  stop_.store(true);
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    std::lock_guard lock(mu_);
    for (auto& h : handshakes_) {
      if (!h.finished) ::shutdown(h.fd, SHUT_RDWR);
    }
  }
  // No new handshakes start once the accept thread is gone; the list is ours now.
  for (auto& h : handshakes_) {
    if (h.thread.joinable()) h.thread.join();
    ::close(h.fd);
  }
  handshakes_.clear();
  listen_fd_.reset();
}

void AttachListener::accept_loop() {
  while (!stop_.load()) {
    expire_and_reap();
    pollfd p{listen_fd_.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, kPollMs);
    if (rc <= 0) continue;
    UniqueFd sock(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!sock) {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        log::warn("accept: {}", std::strerror(errno));
        ::poll(nullptr, 0, kPollMs);  // EMFILE and friends: do not spin
      }
      continue;
    }
    std::lock_guard lock(mu_);
    if (handshakes_.size() >= kMaxHandshakes) {
      log::warn("connection from {} closed: {} handshakes already in progress",
                peer_name(sock.get()), kMaxHandshakes);
      continue;
    }
    int guard = ::fcntl(sock.get(), F_DUPFD_CLOEXEC, 0);
    if (guard < 0) {
      log::warn("connection from {} closed: dup: {}", peer_name(sock.get()), std::strerror(errno));
      continue;
    }
    Handshake& h = handshakes_.emplace_back();
    h.fd = guard;
    h.deadline = Clock::now() + kAttachDeadline;
    h.thread = std::thread([this, hp = &h, s = std::move(sock)]() mutable {
      handshake(hp, std::move(s));
      std::lock_guard done(mu_);
      hp->joinable_now = true;
    });
  }
}

void AttachListener::expire_and_reap() {
  std::vector<std::thread> ended;
  {
    std::lock_guard lock(mu_);
    auto now = Clock::now();
    for (auto it = handshakes_.begin(); it != handshakes_.end();) {
      if (!it->finished && !it->expired && now >= it->deadline) {
        it->expired = true;
        ::shutdown(it->fd, SHUT_RDWR);
      }
      if (it->joinable_now) {
        ended.push_back(std::move(it->thread));
        ::close(it->fd);
        it = handshakes_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& t : ended) t.join();
}

bool AttachListener::finish(Handshake* h) {
  std::lock_guard lock(mu_);
  h->finished = true;
  return !h->expired;
}

Result<wire::Attach> AttachListener::read_attach(net::Conn& conn, Handshake* h) {
  auto timeout_ms = std::chrono::duration_cast<std::chrono::milliseconds>(kAttachDeadline).count();
  auto frame = conn.recv(static_cast<int>(timeout_ms));
  if (!finish(h)) {
    return fail(ETIMEDOUT, fmt::format("no Attach within {} s", kAttachDeadline.count()));
  }
  if (!frame) {
    if (frame.error().code == ETIMEDOUT) {
      return fail(ETIMEDOUT, fmt::format("no Attach within {} s", kAttachDeadline.count()));
    }
    return tl::unexpected(frame.error().wrap("before Attach"));
  }
  if (frame->type != wire::MsgType::kAttach) {
    return fail(EPROTO, fmt::format("first frame is {}, not Attach", wire::type_name(frame->type)));
  }
  auto attach = wire::decode_attach(frame->payload);  // checks magic and version too
  if (!attach) return tl::unexpected(attach.error().wrap("bad Attach"));
  if (!attach->auth.empty()) return fail(EPROTO, "authentication is not supported by this node yet");
  return attach;
}

Result<void> AttachListener::authenticate(net::Conn& conn, const std::string& peer) {
  if (!trust_.tls) return {};
  auto timeout_ms = std::chrono::duration_cast<std::chrono::milliseconds>(kAttachDeadline).count();
  BKP_TRY_VOID(conn.secure(*trust_.tls, net::TlsSide::kServer, static_cast<int>(timeout_ms)));
  if (trust_.allows(conn.peer_id())) return {};
  log::warn("backupd {} with identity {} refused: not one this node serves (to accept it, start "
            "backupfs with --server-id {})", peer, conn.peer_id(), conn.peer_id());
  return fail(EACCES, fmt::format("backupd identity {} is not authorised on this node; to "
                                  "accept it, start backupfs with --server-id {}",
                                  conn.peer_id(), conn.peer_id()));
}

void AttachListener::handshake(Handshake* h, UniqueFd sock) {
  std::string peer = peer_name(sock.get());
  // A backupd that vanished without closing must not keep the node "busy" for hours: the node
  // would refuse the backupd that comes back (net::tune_socket notices it within a minute).
  net::tune_socket(sock.get());
  auto conn = net::Conn::open(std::move(sock));
  if (!conn) {
    finish(h);
    log::error("connection from {}: {}", peer, conn.error().message);
    return;
  }
  if (auto ok = authenticate(**conn, peer); !ok) {
    if (!finish(h) || ok.error().code == ETIMEDOUT) {
      log::error("connection from {} closed: no TLS handshake within {} s", peer,
                 kAttachDeadline.count());
    } else if (ok.error().code == EACCES) {
      refuse(**conn, EACCES, ok.error().message);
    } else {
      log::error("connection from {} closed: {}", peer, ok.error().message);
    }
    return;
  }
  auto attach = read_attach(**conn, h);
  if (!attach) {
    log::error("connection from {} closed: {}", peer, attach.error().message);
    // Tell a peer that speaks the protocol wrongly why (harmless to one that speaks none).
    if (attach.error().code == EPROTO) refuse(**conn, EPROTO, attach.error().message);
    return;
  }
  if (attach->path != path_) {
    std::string why = fmt::format("this node serves {}, not {}", path_, attach->path);
    log::error("backupd {} (server {:016x}) refused: {}", peer, attach->server_id, why);
    refuse(**conn, ENOENT, why);
    return;
  }
  Attached attached{std::move(*conn), std::move(*attach), peer};
  if (auto admitted = admit_(attached); !admitted) {
    log::warn("backupd {} (server {:016x}) refused: {}", peer, attached.attach.server_id,
              admitted.error().message);
    refuse(*attached.conn, admitted.error().code, admitted.error().message);
  }
}

}  // namespace bkp::fs
