// The replicator's outer loop: connect, run a session, and when it ends, reconnect.
//
// A replicator is useful only while connected, so it never gives up: failures are retried with
// backoff (common/backoff.h: every 100 ms for the first 5 s of an outage, so a restarted backupd
// has its replicas back within 100 ms of listening, then doubling to 1 s; a fresh outage once a
// session made progress), and
// each distinct failure is logged once at warn level so a server that is down for an hour costs
// one line, not thousands. The instance is a random number drawn at start, only to tell
// processes apart in backupd's log: where each volume resumes is the trees' own business (their
// Position, kept on disk, so a restart resumes too). Signals are
// taken by a dedicated thread with sigtimedwait(), which shuts the current socket down so a
// session blocked in recv ends at once, and wakes the backoff sleep; while it waits, that thread
// also rewrites ROOT/.stats.json when due (the Monitor's figures, read without the session).
#include "replicator/replicator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "common/backoff.h"
#include "common/net/conn.h"
#include "common/net/http_server.h"
#include "common/net/tls.h"
#include "common/net/socket.h"
#include "common/progress.h"
#include "common/stats_file.h"
#include "common/stream/sender.h"
#include "replicator/monitor.h"
#include "replicator/restore_service.h"
#include "replicator/session.h"
#include "replicator/usage.h"

namespace bkp::replicator {
namespace {

constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
constexpr auto kFastRetries = std::chrono::milliseconds(5000);
constexpr int kConnectTimeoutMs = 5000;

class Replicator {
 public:
  Replicator(const Options& options, net::Trust trust, progress::Display& display,
             Monitor& monitor, std::optional<net::HostPort> restore_service,
             std::timed_mutex& still)
      : options_(options), trust_(std::move(trust)), monitor_(monitor),
        restore_service_(std::move(restore_service)), still_(still),
        trees_(options.root, &display, monitor), usage_(options.root, options.capacity),
        snapshots_(options.root),
        instance_(stream::new_instance()) {}

  void loop(const net::HostPort& server) {
    Backoff backoff(kMinBackoff, kMaxBackoff, kFastRetries);
    log::info("replica {} (instance {:016x}) serving {} into {}", options_.name, instance_,
              options_.server, options_.root);
    while (!stopping()) {
      auto end = connect_and_serve(server);
      if (stopping()) break;
      if (end.acked > 0) {
        backoff.reset();
        last_failure_.clear();
      }
      if (!end.welcomed) monitor_.connect_failed();
      report(end.error.message, end.welcomed);
      sleep_for(backoff.next());
    }
    log::info("stopped");
  }

  void stop() {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (current_) shutdown(current_.get(), SHUT_RDWR);
    cv_.notify_all();
  }

 private:
  SessionEnd connect_and_serve(const net::HostPort& server) {
    SessionEnd end;
    auto sock = net::tcp_connect(server, kConnectTimeoutMs);
    if (!sock) {
      end.error = sock.error();
      return end;
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) return end;
      current_.reset(fcntl(sock->get(), F_DUPFD_CLOEXEC, 0));  // for shutdown() by stop()
    }
    // From here to the session's end the trees move: a live archive waits (live_archive.h).
    std::lock_guard moving(still_);
    auto conn = net::Conn::open(std::move(*sock));
    if (!conn) {
      end.error = conn.error();
    } else if (auto ok = authenticate(**conn); !ok) {
      end.error = ok.error();
    } else {
      end = run_session(**conn, options_.name, instance_,
                        Holdings{trees_, usage_, snapshots_, monitor_, restore_service_});
      if (end.welcomed) log::info("session with {} ended after {} batches", options_.server, end.acked);
    }
    std::lock_guard lock(mu_);
    current_.reset();
    return end;
  }

  // The TLS handshake and the check of backupd's identity (nothing to do with TLS off).
  Result<void> authenticate(net::Conn& conn) {
    if (!trust_.tls) return {};
    BKP_TRY_VOID(conn.secure(*trust_.tls, net::TlsSide::kClient, kConnectTimeoutMs));
    if (trust_.allows(conn.peer_id())) return {};
    return fail(EACCES, fmt::format("the server presents identity {}, not the backupd given with "
                                    "--server-id: refusing to talk to it", conn.peer_id()));
  }

  // Logs a failure at warn the first time it is seen in a row, at debug afterwards.
  void report(const std::string& message, bool welcomed) {
    if (message != last_failure_ || welcomed) {
      log::warn("{}: {}; retrying", options_.server, message);
      last_failure_ = message;
    } else {
      log::debug("{}: {}; retrying", options_.server, message);
    }
  }

  void sleep_for(std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, d, [&] { return stopping_; });
  }

  bool stopping() {
    std::lock_guard lock(mu_);
    return stopping_;
  }

  const Options& options_;
  const net::Trust trust_;
  Monitor& monitor_;
  const std::optional<net::HostPort> restore_service_;  // told to backupd in Usage
  std::timed_mutex& still_;  // held while a session may change the trees
  Trees trees_;
  UsageMeter usage_;
  SnapshotStore snapshots_;
  const uint64_t instance_;
  std::string last_failure_;
  std::mutex mu_;
  // Guarded by mu_.
  std::condition_variable cv_;
  bool stopping_ = false;
  UniqueFd current_;  // dup of the connected socket
};

}  // namespace

std::string identity_path(const std::string& root) { return root + "/.identity.pem"; }

std::string stats_path(const std::string& root) { return root + "/.stats.json"; }

int show_id(const std::string& root) {
  log::set_component("replicator");
  return net::print_identity(identity_path(root), "replicator");
}

int run(const Options& options) {
  log::set_component("replicator");
  net::Trust trust{nullptr, options.server_ids};
  if (options.tls) {
    auto tls = net::TlsConfig::load(identity_path(options.root), "replicator");
    if (!tls) {
      log::error("{}", tls.error().message);
      return 1;
    }
    trust.tls = std::move(*tls);
    log::info("identity {} ({})", trust.tls->id(), identity_path(options.root));
  } else {
    log::warn("TLS is off (--no-tls): any peer can pose as backupd; use this only on a trusted "
              "loopback");
  }
  auto server = net::parse_host_port(options.server);
  if (!server) {
    log::error("--server: {}", server.error().message);
    return kExitUsage;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Monitor monitor(options.root);
  StatsFile stats_file(stats_path(options.root), "replicator");
  auto save_stats = [&] {
    auto [since_start, now] = monitor.stats();
    if (auto w = stats_file.write(since_start, now); !w) {
      log::warn("{}: {}", stats_file.path(), w.error().message);
    }
  };
  save_stats();
  std::unique_ptr<net::HttpServer> metrics_server;  // uses monitor
  if (options.metrics_listen) {
    metrics_server = net::serve_metrics(*options.metrics_listen, options.metrics_port_file,
                                        [&monitor] { return monitor.metrics_text(); });
  }

  std::timed_mutex still;  // the trees hold still while nobody has it (live_archive.h)
  std::unique_ptr<RestoreService> restores;  // reads only files: independent of the session
  if (options.listen) {
    auto started = RestoreService::start(RestoreServiceConfig{
        .listen = *options.listen,
        .port_file = options.listen_port_file,
        .operator_ids = options.operator_ids,
        .root = options.root,
        .name = options.name,
        .tls = trust.tls,
        .still = &still});
    if (!started) {
      log::error("--listen: {}", started.error().message);
      return 1;
    }
    restores = std::move(*started);
  }

  progress::Display display(progress::display_options(options.progress_every));
  display.set_idle_status(
      [&] { return fmt::format("replica {} of {}, idle", options.name, options.server); });
  display.start();
  std::optional<net::HostPort> restore_service;
  if (restores) restore_service = net::HostPort{options.listen->host, restores->port()};
  Replicator replicator(options, std::move(trust), display, monitor, restore_service, still);
  std::thread signals([&] {
    const auto every = std::chrono::duration_cast<std::chrono::nanoseconds>(StatsFile::every());
    const timespec wait{static_cast<time_t>(every.count() / 1'000'000'000),
                        static_cast<long>(every.count() % 1'000'000'000)};
    int sig;
    while ((sig = sigtimedwait(&mask, nullptr, &wait)) < 0) {
      if (stats_file.due()) save_stats();
    }
    log::info("{}: shutting down", strsignal(sig));
    replicator.stop();
  });
  replicator.loop(*server);
  signals.join();
  if (restores) restores->stop();
  display.stop();
  save_stats();
  return 0;
}

}  // namespace bkp::replicator
