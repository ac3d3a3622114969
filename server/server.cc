// backupd's process: settings, state directory, listening socket, one thread per connection, and
// a clean stop on SIGTERM/SIGINT.
//
// The main thread polls the listening socket and a signalfd (the signals are blocked in every
// thread, so they only arrive there). Each accepted connection gets a thread that reads the
// Hello (10 s deadline) and runs the node or replica session; a bad first frame costs one log
// line naming the peer, a kError frame and the close of that connection only. The number of
// connections is capped so a flood cannot exhaust threads or descriptors. To stop, the main
// thread shuts every connection's socket down (which ends any blocking recv or send in its
// thread), wakes the idle replica sessions and joins every thread: nothing is left blocked.
#include "server/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <list>
#include <thread>

#include "common/log.h"
#include "server/hub.h"
#include "server/node_session.h"
#include "server/peer.h"
#include "server/replica_session.h"

namespace bkp::server {
namespace {

constexpr size_t kMaxConnections = 256;

void set_int_opt(int fd, int level, int name, int value) {
  setsockopt(fd, level, name, &value, sizeof value);
}

Result<void> write_port_file(const std::string& path, uint16_t port) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return fail_errno("create " + tmp);
  std::string text = fmt::format("{}\n", port);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return fail_errno("write " + tmp);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail_errno("rename " + tmp + " to " + path);
  return {};
}

class Server {
 public:
  explicit Server(Settings settings) : settings_(std::move(settings)), hub_(settings_.state_dir) {}

  int run(int signal_fd) {
    if (auto loaded = hub_.load(); !loaded) {
      log::error("state directory {}: {}", settings_.state_dir, loaded.error().message);
      return 1;
    }
    net::HostPort bound;
    auto listening = net::tcp_listen(settings_.listen, &bound);
    if (!listening) {
      log::error("{}", listening.error().message);
      return 1;
    }
    listen_ = std::move(*listening);
    fcntl(listen_.get(), F_SETFL, fcntl(listen_.get(), F_GETFL) | O_NONBLOCK);
    if (!settings_.port_file.empty()) {
      if (auto w = write_port_file(settings_.port_file, bound.port); !w) {
        log::error("port file: {}", w.error().message);
        return 1;
      }
    }
    log::info("listening on {}:{}", settings_.listen.host, bound.port);

    while (true) {
      pollfd fds[2] = {{listen_.get(), POLLIN, 0}, {signal_fd, POLLIN, 0}};
      int n = poll(fds, 2, 1000);
      if (n < 0 && errno != EINTR) {
        log::error("poll: {}", std::strerror(errno));
        break;
      }
      if (n > 0 && fds[1].revents) {
        signalfd_siginfo info{};
        ssize_t got = read(signal_fd, &info, sizeof info);
        (void)got;
        log::info("{}: shutting down", strsignal(static_cast<int>(info.ssi_signo)));
        break;
      }
      if (n > 0 && fds[0].revents) accept_all();
      reap();
    }
    stop();
    return 0;
  }

 private:
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    UniqueFd socket;  // a dup of the connection's socket, only for shutdown() at stop
  };

  void accept_all() {
    while (true) {
      UniqueFd sock(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!sock) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
          log::error("accept: {}", std::strerror(errno));  // e.g. EMFILE: retried next round
        }
        return;
      }
      std::string peer = peer_name(sock.get());
      reap();
      if (workers_.size() >= kMaxConnections) {
        log::error("refusing connection from {}: {} connections already open", peer, kMaxConnections);
        continue;
      }
      set_int_opt(sock.get(), IPPROTO_TCP, TCP_NODELAY, 1);
      set_int_opt(sock.get(), SOL_SOCKET, SO_KEEPALIVE, 1);
      set_int_opt(sock.get(), IPPROTO_TCP, TCP_KEEPIDLE, 30);  // a vanished host frees its
      set_int_opt(sock.get(), IPPROTO_TCP, TCP_KEEPINTVL, 10); // volume within ~a minute
      set_int_opt(sock.get(), IPPROTO_TCP, TCP_KEEPCNT, 3);
      Worker w;
      w.socket.reset(fcntl(sock.get(), F_DUPFD_CLOEXEC, 0));
      if (!w.socket) {
        log::error("refusing connection from {}: {}", peer, std::strerror(errno));
        continue;
      }
      w.done = std::make_shared<std::atomic<bool>>(false);
      log::debug("connection from {}", peer);
      w.thread = std::thread([this, s = std::move(sock), peer, done = w.done]() mutable {
        serve(std::move(s), peer);
        *done = true;
      });
      workers_.push_back(std::move(w));
    }
  }

  void serve(UniqueFd sock, const std::string& peer) {
    auto conn = net::Conn::open(std::move(sock));
    if (!conn) {
      log::error("connection from {}: {}", peer, conn.error().message);
      return;
    }
    net::Conn& c = **conn;
    auto hello = recv_hello(c, kHelloTimeoutMs);
    if (!hello) {
      if (stopping_) return;
      log::error("connection from {} rejected: {}", peer, hello.error().message);
      send_error(c, hello.error().code, hello.error().message);
      return;
    }
    if (hello->role == wire::Role::kNode) {
      std::vector<uint8_t> payload;
      wire::encode(*hello, payload);
      run_node_session(c, *hello, wire::kHeaderSize + payload.size(), hub_, peer, stopping_);
    } else {
      run_replica_session(c, *hello, hub_, peer, stopping_);
    }
  }

  void reap() {
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (*it->done) {
        it->thread.join();
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void stop() {
    stopping_ = true;
    listen_.reset();
    for (auto& w : workers_) shutdown(w.socket.get(), SHUT_RDWR);
    hub_.wake_all();
    for (auto& w : workers_) w.thread.join();
    workers_.clear();
    log::info("stopped");
  }

  Settings settings_;
  Hub hub_;
  UniqueFd listen_;
  std::atomic<bool> stopping_{false};
  std::list<Worker> workers_;  // touched by the main thread only
};

}  // namespace

int run(const Options& options) {
  log::set_component("backupd");
  auto settings = load_settings(options);
  if (!settings) {
    log::error("{}", settings.error().message);
    return kExitConfig;
  }
  // Before any thread exists, so every thread inherits the mask and only the signalfd sees them.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  UniqueFd signal_fd(signalfd(-1, &mask, SFD_CLOEXEC));
  if (!signal_fd) {
    log::error("signalfd: {}", std::strerror(errno));
    return 1;
  }
  Server server(std::move(*settings));
  return server.run(signal_fd.get());
}

}  // namespace bkp::server
