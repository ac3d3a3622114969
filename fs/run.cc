// run(): the life of one backupfs mount, told in order.
//
// 1. Open the directory *before* mounting: afterwards its path leads to us, while this
//    descriptor still leads to the real files underneath, which we then serve.
// 2. Bind the node's port, so a port in use fails the start before anything is mounted.
// 3. Mount over the same path (allow_other so the application's users see it,
//    default_permissions so the kernel applies the real modes and we grant nothing more), then
//    announce the port (log line, --port-file).
// 4. Start the node session (it waits for a backupd to attach at the port) and run the
//    multi-threaded FUSE loop until unmounted (fusermount3 -u, umount) or told to stop
//    (SIGTERM/SIGINT, after which we unmount).
// 5. If a backupd is attached, give it up to 10 s to take what is still recorded; exit 0.
//
// FuseSession owns the libfuse session so every early return unmounts and frees it.
#include "fs/run.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/changes/change_log.h"
#include "common/net/tls.h"
#include "common/log.h"
#include "common/path.h"
#include "common/progress.h"
#include "common/stream/sender.h"
#include "common/unique_fd.h"
#include "fs/fs.h"
#include "fs/inode_table.h"
#include "fs/node_session.h"

namespace bkp::fs {
namespace {

constexpr unsigned kMaxThreads = 16;
constexpr auto kDrainGrace = std::chrono::seconds(10);

// The session the termination signals end. libfuse's own fuse_set_signal_handlers() leaves a
// signal alone if it is ignored when we start, and a shell starts background jobs with SIGINT
// ignored; we want SIGINT and SIGTERM to unmount cleanly whatever we inherited.
std::atomic<fuse_session*> g_signalled_session{nullptr};

void on_termination_signal(int) {
  if (fuse_session* se = g_signalled_session.load()) fuse_session_exit(se);
}

void install_signal_handlers(fuse_session* se) {
  g_signalled_session.store(se);
  struct sigaction sa {};
  sa.sa_handler = on_termination_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the loop's blocking wait must be interrupted
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  sa.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &sa, nullptr);
}

void remove_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  g_signalled_session.store(nullptr);
}

class FuseSession {
 public:
  FuseSession() = default;
  ~FuseSession() {
    if (se_ == nullptr) return;
    if (signals_) remove_signal_handlers();
    if (mounted_) fuse_session_unmount(se_);
    fuse_session_destroy(se_);
  }
  FuseSession(const FuseSession&) = delete;
  FuseSession& operator=(const FuseSession&) = delete;

  Result<void> create(Fs& fs) {
    const char* argv[] = {"backupfs", "-o",
                          "allow_other,default_permissions,fsname=backupfs,subtype=backupfs"};
    fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
    se_ = fuse_session_new(&args, &Fs::ops(), sizeof(fuse_lowlevel_ops), &fs);
    if (se_ == nullptr) return fail(EINVAL, "fuse_session_new failed");
    install_signal_handlers(se_);
    signals_ = true;
    return {};
  }
  Result<void> mount(const std::string& dir) {
    if (fuse_session_mount(se_, dir.c_str()) != 0) return fail(EIO, "cannot mount on " + dir);
    mounted_ = true;
    // Our transport over the device the mount opened (libfuse 3.14's fuse_session_custom_io
    // only stores the fd and callbacks; mounting would overwrite the fd, so this comes after).
    if (int r = fuse_session_custom_io(se_, &Fs::custom_io(), fuse_session_fd(se_)); r != 0) {
      return fail(-r, "fuse_session_custom_io failed");
    }
    return {};
  }
  int loop(unsigned max_threads) {
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_clone_fd(config, 0);
    int res = fuse_session_loop_mt(se_, config);
    fuse_loop_cfg_destroy(config);
    return res;
  }
  void unmount() {
    if (mounted_) fuse_session_unmount(se_);
    mounted_ = false;
  }

 private:
  fuse_session* se_ = nullptr;
  bool signals_ = false;
  bool mounted_ = false;
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

Result<UniqueFd> open_volume(const std::string& dir) {
  // Not O_PATH: open_by_handle_at refuses an O_PATH descriptor as its mount fd (EBADF).
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno("open " + dir);
  struct statfs sfs;
  if (::fstatfs(fd.get(), &sfs) < 0) return fail_errno("statfs " + dir);
  if (sfs.f_type == FUSE_SUPER_MAGIC) {
    return fail(EBUSY, dir + " is already a FUSE mount (is backupfs running on it?)");
  }
  return fd;
}

// Writes "PORT\n" to path through a temporary name and a rename, so a reader never sees a
// partly written number.
Result<void> write_port_file(const std::string& path, uint16_t port) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  std::string text = std::to_string(port) + "\n";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return fail_errno("create " + tmp);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    auto err = fail_errno("write " + tmp);
    ::unlink(tmp.c_str());
    return err;
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto err = fail_errno("rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
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

int run(const Options& options) {
  log::set_component("backupfs");
  log::set_level(options.level);
  if (::geteuid() != 0) {
    log::error("backupfs must run as root (it serves every user's files by handle)");
    return 1;
  }
  char real[PATH_MAX];
  if (::realpath(options.dir.c_str(), real) == nullptr) {
    log::error("{}: {}", options.dir, std::strerror(errno));
    return 1;
  }
  auto path = validate_volume_path(real);
  auto host = host_name(options.host);
  if (!path || !host) {
    log::error("{}", !path ? path.error().message : host.error().message);
    return 1;
  }
  auto trust = load_trust(options);
  if (!trust) {
    log::error("{}", trust.error().message);
    return 1;
  }
  if (trust->tls) {
    log::info("identity {} ({}); serving {} backupd identit{}", trust->tls->id(),
              identity_path(options), trust->peers.size(), trust->peers.size() == 1 ? "y" : "ies");
  } else {
    log::warn("TLS is off (--no-tls): any peer that reaches the port can attach and read the "
              "volume; use this only on a trusted loopback");
  }
  ::umask(0);  // the kernel already applied the caller's umask to every mode it sends
  size_t fd_budget = raise_fd_limit();

  auto root = open_volume(*path);
  if (!root) {
    log::error("{}", root.error().message);
    return 1;
  }
  auto table = InodeTable::create(std::move(*root), fd_budget);
  if (!table) {
    log::error("{}: {}", *path, table.error().message);
    return 1;
  }
  changes::ChangeLog change_log(options.max_queued_ops);
  Fs fs(**table, change_log);
  net::HostPort bound;
  auto listener = net::tcp_listen(options.listen, &bound);
  if (!listener) {
    log::error("{}", listener.error().message);
    return 1;
  }
  FuseSession fuse;
  if (auto r = fuse.create(fs); !r) {
    log::error("{}", r.error().message);
    return 1;
  }
  if (auto r = fuse.mount(*path); !r) {
    log::error("{}", r.error().message);
    return 1;
  }
  log::info("mounted on {} (host {})", *path, *host);
  log::info("listening on {}:{}", bound.host, bound.port);
  if (!options.port_file.empty()) {
    if (auto r = write_port_file(options.port_file, bound.port); !r) {
      log::error("--port-file: {}", r.error().message);
      return 1;
    }
  }
  if (!options.foreground && fuse_daemonize(0) != 0) {
    log::error("cannot daemonize");
    return 1;
  }

  // After daemonizing: the display's thread must live in the process that stays.
  progress::Display display(progress::display_options(options.progress_every));
  auto meter = std::make_shared<progress::Meter>(*host + ":" + *path);
  display.add(meter);
  display.set_idle_status([&] { return fmt::format("serving {}:{}, idle", *host, *path); });
  display.start();
  NodeSession session({*host, *path, stream::new_instance(), meter, std::move(*trust)},
                      std::move(*listener),
                      change_log, (*table)->mount_fd());
  session.start();
  int loop_result = fuse.loop(kMaxThreads);
  fuse.unmount();  // needed after a signal; harmless after fusermount3 -u
  log::debug("FUSE loop ended ({}); {} inodes known, {} descriptors cached", loop_result,
             (*table)->size(), (*table)->cached_fds());

  auto stats = change_log.stats();
  log::info("unmounted {}; {} ops, {} files, {} dirty bytes still recorded", *path, stats.ops,
            stats.files, stats.dirty_bytes);
  bool drained = session.drain(std::chrono::duration_cast<std::chrono::milliseconds>(kDrainGrace));
  display.stop();
  if (drained) {
    log::info("all changes acknowledged; exiting");
  } else {
    stats = change_log.stats();
    log::warn("exiting with changes not acknowledged by backupd ({} ops, {} files); the next "
              "start ships a baseline", stats.ops, stats.files);
  }
  return 0;
}

}  // namespace bkp::fs
