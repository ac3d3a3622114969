// run(): the life of one backupfs worker, told in order (keeper.h: the keeper that mounted
// starts it with the descriptors it holds).
//
// 1. Check the options again (the keeper already did; an upgrade may read them differently).
// 2. Open the takeover state the keeper holds: node ids and open files a predecessor left are
//    adopted, and the INIT exchange is replayed instead of read (kernel_channel.h); the keeper
//    hands over the open files that have no name left (orphans.h).
// 3. Run the multi-threaded FUSE loop and tell the keeper once INIT is answered (or replayed);
//    only then load the identity and start the node session on the keeper's listening socket
//    (it waits for a backupd to attach, or continues the stream a predecessor handed over).
// 4. The end, one of three:
//    - the kernel ended the connection (unmounted): ship what is left (up to 10 s), exit 0;
//    - SIGINT from the keeper (it unmounted to stop): stop reading, answer what was read, ship,
//      exit 0;
//    - SIGTERM (an upgrade): ship what is recorded, stop reading, answer what was read, ship the
//      rest, exit kExitHandedOver. If backupd then has everything, the stream is handed over
//      (SessionStore::store_stream) and the successor continues it; otherwise its first attach
//      reconciles by manifest, which finds what this worker recorded and did not ship.
//    Worker threads may still be blocked reading the device, so the process ends with _exit.
#include "fs/run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>

#include "common/changes/change_log.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/net/http_server.h"
#include "common/net/tls.h"
#include "common/path.h"
#include "common/process.h"
#include "common/progress.h"
#include "common/stats_file.h"
#include "common/stream/sender.h"
#include "common/unique_fd.h"
#include "fs/fs.h"
#include "fs/inode_table.h"
#include "fs/keeper.h"
#include "fs/node_session.h"
#include "fs/takeover.h"

namespace bkp::fs {

using json = nlohmann::json;
namespace {

constexpr unsigned kMaxThreads = 16;
constexpr auto kDrainGrace = std::chrono::seconds(10);
// How long a stopping worker waits for the answers to requests it read (the successor has the
// kernel resend any that remain).
constexpr auto kAnswerGrace = std::chrono::seconds(5);
// An upgrade ships what is recorded before it stops serving until little is left (up to
// kPreDrain, the application unaffected), then the rest while stopped (up to kHandOverDrain:
// the application waits that long at most; past it the next worker reconciles instead).
constexpr auto kPreDrain = std::chrono::seconds(2);
constexpr changes::Limits kHandOverLag{1024, 4u << 20};
constexpr auto kHandOverDrain = std::chrono::milliseconds(200);

// libfuse's session over the keeper's device: our transport, our loop configuration. Never
// mounts, unmounts or destroys: the connection is the keeper's.
class WorkerSession {
 public:
  Result<void> create(Fs& fs, int fuse_fd) {
    const char* argv[] = {"backupfs", "-o", kFuseOptions};
    fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
    se_ = fuse_session_new(&args, &Fs::ops(), sizeof(fuse_lowlevel_ops), &fs);
    if (se_ == nullptr) return fail(EINVAL, "fuse_session_new failed");
    if (int r = fuse_session_custom_io(se_, &Fs::custom_io(), fuse_fd); r != 0) {
      return fail(-r, "fuse_session_custom_io failed");
    }
    return {};
  }
  int loop(unsigned max_threads) {
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, max_threads);
    // A cloned descriptor's requests would die with this process instead of being resent.
    fuse_loop_cfg_set_clone_fd(config, 0);
    int res = fuse_session_loop_mt(se_, config);
    fuse_loop_cfg_destroy(config);
    return res;
  }

 private:
  fuse_session* se_ = nullptr;
};

Result<std::string> host_name(const std::string& given) {
  std::string host = given;
  if (host.empty()) {
    char buf[HOST_NAME_MAX + 1] = {};
    if (::gethostname(buf, sizeof(buf) - 1) < 0) return fail_errno("gethostname");
    host = buf;
  }
  BKP_TRY_VOID(validate_host(host));
  return host;
}

// Raises the open-file limit to its maximum and returns the inode table's descriptor budget:
// half of it, the other half for the files the application holds open through us (each one an
// open file here too), sockets and the rest.
size_t raise_fd_limit() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 512;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return static_cast<size_t>(std::min<rlim_t>(rl.rlim_cur, 1u << 21) / 2);
}

// TLS with this node's identity and the backupd identities it serves (nothing with --no-tls).
Result<net::Trust> load_trust(const Options& options) {
  net::Trust trust;
  if (!options.tls) return trust;
  trust.tls = BKP_TRY(net::TlsConfig::load(identity_path(options), "backupfs"));
  trust.peers = options.server_ids;
  if (!options.server_ids_file.empty()) {
    for (auto& id : BKP_TRY(net::read_ids(options.server_ids_file))) trust.peers.push_back(id);
  }
  return trust;
}

}  // namespace

std::string identity_path(const Options& options) { return options.state_dir + "/identity.pem"; }

int show_id(const Options& options) {
  log::set_component("backupfs");
  return net::print_identity(identity_path(options), "backupfs");
}

Result<Checked> check(const Options& options, bool with_trust) {
  if (::geteuid() != 0) {
    return fail(EPERM, "backupfs must run as root (it serves every user's files by handle)");
  }
  char real[PATH_MAX];
  if (::realpath(options.dir.c_str(), real) == nullptr) {
    return fail(errno, options.dir + ": " + std::strerror(errno));
  }
  Checked checked;
  checked.path = BKP_TRY(validate_volume_path(real));
  checked.host = BKP_TRY(host_name(options.host));
  if (with_trust) checked.trust = BKP_TRY(load_trust(options));
  return checked;
}

namespace {

// /metrics of a worker (--metrics-listen): the node's recovery point as backupd would see it
// (what is recorded and not acknowledged, and since when), what it shipped since this worker
// started, and its process. session is null while the worker has no identity.
std::string node_metrics(const std::string& host, const std::string& path, uint32_t generation,
                         const NodeSession* session, const changes::ChangeLog& log) {
  metrics::Exposition m;
  const metrics::Labels vol{{"host", host}, {"path", path}};
  const auto stats = log.stats();
  const stream::Lag lag = session ? session->lag() : stream::Lag{};
  m.gauge("backupfs_backupd_attached", "1 while a backupd is attached.", vol,
          session && session->attached());
  m.gauge("backupfs_lag_seconds", "Age of the oldest change backupd has not acknowledged.", vol,
          lag_seconds(lag.oldest_ns, wall_ms()));
  m.gauge("backupfs_lag_operations", "Operations recorded and not acknowledged by backupd.", vol,
          static_cast<double>(session ? lag.ops : stats.ops));
  m.gauge("backupfs_lag_files", "Files with changes not acknowledged by backupd.", vol,
          static_cast<double>(session ? lag.files : stats.files));
  m.gauge("backupfs_lag_bytes", "Bytes of changed data not acknowledged by backupd.", vol,
          static_cast<double>(session ? lag.bytes : stats.dirty_bytes));
  if (session) {
    const changes::ShipCounters& c = session->counters();
    m.counter("backupfs_shipped_bytes_total", "File data shipped to backupd by this worker.", vol,
              static_cast<double>(c.data_bytes.load()));
    m.counter("backupfs_shipped_wire_bytes_total", "Bytes of frames sent to backupd by this worker.",
              vol, static_cast<double>(c.wire_bytes.load()));
    m.counter("backupfs_shipped_operations_total", "Operations shipped by this worker.", vol,
              static_cast<double>(c.ops.load()));
    m.counter("backupfs_shipped_batches_total", "Batches shipped by this worker.", vol,
              static_cast<double>(c.batches.load()));
  }
  m.gauge("backupfs_worker_generation",
          "Workers that served this mount so far (1 + restarts and upgrades).", vol, generation);
  metrics::add_process_metrics(m);
  return m.text();
}

// An upgrade (SIGTERM): ship what is recorded while still serving, stop serving, ship the rest,
// and if backupd then has everything, leave the stream to the next worker, which continues it
// without a reconcile. Otherwise the next worker reconciles. Exits.
[[noreturn]] void hand_over(Fs& fs, NodeSession* session, SessionStore& store, uint64_t instance) {
  log::info("worker {}: handing over to the next worker", ::getpid());
  const auto deadline = std::chrono::steady_clock::now() + kPreDrain;
  auto small = [&] {
    stream::Lag lag = session->lag();
    return lag.bytes <= kHandOverLag.max_bytes && lag.ops <= kHandOverLag.max_ops;
  };
  while (session != nullptr && !small() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Requests still being served could record after the drain: then only a reconcile is exact.
  const bool answered = fs.channel().stop_reading(kAnswerGrace);
  if (session != nullptr && session->drain(kHandOverDrain) && answered) {
    if (auto r = store.store_stream({instance, session->committed()}); r) {
      log::info("handing the stream over after batch {}", session->committed());
    }
  } else {
    log::info("backupd does not have everything recorded: the next worker reconciles");
  }
  ::_exit(kExitHandedOver);
}

// The worker proper; see the top of this file.
int run_worker(const Options& options) {
  // Before any thread starts (all inherit the mask); SIGINT: stop, SIGTERM: hand over. SIGHUP
  // is the keeper's to interpret (a terminal's hangup reaches both).
  ::signal(SIGHUP, SIG_IGN);
  auto signals = signals_to_fd({SIGINT, SIGTERM});
  if (!signals) {
    log::error("{}", signals.error().message);
    return 1;
  }
  auto fds = WorkerFds::parse(options.worker);
  // The identity (TLS) is loaded once the mount is served: it costs ~10 ms of a restart's pause.
  auto checked = fds ? check(options, false) : tl::unexpected(fds.error());
  if (!checked) {
    log::error("{}", checked.error().message);
    return 1;
  }
  const std::string& path = checked->path;
  const std::string& host = checked->host;
  ::umask(0);  // the kernel already applied the caller's umask to every mode it sends
  size_t fd_budget = raise_fd_limit();

  auto session_store = SessionStore::open(UniqueFd(fds->session));
  auto nodes = SharedRecords::open(UniqueFd(fds->nodes), sizeof(NodeRecord));
  auto files = SharedRecords::open(UniqueFd(fds->files), sizeof(OpenRecord));
  if (!session_store || !nodes || !files) {
    log::error("takeover state: {}", !session_store ? session_store.error().message
                                     : !nodes       ? nodes.error().message
                                                    : files.error().message);
    return 1;
  }
  auto table = InodeTable::create(UniqueFd(fds->root), fd_budget, std::move(*nodes));
  if (!table) {
    log::error("{}: {}", path, table.error().message);
    return 1;
  }
  const uint32_t generation = session_store->generation();
  // Taken now, whatever happens next: only this worker may hand its own stream on.
  const std::optional<SessionStore::StreamPoint> handed = session_store->take_stream();
  uint64_t instance = 0;
  changes::ChangeLog change_log(options.max_queued_ops);
  Orphans orphans(fds->channel);
  if (auto r = orphans.receive(); !r) {
    log::error("{}", r.error().message);
    return 1;
  }
  Fs fs(**table, change_log, std::move(*files), generation, orphans);
  orphans.drop_unopened();
  fs.channel().attach(&*session_store);
  WorkerSession fuse;
  if (auto r = fuse.create(fs, fds->fuse); !r) {
    log::error("{}", r.error().message);
    return 1;
  }

  // The loop on its own thread; the main thread waits for its end or a signal.
  UniqueFd loop_done(::eventfd(0, EFD_CLOEXEC));
  std::thread loop([&] {
    int res = fuse.loop(kMaxThreads);
    log::debug("FUSE loop ended ({})", res);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(loop_done.get(), &one, sizeof(one));
  });
  if (!fs.channel().wait_initialised(std::chrono::seconds(30))) {
    log::error("worker {}: no FUSE INIT within 30 s; giving up", ::getpid());
    ::_exit(1);  // the keeper counts a failed start
  }
  log::info("worker {} of {} (generation {}): serving over /dev/fuse reads, {} nodes and the "
            "open files of the previous worker adopted", ::getpid(), path, generation,
            (*table)->adopted());
  orphans.serving();

  progress::Display display(progress::display_options(options.progress_every));
  auto meter = std::make_shared<progress::Meter>(host + ":" + path);
  display.add(meter);
  display.set_idle_status([&] { return fmt::format("serving {}:{}, idle", host, path); });
  display.start();
  // STATE/activity-<volume>: the files a restart of the machine could leave in doubt.
  std::unique_ptr<SourceActivity> activity;
  if (auto a = SourceActivity::open(options.state_dir + "/activity-" + escape_path(path),
                                    (*table)->mount_fd());
      !a) {
    log::warn("{}: a restart of the machine could leave the mirror holding bytes this disk lost",
              a.error().message);
  } else {
    activity = std::move(*a);
  }
  // Without its identity the worker still serves the application (never an outage for it),
  // recording changes for when a worker that can load it takes over.
  std::optional<NodeSession> session;
  if (auto trust = load_trust(options); !trust) {
    log::error("{}: nothing is shipped to backupd until this is fixed and backupfs is reloaded",
               trust.error().message);
    UniqueFd unused(fds->listener);
  } else {
    SessionOptions o{.host = host,
                     .path = path,
                     .instance = handed ? handed->instance : stream::new_instance(),
                     .resume_committed = handed ? std::optional(handed->committed) : std::nullopt,
                     .meter = meter,
                     .trust = std::move(*trust),
                     .activity = activity.get()};
    instance = o.instance;
    if (handed) {
      log::info("continuing the stream the previous worker handed over (after batch {})",
                handed->committed);
    }
    session.emplace(std::move(o), UniqueFd(fds->listener), change_log, (*table)->mount_fd());
    session->start();
  }
  std::unique_ptr<net::HttpServer> metrics_server;
  if (options.metrics_listen) {
    const NodeSession* s = session ? &*session : nullptr;
    metrics_server = net::serve_metrics(*options.metrics_listen, options.metrics_port_file, [&, s] {
      return node_metrics(host, path, generation, s, change_log);
    });
  }

  // STATE/stats-<volume>.json: what this mount shipped, kept across workers and restarts.
  StatsFile stats_file(options.state_dir + "/stats-" + escape_path(path) + ".json", "backupfs");
  auto save_stats = [&] {
    json since_start = json::object(), now{{"generation", generation},
                                           {"backupd_attached", session && session->attached()}};
    if (session) {
      const changes::ShipCounters& c = session->counters();
      since_start = json{{"shipped_bytes", c.data_bytes.load()},
                         {"shipped_wire_bytes", c.wire_bytes.load()},
                         {"operations", c.ops.load()},
                         {"batches", c.batches.load()}};
      const stream::Lag lag = session->lag();
      now["lag"] = json{{"operations", lag.ops}, {"files", lag.files}, {"bytes", lag.bytes}};
    }
    if (auto w = stats_file.write(since_start, now); !w) {
      log::warn("{}: {}", stats_file.path(), w.error().message);
    }
  };
  save_stats();

  enum class End { kUnmounted, kStop, kHandOver } end = End::kUnmounted;
  for (;;) {
    pollfd p[2] = {{signals->get(), POLLIN, 0}, {loop_done.get(), POLLIN, 0}};
    const int ready = ::poll(p, 2, static_cast<int>(StatsFile::every().count()));
    if (stats_file.due()) save_stats();
    if (ready <= 0) continue;
    if (p[1].revents & POLLIN) break;
    if (int sig = read_signal(signals->get()); sig == SIGTERM) {
      end = End::kHandOver;
      break;
    } else if (sig != 0) {
      end = End::kStop;
      break;
    }
  }
  if (end == End::kHandOver) hand_over(fs, session ? &*session : nullptr, *session_store, instance);
  if (end != End::kUnmounted) fs.channel().stop_reading(kAnswerGrace);

  auto stats = change_log.stats();
  log::info("{} {}; {} ops, {} files, {} dirty bytes still recorded",
            end == End::kStop ? "stopping" : "unmounted", path, stats.ops, stats.files,
            stats.dirty_bytes);
  bool drained = session && session->drain(
                                std::chrono::duration_cast<std::chrono::milliseconds>(kDrainGrace));
  display.stop();
  save_stats();
  if (activity) {
    if (auto closed = activity->close(); !closed) log::warn("{}", closed.error().message);
  }
  if (drained) {
    log::info("all changes acknowledged; exiting");
  } else {
    stats = change_log.stats();
    log::warn("exiting with changes not acknowledged by backupd ({} ops, {} files); the next "
              "start ships a baseline", stats.ops, stats.files);
  }
  ::_exit(0);
}

}  // namespace

int run(const Options& options) {
  log::set_component("backupfs");
  log::set_level(options.level);
  if (!options.worker.empty()) return run_worker(options);
  return run_keeper(options, options.args);
}

}  // namespace bkp::fs
