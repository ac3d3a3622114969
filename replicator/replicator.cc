// The replicator's outer loops: for each backupd it follows (--server, given once per server),
// connect, run a session, and when it ends, reconnect.
//
// Several backupd on one catalog each serve some of the volumes, and a volume moves to another
// server when its own dies, so a replicator follows every server at once: one loop per server,
// each on its own thread with its own backoff, failure log and connect timeout, all writing the
// same trees (trees.h decides which session writes a tree that moved). A server that is down
// costs its own loop's retries and nothing else.
//
// A replicator is useful only while connected, so it never gives up: failures are retried with
// backoff (common/backoff.h: every 100 ms for the first 5 s of an outage, so a restarted backupd
// has its replicas back within 100 ms of listening, then doubling to 1 s; a fresh outage once a
// session made progress), and each distinct failure is logged once at warn level, naming the
// server, so a server that is down for an hour costs one line, not thousands. A session that ended
// because ROOT's disk is full is not retried on that schedule: the loop waits until space is freed
// (common/full_disk.h), or kFullDiskRecheck, so a full disk costs no resent batches. The instance
// is a random number drawn at start, only to tell processes apart in backupd's log: where each
// volume resumes is the trees' own business (their Position, kept on disk, so a restart resumes
// too). Signals are taken by a dedicated thread with sigtimedwait(), which shuts every current
// socket down so each session blocked in recv ends at once, and wakes the backoff sleeps; while it
// waits, that thread also rewrites ROOT/.stats.json when due (the Monitor's figures, read without
// the sessions).
#include "replicator/replicator.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include <fmt/ranges.h>

#include "common/log.h"
#include "common/backoff.h"
#include "common/files.h"
#include "common/full_disk.h"
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
#include "replicator/snapshot_store.h"
#include "replicator/trees.h"
#include "replicator/usage.h"

namespace bkp::replicator {
namespace {

constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
constexpr auto kFastRetries = std::chrono::milliseconds(5000);
constexpr int kConnectTimeoutMs = 5000;
constexpr auto kFullDiskRecheck = std::chrono::seconds(60);

class Replicator {
 public:
  // servers: each --server, parsed, in the order given (options.servers).
  Replicator(const Options& options, const std::vector<net::HostPort>& servers, net::Trust trust,
             progress::Display& display, Monitor& monitor,
             std::optional<net::HostPort> restore_service, std::shared_timed_mutex& still)
      : options_(options), trust_(std::move(trust)), monitor_(monitor),
        restore_service_(std::move(restore_service)), still_(still),
        trees_(options.root, &display, monitor), usage_(options.root, options.capacity),
        snapshots_(options.root),
        instance_(stream::new_instance()) {
    for (size_t i = 0; i < servers.size(); ++i) {
      links_.push_back(std::make_unique<Link>(options.servers[i], servers[i]));
    }
  }

  // Runs every server's loop, each on its own thread, until stop().
  void run() {
    log::info("replica {} (instance {:016x}) following {} into {}", options_.name, instance_,
              fmt::join(options_.servers, ", "), options_.root);
    std::vector<std::thread> loops;
    for (auto& link : links_) loops.emplace_back([this, &l = *link] { loop(l); });
    for (auto& t : loops) t.join();
    log::info("stopped");
  }

  void stop() {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& link : links_) {
      if (link->current) shutdown(link->current.get(), SHUT_RDWR);
    }
    cv_.notify_all();
  }

 private:
  // One backupd followed.
  struct Link {
    Link(std::string n, net::HostPort a) : name(std::move(n)), address(std::move(a)) {}
    const std::string name;  // "ADDR:PORT" as given: how the log and the Monitor name it
    const net::HostPort address;
    UniqueFd current;  // guarded by mu_: dup of the connected socket, for shutdown() by stop()
  };

  void loop(Link& link) {
    Backoff backoff(kMinBackoff, kMaxBackoff, kFastRetries);
    std::string last_failure;
    while (!stopping()) {
      auto end = connect_and_serve(link);
      if (stopping()) break;
      if (end.acked > 0) {
        backoff.reset();
        last_failure.clear();
      }
      if (!end.welcomed) monitor_.connect_failed(link.name);
      report(link, end.error.message, last_failure);
      if (is_disk_full(end.error.code)) {
        wait_for_space(link);
      } else {
        sleep_for(backoff.next());
      }
    }
  }

  // After a session failed on a full disk under ROOT: until space is freed there, at most
  // kFullDiskRecheck, or stop().
  void wait_for_space(const Link& link) {
    FullDisk disk(options_.root);
    log::warn("{}: the disk of {} is full ({} free): resuming once space is freed", link.name,
              options_.root, progress::format_bytes(static_cast<double>(disk.free_at_failure())));
    std::unique_lock lock(mu_);
    if (disk.wait(lock, cv_, [&] { return stopping_; }, kFullDiskRecheck)) {
      log::info("{}: space freed on {}: resuming", link.name, options_.root);
    }
  }

  SessionEnd connect_and_serve(Link& link) {
    SessionEnd end;
    auto sock = net::tcp_connect(link.address, kConnectTimeoutMs);
    if (!sock) {
      end.error = sock.error();
      return end;
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) return end;
      link.current.reset(fcntl(sock->get(), F_DUPFD_CLOEXEC, 0));
    }
    // From here to the session's end the trees move: a live archive waits (live_archive.h).
    std::shared_lock moving(still_);
    auto conn = net::Conn::open(std::move(*sock));
    if (!conn) {
      end.error = conn.error();
    } else if (auto ok = authenticate(**conn); !ok) {
      end.error = ok.error();
    } else {
      end = run_session(**conn, link.name, options_.name, instance_,
                        Holdings{trees_, usage_, snapshots_, monitor_, restore_service_});
      if (end.welcomed) log::info("session with {} ended after {} batches", link.name, end.acked);
    }
    std::lock_guard lock(mu_);
    link.current.reset();
    return end;
  }

  // The TLS handshake and the check of backupd's identity (nothing to do with TLS off).
  Result<void> authenticate(net::Conn& conn) {
    if (!trust_.tls) return {};
    BKP_TRY_VOID(conn.secure(*trust_.tls, net::TlsSide::kClient, kConnectTimeoutMs));
    if (trust_.allows(conn.peer_id())) return {};
    return fail(EACCES, fmt::format("the server presents identity {}, not a backupd given with "
                                    "--server-id: refusing to talk to it", conn.peer_id()));
  }

  // Logs a failure at warn the first time it is seen in a row (since the last session that
  // made progress), at debug afterwards.
  static void report(const Link& link, const std::string& message, std::string& last_failure) {
    if (message != last_failure) {
      log::warn("{}: {}; retrying", link.name, message);
      last_failure = message;
    } else {
      log::debug("{}: {}; retrying", link.name, message);
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
  std::shared_timed_mutex& still_;  // held shared by each session, while it may change trees
  // Shared by every server's sessions (each is thread-safe: see its header).
  Trees trees_;
  UsageMeter usage_;
  SnapshotStore snapshots_;
  const uint64_t instance_;
  std::vector<std::unique_ptr<Link>> links_;  // fixed once constructed
  std::mutex mu_;
  // Guarded by mu_ (with each link's current).
  std::condition_variable cv_;
  bool stopping_ = false;
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
  auto made = make_private_dir(options.root);
  if (!made) {
    log::error("--root {}: {}", options.root, made.error().message);
    return 1;
  }
  if (*made) log::warn("root {} was open to every user: closed to others (o-rwx)", options.root);
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
  std::vector<net::HostPort> servers;
  for (const std::string& server : options.servers) {
    auto parsed = net::parse_host_port(server);
    if (!parsed) {
      log::error("--server {}: {}", server, parsed.error().message);
      return kExitUsage;
    }
    servers.push_back(std::move(*parsed));
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Monitor monitor(options.root, options.servers);
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

  std::shared_timed_mutex still;  // the trees hold still while nobody has it (live_archive.h)
  std::unique_ptr<RestoreService> restores;  // reads only files: independent of the sessions
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
      [&] {
        return fmt::format("replica {} of {}, idle", options.name,
                           fmt::join(options.servers, ", "));
      });
  display.start();
  std::optional<net::HostPort> restore_service;
  if (restores) restore_service = net::HostPort{options.listen->host, restores->port()};
  Replicator replicator(options, servers, std::move(trust), display, monitor, restore_service,
                        still);
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
  replicator.run();
  signals.join();
  if (restores) restores->stop();
  display.stop();
  save_stats();
  return 0;
}

}  // namespace bkp::replicator
