// backupd's process: settings, state directory, catalog, listening socket, registered links,
// the scheduler, one thread per accepted connection, and a clean stop on SIGTERM/SIGINT.
//
// Startup reads as a story: open the catalog (STATE/catalog.db, or PostgreSQL) and the server id
// (STATE/server-id, a random u64 created once, sent in every Attach), load the volumes, recover
// from an unclean stop (open runs, partial snapshots), listen on the TCP port and on the local
// control socket, then start one link per stored registration and the scheduler. Nodes never
// connect here: backupd connects to them (server/link.cc), so an incoming Hello{role=node} is
// refused with EPERM and a hint.
//
// Who may do what is decided right after the Hello, before anything of a session runs. On the
// TCP port (TLS on) a replica or a control client is served only if its identity is authorised
// (server/peer_gate.h): otherwise it gets an EACCES Error naming its identity and the command
// that would authorise it, and a refused replicator is listed by `bkptool status` as waiting.
// The control socket (server/control_socket.h) needs no TLS, since its file mode is the
// credential, and serves the control role only. With TLS off the TCP port trusts everyone, as
// before identities existed: that mode is for a trusted loopback.
//
// The main thread polls both listening sockets and a signalfd (the signals are blocked in every
// thread, so they only arrive there). Each accepted connection gets a thread that reads the
// Hello (10 s deadline) and runs the replica or control session; a bad first frame costs one
// log line naming the peer, a kError frame and the close of that connection only. The number of
// connections (of both sockets together) is capped so a flood cannot exhaust threads or
// descriptors. To stop, the main
// thread cancels the scheduler's runs, stops every link, shuts every connection's socket down
// (which ends any blocking recv or send in its thread), wakes the idle replica sessions and
// joins every thread: nothing is left blocked.
#include "server/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <list>
#include <thread>

#include "common/files.h"
#include "common/log.h"
#include "common/process.h"
#include "common/net/messenger.h"
#include "common/net/socket.h"
#include "common/net/tls.h"
#include "common/path.h"
#include "server/catalog.h"
#include "common/progress.h"
#include "common/stats_file.h"
#include "common/systemd_notify.h"
#include "server/control_session.h"
#include "server/control_socket.h"
#include "server/hub.h"
#include "server/peer.h"
#include "server/peer_gate.h"
#include "server/leases.h"
#include "server/registry.h"
#include "server/rejections.h"
#include "server/replica_session.h"
#include "server/s3_store.h"
#include "server/scheduler.h"
#include "server/verify_schedule.h"
#include "server/daemon_stats.h"
#include "server/web.h"

namespace bkp::server {
namespace {

constexpr size_t kMaxConnections = 256;
// Connections that have not said Hello yet: at most this many per source address, the oldest
// evicted by a newer one, and each given this long. Real clients say Hello at once, so a flood
// of idle connections from one address costs only its own; replicas and bkptool get in.
constexpr size_t kPreHelloPerAddress = 8;
constexpr int kPreHelloTimeoutMs = 3000;
constexpr const char* kNodesDoNotConnect =
    "nodes do not connect to backupd; register the volume with bkptool register";
constexpr const char* kControlSocketOnly =
    "the control socket serves bkptool only (role control); replicators connect to backupd's "
    "TCP port";
constexpr const char* kLocalPeer = "local socket";

// Where a connection came in.
enum class Transport { kTcp, kLocal };

// Test seam: BACKUPD_TEST_ARCHIVE_DELAY_MS=N pauses N ms before each entry a snapshot archives,
// so a test can keep changing a volume while its archive is written (docs/ARCHITECTURE.md).
std::chrono::milliseconds archive_delay() {
  const char* text = std::getenv("BACKUPD_TEST_ARCHIVE_DELAY_MS");
  unsigned ms = 0;
  if (text == nullptr ||
      std::from_chars(text, text + std::strlen(text), ms).ec != std::errc() || ms == 0) {
    return std::chrono::milliseconds(0);
  }
  log::warn("BACKUPD_TEST_ARCHIVE_DELAY_MS={}: every snapshot waits {} ms before each entry "
            "(a test seam, never for production)",
            ms, ms);
  return std::chrono::milliseconds(ms);
}

// STATE/server-id: 16 hex digits, created once. It tells a node which backupd is attaching.
Result<uint64_t> load_server_id(const std::string& state_dir) {
  std::string path = state_dir + "/server-id";
  std::ifstream in(path);
  if (in) {
    std::string text;
    in >> text;
    uint64_t id = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id, 16);
    if (ec != std::errc() || ptr != text.data() + text.size() || id == 0) {
      return fail(EINVAL, fmt::format("{}: not a server id (16 hex digits): '{}'", path, text));
    }
    return id;
  }
  if (errno != ENOENT) return fail_errno("read " + path);
  uint64_t id = 0;
  while (id == 0) {
    if (getrandom(&id, sizeof id, 0) != static_cast<ssize_t>(sizeof id)) return fail_errno("getrandom");
  }
  BKP_TRY_VOID(write_file_atomic(path, fmt::format("{:016x}\n", id), Durability::kSync));
  log::info("created server id {:016x} in {}", id, path);
  return id;
}

class Server {
 public:
  explicit Server(Settings settings)
      : settings_(std::move(settings)),
        display_(progress::display_options(settings_.progress_every)),
        hub_(settings_.state_dir, &display_, static_cast<size_t>(settings_.max_queued_ops),
             static_cast<size_t>(settings_.forward_cache_mib) << 20) {}

  int run(int signal_fd) {
    if (!open_state()) return 1;
    net::HostPort bound;
    auto listening = net::tcp_listen(settings_.listen, &bound);
    if (!listening) {
      log::error("{}", listening.error().message);
      return 1;
    }
    listen_ = std::move(*listening);
    fcntl(listen_.get(), F_SETFL, fcntl(listen_.get(), F_GETFL) | O_NONBLOCK);
    auto control = ControlSocket::open(settings_.control_socket, settings_.control_gid);
    if (!control) {
      log::error("{}", control.error().message);
      return 1;
    }
    control_ = std::move(*control);
    scheduler_->start();
    if (auto started = registry_->start(); !started) {
      log::error("starting registered volumes: {}", started.error().message);
      stop();
      return 1;
    }
    placer_->start();
    if (settings_.verify_every_seconds > 0) {
      const VerifyOptions options{
          .snapshots = true, .replicas = true, .read_data = settings_.verify_read_data};
      verifier_ = std::make_unique<VerifyScheduler>(
          *registry_, std::chrono::seconds(settings_.verify_every_seconds), options);
      verifier_->start();
    }
    start_web_if_asked();  // before the port file, which tells a script backupd is ready
    daemon_stats_ = std::make_unique<DaemonStats>(*registry_, started_ms_);
    save_stats();  // the file exists from the start, then is refreshed (StatsFile::due)
    if (!settings_.port_file.empty()) {
      if (auto w = write_file_atomic(settings_.port_file, fmt::format("{}\n", bound.port),
                                    Durability::kNoSync);
          !w) {
        log::error("port file: {}", w.error().message);
        stop();
        return 1;
      }
    }
    log::info("listening on {}:{}{}, control socket {}{}", settings_.listen.host, bound.port,
              tls_ ? "" : " (TLS off)", control_->path(),
              settings_.control_group.empty() ? "" : " (group " + settings_.control_group + ")");
    std::string where = fmt::format("listening on {}:{}", settings_.listen.host, bound.port);
    notifier_.ready(fmt::format("{}, {} volumes", where, hub_.all_volumes().size()));
    display_.set_idle_status([this, where] {
      return fmt::format("{}, {} volumes, idle", where, hub_.all_volumes().size());
    });
    display_.start();

    while (true) {
      notifier_.watchdog();
      if (stats_file_.due()) save_stats();
      pollfd fds[3] = {{listen_.get(), POLLIN, 0}, {signal_fd, POLLIN, 0},
                       {control_->fd(), POLLIN, 0}};
      int n = poll(fds, 3, 1000);
      if (n < 0 && errno != EINTR) {
        log::error("poll: {}", std::strerror(errno));
        break;
      }
      if (n > 0 && fds[1].revents) {
        log::info("{}: shutting down", strsignal(read_signal(signal_fd)));
        notifier_.stopping();
        break;
      }
      if (n > 0 && fds[0].revents) accept_all(listen_.get(), Transport::kTcp);
      if (n > 0 && fds[2].revents) accept_all(control_->fd(), Transport::kLocal);
      reap();
    }
    stop();
    return 0;
  }

 private:
  // Catalog, server id, volumes, recovery. False (logged) if backupd cannot run on this state.
  bool open_state() {
    const std::string& dir = settings_.state_dir;
    auto made = make_private_dir(dir);
    if (!made) {
      log::error("state directory {}: {}", dir, made.error().message);
      return false;
    }
    if (*made) log::warn("state directory {} was open to every user: closed to others (o-rwx)", dir);
    auto catalog = Catalog::open(catalog_location(settings_), settings_.server_name);
    if (!catalog) {
      log::error("{}", catalog.error().message);
      return false;
    }
    catalog_ = std::move(*catalog);
    gate_ = std::make_unique<PeerGate>(*catalog_);
    if (settings_.snapshot_store) use_snapshot_store();
    if (settings_.tls) {
      auto tls = net::TlsConfig::load(identity_path(dir), "backupd");
      if (!tls) {
        log::error("{}", tls.error().message);
        return false;
      }
      tls_ = std::move(*tls);
      log::info("identity {} ({})", tls_->id(), identity_path(dir));
    } else {
      log::warn("TLS is off (tls = false): peers are neither authenticated nor encrypted; "
                "use this only on a trusted loopback");
    }
    auto id = load_server_id(dir);
    if (!id) {
      log::error("{}", id.error().message);
      return false;
    }
    drops_ = std::make_unique<DropQueue>(*catalog_);
    if (auto loaded = drops_->load(); !loaded) {
      log::error("{}: {}", dir, loaded.error().message);
      return false;
    }
    RunSettings runs{.gzip_level = settings_.snapshot_gzip_level,
                     .gzip_threads = static_cast<unsigned>(settings_.snapshot_threads),
                     .keep = static_cast<size_t>(settings_.keep_snapshots),
                     .entry_delay = archive_delay(),
                     .replication_note = [this](const std::string& key) {
                       return registry_ ? registry_->replication_note(key) : std::nullopt;
                     }};
    if (!settings_.catalog.empty()) {
      runs.serving = [this](const std::string& key) { return leases_ && leases_->serves(key); };
    }
    scheduler_ = std::make_unique<Scheduler>(*catalog_, runs);
    placer_ = std::make_unique<Placer>(*catalog_, hub_, *drops_, settings_.copies,
                                       settings_.replica_grace_seconds);
    if (auto loaded = placer_->load(); !loaded) {
      log::error("catalog: placements: {}", loaded.error().message);
      return false;
    }
    registry_ = std::make_unique<Registry>(hub_, *catalog_, *scheduler_, *placer_, *drops_,
                                           Dialer{*id, tls_});
    if (!settings_.catalog.empty()) {
      leases_ = std::make_unique<LeaseKeeper>(
          *catalog_,
          LeaseSettings{settings_.server_name, std::chrono::seconds(settings_.lease_seconds)},
          [this](const std::string& host, const std::string& path) { registry_->serve(host, path); },
          [this](const std::string& host, const std::string& path) {
            registry_->unserve(host, path);
          });
      registry_->use_leases(leases_.get());
      log::info("serving volumes leased to {} for {} s at a time (shared catalog)",
                settings_.server_name, settings_.lease_seconds);
    }
    if (auto recovered = registry_->recover(); !recovered) {
      log::error("recovery: {}", recovered.error().message);
      return false;
    }
    return true;
  }

  // Every volume's archives go to the configured bucket. A store that cannot be reached now
  // is no reason not to start: the mirrors keep streaming, and each run that cannot write its
  // archive fails with the store's reason until it can.
  void use_snapshot_store() {
    const S3Location& location = *settings_.snapshot_store;
    auto credentials = std::make_shared<const S3Credentials>(*settings_.snapshot_store_credentials);
    hub_.set_archive_stores([credentials, location](const std::string& host, const std::string& path) {
      return std::make_unique<S3ArchiveStore>(credentials, location, host + "/" + escape_path(path));
    });
    const std::string where = fmt::format("s3://{}/{} at {}", location.bucket, location.prefix,
                                          credentials->endpoint);
    if (auto ready = prepare_bucket(*credentials, location); !ready) {
      log::error("snapshot store {}: {} (runs fail until it answers)", where, ready.error().message);
    } else {
      log::info("snapshots go to {}", where);
    }
  }

  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    std::shared_ptr<std::atomic<bool>> welcomed;  // its Hello arrived
    UniqueFd socket;  // a dup of the connection's socket, only for shutdown() (stop, eviction)
    std::string address;  // the peer's address without its port
    bool evicted = false;  // shut down for a newer connection; its thread is finishing
  };

  // Makes room for one more connection from address that has not said Hello yet: shuts down
  // the oldest such connection when that address already has kPreHelloPerAddress.
  void evict_unwelcomed(const std::string& address) {
    std::vector<Worker*> waiting;
    for (auto& w : workers_) {
      if (w.address == address && !*w.welcomed && !*w.done && !w.evicted) waiting.push_back(&w);
    }
    if (waiting.size() < kPreHelloPerAddress) return;
    log::warn("connection from {}: {} connections from there have not said hello; dropping the "
              "oldest", address, waiting.size());
    ::shutdown(waiting.front()->socket.get(), SHUT_RDWR);
    waiting.front()->evicted = true;
  }

  // Connections that hold a slot: evicted ones are on their way out.
  size_t open_connections() const {
    return static_cast<size_t>(std::count_if(workers_.begin(), workers_.end(),
                                             [](const Worker& w) { return !w.evicted; }));
  }

  void accept_all(int listening, Transport transport) {
    while (true) {
      UniqueFd sock(accept4(listening, nullptr, nullptr, SOCK_CLOEXEC));
      if (!sock) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
          log::error("accept: {}", std::strerror(errno));  // e.g. EMFILE: retried next round
        }
        return;
      }
      std::string peer = transport == Transport::kLocal ? kLocalPeer : peer_name(sock.get());
      reap();
      std::string address = peer_address(peer);  // all local peers share one
      evict_unwelcomed(address);
      if (open_connections() >= kMaxConnections) {
        rejected(peer, fmt::format("{} connections already open", kMaxConnections));
        continue;
      }
      // A vanished host frees its volume within about a minute (net::tune_socket).
      if (transport == Transport::kTcp) net::tune_socket(sock.get());
      Worker w;
      w.socket.reset(fcntl(sock.get(), F_DUPFD_CLOEXEC, 0));
      if (!w.socket) {
        log::error("refusing connection from {}: {}", peer, std::strerror(errno));
        continue;
      }
      w.done = std::make_shared<std::atomic<bool>>(false);
      w.welcomed = std::make_shared<std::atomic<bool>>(false);
      w.address = std::move(address);
      log::debug("connection from {}", peer);
      w.thread = std::thread([this, s = std::move(sock), peer, transport, done = w.done,
                              welcomed = w.welcomed]() mutable {
        serve(std::move(s), peer, transport, *welcomed);
        *done = true;
      });
      workers_.push_back(std::move(w));
    }
  }

  // One error line per source address every few seconds at most (server/rejections.h).
  void rejected(const std::string& peer, const std::string& reason) {
    if (auto text = rejections_.line(peer, reason)) log::error("{}", *text);
  }

  void serve(UniqueFd sock, const std::string& peer, Transport transport,
             std::atomic<bool>& welcomed) {
    auto conn = net::Conn::open(std::move(sock));
    if (!conn) {
      log::error("connection from {}: {}", peer, conn.error().message);
      return;
    }
    net::Conn& c = **conn;
    bool secured = transport == Transport::kTcp && tls_;
    // One deadline for the handshake and the Hello together.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kPreHelloTimeoutMs);
    if (secured) {
      if (auto ok = c.secure(*tls_, net::TlsSide::kServer, kPreHelloTimeoutMs); !ok) {
        welcomed = true;
        if (!stopping_) rejected(peer, ok.error().message);
        return;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto hello = recv_hello(c, static_cast<int>(std::max<int64_t>(1, left.count())),
                            kPreHelloTimeoutMs);
    welcomed = true;
    if (!hello) {
      if (stopping_) return;
      rejected(peer, hello.error().message);
      net::send_error(c, hello.error().code, hello.error().message);
      return;
    }
    if (transport == Transport::kLocal && hello->role != wire::Role::kControl) {
      log::warn("control socket: refused a hello of role {} ({})", static_cast<int>(hello->role),
                display_text(hello->name, wire::kMaxPeerName));
      net::send_error(c, EPERM, kControlSocketOnly);
      return;
    }
    // Lives until the session ends: removing the identity meanwhile shuts the socket down.
    std::optional<PeerGate::Session> admitted;
    switch (hello->role) {
      case wire::Role::kNode:
        log::warn("connection from {} refused: node {}:{} tried to connect (nodes are registered "
                  "with bkptool register and backupd connects to them)", peer, hello->name,
                  hello->path);
        net::send_error(c, EPERM, kNodesDoNotConnect);
        break;
      case wire::Role::kReplica:
        if (secured && !(admitted = admit(c, PeerKind::kReplica, *hello, peer))) return;
        if (auto named = secured ? gate_->claim_name(c.peer_id(), hello->name) : Result<void>{};
            !named) {
          log::warn("connection from {} refused: {}", identified(peer, c), named.error().message);
          net::send_error(c, EACCES, named.error().message);
          return;
        }
        run_replica_session(c, *hello, hub_,
                            ReplicaDuties{*drops_, *catalog_,
                                          static_cast<size_t>(settings_.keep_snapshots)},
                            secured ? identified(peer, c) : peer,
                            stopping_);
        break;
      case wire::Role::kControl:
        if (secured && !(admitted = admit(c, PeerKind::kOperator, *hello, peer))) return;
        run_control_session(c, *hello, *registry_, *gate_,
                            secured ? identified(peer, c) : peer, stopping_);
        break;
    }
  }

  // "127.0.0.1:43210 (identity XXXX-...)": a peer in log lines once TLS told who it is.
  static std::string identified(const std::string& peer, const net::Conn& c) {
    return fmt::format("{} (identity {})", peer, c.peer_id());
  }

  // The session of an authorised identity, or nullopt after telling the peer (EACCES) and the
  // log why not; a refused replicator is remembered as waiting for authorisation.
  std::optional<PeerGate::Session> admit(net::Conn& c, PeerKind kind, const wire::Hello& hello,
                                         const std::string& peer) {
    const std::string& id = c.peer_id();
    auto session = gate_->admit(kind, id, c.fd());
    if (!session) {
      log::error("connection from {}: checking identity {}: {}", peer, id, session.error().message);
      net::send_error(c, EIO, "backupd could not check your identity: " + session.error().message);
      return std::nullopt;
    }
    if (*session) return std::move(*session);
    std::string why;
    if (kind == PeerKind::kReplica) {
      gate_->refused_replica(id, hello.name, peer, wall_ms());
      why = fmt::format("replicator identity {} ({}) is not authorised on this backupd; run: "
                        "bkptool replica add {}", id, display_text(hello.name, wire::kMaxPeerName), id);
    } else {
      why = fmt::format("operator identity {} is not authorised on this backupd; on the server "
                        "host run: bkptool operator add {}", id, id);
    }
    log::warn("connection from {} refused: {}", peer, why);
    net::send_error(c, EACCES, why);
    return std::nullopt;
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

  // The status page and metrics are for people and monitoring, not for backups: a port that
  // cannot be had is an error in the log, and backupd serves on without them.
  void start_web_if_asked() {
    if (!settings_.http_listen) return;
    net::HostPort bound;
    auto web = start_web(*settings_.http_listen, *registry_, started_ms_, settings_.state_dir,
                         &bound);
    if (!web) {
      log::error("status page and metrics: {}; backups go on without them",
                 web.error().message);
      return;
    }
    web_ = std::move(*web);
    log::info("status page on http://{}:{}/, metrics on /metrics", bound.host, bound.port);
    if (!settings_.http_port_file.empty()) {
      if (auto w = write_file_atomic(settings_.http_port_file, fmt::format("{}\n", bound.port),
                                    Durability::kNoSync);
          !w) {
        log::error("HTTP port file: {}", w.error().message);
      }
    }
  }

  void save_stats() {
    if (!daemon_stats_) return;
    auto [since_start, now] = daemon_stats_->collect();
    if (auto w = stats_file_.write(since_start, now); !w) {
      log::warn("{}: {}", stats_file_.path(), w.error().message);
    }
  }

  void stop() {
    stopping_ = true;
    save_stats();
    web_.reset();
    listen_.reset();
    control_.reset();  // removes the socket file
    if (leases_) leases_->stop();  // no volume gained or lost while stopping
    if (scheduler_) scheduler_->stop();
    if (placer_) placer_->stop();
    if (verifier_) verifier_->stop();
    if (registry_) registry_->stop();
    for (auto& w : workers_) shutdown(w.socket.get(), SHUT_RDWR);
    hub_.wake_all();
    for (auto& w : workers_) w.thread.join();
    workers_.clear();
    display_.stop();
    log::info("stopped");
  }

  Settings settings_;
  std::shared_ptr<net::TlsConfig> tls_;  // null when TLS is off
  progress::Display display_;  // shows hub_'s meters, so it outlives hub_
  Hub hub_;
  SystemdNotifier notifier_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<PeerGate> gate_;        // uses catalog_
  Rejections rejections_;
  std::unique_ptr<Scheduler> scheduler_;  // uses catalog_
  std::unique_ptr<DropQueue> drops_;      // uses catalog_
  std::unique_ptr<Placer> placer_;        // uses catalog_, hub_, drops_
  std::unique_ptr<LeaseKeeper> leases_;  // with a shared catalog; uses catalog_, registry_
  std::unique_ptr<Registry> registry_;    // uses hub_, catalog_, scheduler_, placer_, drops_;
                                          // destroyed first
  std::unique_ptr<VerifyScheduler> verifier_;  // uses registry_; destroyed before it
  std::unique_ptr<net::HttpServer> web_;  // uses registry_
  const int64_t started_ms_ = wall_ms();
  std::unique_ptr<DaemonStats> daemon_stats_;  // uses registry_
  StatsFile stats_file_{settings_.state_dir + "/stats.json", "backupd"};
  UniqueFd listen_;
  std::unique_ptr<ControlSocket> control_;
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
  if (options.show_id) return net::print_identity(identity_path(settings->state_dir), "backupd");
  // Before any thread exists, so every thread inherits the mask and only the signalfd sees them.
  auto signal_fd = signals_to_fd({SIGTERM, SIGINT});
  if (!signal_fd) {
    log::error("{}", signal_fd.error().message);
    return 1;
  }
  Server server(std::move(*settings));
  return server.run(signal_fd->get());
}

}  // namespace bkp::server
