// The keeper (keeper.h): mount once, hold the descriptors, keep a worker serving.
#include "fs/keeper.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "common/files.h"
#include "common/log.h"
#include "common/process.h"
#include "common/unique_fd.h"
#include "fs/fd_store.h"
#include "fs/orphans.h"

namespace bkp::fs {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMaxFailedStarts = 5;
constexpr int kFallbackAfter = 2;
constexpr auto kStopGrace = std::chrono::seconds(30);  // the worker's drain is 10 s

// The keeper's signals, read from a signalfd (keeper.h says what each means).
constexpr std::initializer_list<int> kSignals = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};

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


// The mount: libfuse mounts; the keeper holds the connection's descriptor (or gets it back from
// systemd) and never serves a request itself.
class Mount {
 public:
  Result<void> mount(const std::string& dir) {
    const char* argv[] = {"backupfs", "-o", kFuseOptions};
    fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
    static const fuse_lowlevel_ops kNoOps{};
    fuse_session* se = fuse_session_new(&args, &kNoOps, sizeof(kNoOps), nullptr);
    if (se == nullptr) return fail(EINVAL, "fuse_session_new failed");
    if (fuse_session_mount(se, dir.c_str()) != 0) {
      fuse_session_destroy(se);
      return fail(EIO, "cannot mount on " + dir);
    }
    fd_.reset(::fcntl(fuse_session_fd(se), F_DUPFD_CLOEXEC, 3));
    fuse_session_destroy(se);  // closes its descriptor, neither unmounts nor ends the connection
    dir_ = dir;
    if (!fd_) {
      unmount();
      return fail_errno("dup /dev/fuse");
    }
    return {};
  }
  void adopt(UniqueFd fd, const std::string& dir) {
    fd_ = std::move(fd);
    dir_ = dir;
  }
  int fd() const { return fd_.get(); }
  // Whether the kernel ended the connection (unmounted, or aborted).
  bool gone() const {
    pollfd p{fd_.get(), 0, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL));
  }
  // Detaches the mount, as libfuse does for root; nothing once the kernel ended it.
  void unmount() {
    if (!dir_.empty() && !gone()) ::umount2(dir_.c_str(), MNT_DETACH);
    dir_.clear();
  }

 private:
  UniqueFd fd_;
  std::string dir_;
};

Result<UniqueFd> make_memfd(const char* name) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd) return fail_errno(std::string("memfd_create ") + name);
  return fd;
}

// The binary to run for each worker: the file at the path this one was started from, so an
// upgrade that replaced it starts the new version.
std::string own_path() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "backupfs";
  std::string path(buf, static_cast<size_t>(n));
  constexpr std::string_view kDeleted = " (deleted)";
  if (path.size() > kDeleted.size() && path.ends_with(kDeleted)) {
    path.resize(path.size() - kDeleted.size());
  }
  return path;
}

class Keeper {
 public:
  Keeper(const Options& options, std::vector<std::string> args)
      : options_(options), args_(std::move(args)), binary_(own_path()) {}

  int run();

 private:
  Result<void> prepare();
  // Starts a worker: the binary at binary_, or after kFallbackAfter failed starts in a row the
  // keeper's own (the version that mounted, still runnable if the file was replaced). False if
  // fork failed.
  bool spawn();
  // What to do when the worker ended with wait status; false: the mount is over.
  bool on_worker_exit(int status);
  void stop();
  // Reads the worker's channel: "serving" once it took over, files to hold (orphans.h).
  void on_channel();

  // With systemd: takes the descriptors a previous keeper stored; false if there are none (or
  // their connection is dead).
  bool adopt_stored(const std::string& dir);
  // With systemd: stores them for the next keeper.
  void store_all();

  static constexpr const char* kStoredNames[] = {"fuse",  "root",  "listener",
                                                 "nodes", "files", "session"};

  const Options& options_;
  const std::vector<std::string> args_;
  const std::string binary_;
  UniqueFd root_, listener_, nodes_, files_, session_;
  Mount mount_;
  UniqueFd channel_;  // the keeper's end of this worker's channel
  HeldFiles held_;    // open files with no name left
  pid_t worker_ = -1;
  bool serving_ = false;
  bool stopping_ = false;
  bool in_store_ = false;  // systemd holds the descriptors too
  bool keeping_ = false;   // stopping for a restart of the unit: the mount stays
  int failed_starts_ = 0;
  std::optional<Clock::time_point> stop_deadline_;
};

Result<void> Keeper::prepare() {
  auto checked = BKP_TRY(check(options_));
  if (checked.trust.tls) {
    log::info("identity {} ({}); serving {} backupd identit{}", checked.trust.tls->id(),
              identity_path(options_), checked.trust.peers.size(),
              checked.trust.peers.size() == 1 ? "y" : "ies");
  } else {
    log::warn("TLS is off (--no-tls): any peer that reaches the port can attach and read the "
              "volume; use this only on a trusted loopback");
  }
  if (!adopt_stored(checked.path)) {
    root_ = BKP_TRY(open_volume(checked.path));
    listener_ = BKP_TRY(net::tcp_listen(options_.listen, nullptr));
    nodes_ = BKP_TRY(make_memfd("backupfs-nodes"));
    files_ = BKP_TRY(make_memfd("backupfs-files"));
    session_ = BKP_TRY(make_memfd("backupfs-session"));
    BKP_TRY_VOID(mount_.mount(checked.path));
    log::info("mounted on {} (host {})", checked.path, checked.host);
    store_all();
  }
  const uint16_t port = net::local_port(listener_.get());
  log::info("listening on {}:{}", options_.listen.host, port);
  if (!options_.port_file.empty()) {
    if (auto r = write_file_atomic(options_.port_file, std::to_string(port) + "\n",
                                   Durability::kNoSync);
        !r) {
      return fail(r.error().code, "--port-file: " + r.error().message);
    }
  }
  return {};
}

bool Keeper::adopt_stored(const std::string& dir) {
  auto stored = take_stored_fds();
  for (const char* name : kStoredNames) {
    if (!stored.contains(name)) {
      for (auto& [n, fd] : stored) ::close(fd);
      return false;
    }
  }
  root_.reset(stored["root"]);
  listener_.reset(stored["listener"]);
  nodes_.reset(stored["nodes"]);
  files_.reset(stored["files"]);
  session_.reset(stored["session"]);
  mount_.adopt(UniqueFd(stored["fuse"]), dir);
  in_store_ = true;
  if (mount_.gone()) {
    log::warn("the FUSE connection kept by systemd is dead; mounting {} again", dir);
    ::umount2(dir.c_str(), MNT_DETACH);
    for (const char* name : kStoredNames) remove_stored_fd(name);
    in_store_ = false;
    root_.reset(), listener_.reset(), nodes_.reset(), files_.reset(), session_.reset();
    mount_ = Mount();
    return false;
  }
  log::info("took the mount of {} back from systemd's descriptor store", dir);
  return true;
}

void Keeper::store_all() {
  if (!fd_store_available()) return;
  const std::pair<const char*, int> fds[] = {
      {"fuse", mount_.fd()}, {"root", root_.get()},   {"listener", listener_.get()},
      {"nodes", nodes_.get()}, {"files", files_.get()}, {"session", session_.get()}};
  for (auto [name, fd] : fds) {
    if (auto r = store_fd(name, fd); !r) {
      log::warn("{}: a restart of this unit will mount again", r.error().message);
      for (auto [stored, unused] : fds) remove_stored_fd(stored);
      return;
    }
  }
  in_store_ = true;
  log::info("the mount is kept in systemd's descriptor store: a restart takes it over");
}

bool Keeper::spawn() {
  auto channel = make_channel();
  if (!channel) {
    log::error("{}", channel.error().message);
    return false;
  }
  auto& [keeper_end, worker_end] = *channel;
  held_.send_all(keeper_end.get());
  WorkerFds fds{mount_.fd(),  root_.get(),    listener_.get(), nodes_.get(),
                files_.get(), session_.get(), worker_end.get()};
  // An upgrade that does not start (a broken or missing binary) must not cost the mount.
  const bool fallback = failed_starts_ >= kFallbackAfter;
  if (fallback) {
    log::warn("{} failed to start {} times in a row; starting the keeper's own version",
              binary_, failed_starts_);
  }
  std::vector<std::string> argv{fallback ? "/proc/self/exe" : binary_};
  argv.insert(argv.end(), args_.begin(), args_.end());
  argv.push_back("--worker=" + fds.format());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t keeper = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    // The worker ends with the keeper; and it inherits exactly these descriptors.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != keeper) ::_exit(1);
    for (int fd : {fds.fuse, fds.root, fds.listener, fds.nodes, fds.files, fds.session,
                   fds.channel}) {
      ::fcntl(fd, F_SETFD, 0);
    }
    unblock_signals(kSignals);
    ::execv(cargv[0], cargv.data());
    ::execv("/proc/self/exe", cargv.data());  // the path is gone: the keeper's own binary
    ::_exit(127);
  }
  worker_end.reset();
  if (pid < 0) {
    log::error("fork: {}", std::strerror(errno));
    return false;
  }
  channel_ = std::move(keeper_end);
  worker_ = pid;
  serving_ = false;
  return true;
}

void Keeper::on_channel() {
  bool closed = false;
  if (held_.receive(channel_.get(), &closed) && !serving_) {
    serving_ = true;
    failed_starts_ = 0;
    log::info("worker {} serving", worker_);
  }
  if (closed) channel_.reset();  // the worker is going; its exit follows
}

bool Keeper::on_worker_exit(int status) {
  const pid_t pid = worker_;
  if (channel_) on_channel();  // what it sent before it ended: the files to hold above all
  worker_ = -1;
  channel_.reset();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    log::info("worker {} ended the session", pid);
    return false;
  }
  if (stopping_ || mount_.gone()) {
    log::info("worker {} ended", pid);
    return false;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == kExitHandedOver) {
    log::info("worker {} handed over; starting {}", pid, binary_);
  } else {
    if (!serving_ && ++failed_starts_ >= kMaxFailedStarts) {
      log::error("worker {} failed before serving, {} times in a row: giving up the mount", pid,
                 failed_starts_);
      return false;
    }
    if (WIFSIGNALED(status)) {
      log::warn("worker {} killed by signal {}; a new worker takes over", pid, WTERMSIG(status));
    } else {
      log::warn("worker {} exited with status {}; a new worker takes over", pid,
                WEXITSTATUS(status));
    }
  }
  return spawn();
}

void Keeper::stop() {
  if (stopping_) return;
  stopping_ = true;
  stop_deadline_ = Clock::now() + kStopGrace;
  if (in_store_ && unit_restarting()) {
    keeping_ = true;
    log::info("systemd restarts this unit: the mount stays in its descriptor store; the worker "
              "hands over");
    if (worker_ > 0) ::kill(worker_, SIGTERM);
    return;
  }
  log::info("stopping: unmounting; the worker ships what it holds");
  mount_.unmount();
  if (in_store_) {
    for (const char* name : kStoredNames) remove_stored_fd(name);
  }
  if (worker_ > 0) ::kill(worker_, SIGINT);
}

int Keeper::run() {
  if (auto r = prepare(); !r) {
    log::error("{}", r.error().message);
    return 1;
  }
  if (!options_.foreground && fuse_daemonize(0) != 0) {
    log::error("cannot daemonize");
    return 1;
  }
  auto signals = signals_to_fd(kSignals);
  if (!signals) {
    log::error("{}", signals.error().message);
    return 1;
  }
  int result = 0;
  if (!spawn()) return 1;
  while (worker_ > 0) {
    // Not the /dev/fuse descriptor: a poll on it wakes at every request the kernel queues (it
    // waits on the connection's input queue), a context switch per request on the cores the
    // application uses. An ended connection ends the worker, and SIGCHLD wakes us.
    pollfd p[2] = {{signals->get(), POLLIN, 0},
                   {channel_.get(), static_cast<short>(channel_ ? POLLIN : 0), 0}};
    int timeout = stop_deadline_ ? 1000 : -1;
    if (::poll(p, 2, timeout) < 0 && errno != EINTR) break;
    if (p[1].revents != 0) on_channel();
    for (int sig; (sig = read_signal(signals->get())) != 0;) {
      if (sig == SIGTERM || sig == SIGINT) {
        stop();
      } else if (sig == SIGHUP && !stopping_ && worker_ > 0) {
        log::info("upgrade asked (SIGHUP): worker {} hands over", worker_);
        ::kill(worker_, SIGTERM);
      }
    }
    int status = 0;
    if (worker_ > 0 && ::waitpid(worker_, &status, WNOHANG) == worker_) {
      if (!on_worker_exit(status)) {
        result = (WIFEXITED(status) && WEXITSTATUS(status) == 0) || stopping_ ? 0 : 1;
        break;
      }
    }
    if (stop_deadline_ && Clock::now() > *stop_deadline_ && worker_ > 0) {
      log::warn("worker {} did not stop in {} s; killing it", worker_, kStopGrace.count());
      ::kill(worker_, SIGKILL);
      stop_deadline_.reset();
    }
  }
  if (!keeping_) mount_.unmount();
  return result;
}

}  // namespace

std::string WorkerFds::format() const {
  return fmt::format("{},{},{},{},{},{},{}", fuse, root, listener, nodes, files, session, channel);
}

Result<WorkerFds> WorkerFds::parse(std::string_view text) {
  const auto bad = fail(EINVAL, "--worker needs seven descriptors (it is the keeper's flag)");
  std::vector<int> v;
  for (size_t start = 0; start <= text.size();) {
    size_t comma = std::min(text.find(',', start), text.size());
    std::string_view part = text.substr(start, comma - start);
    int fd = -1;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), fd);
    if (ec != std::errc() || end != part.data() + part.size() || fd < 0) return bad;
    v.push_back(fd);
    start = comma + 1;
  }
  if (v.size() != 7) return bad;
  return WorkerFds{v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
}

int run_keeper(const Options& options, const std::vector<std::string>& args) {
  return Keeper(options, args).run();
}

}  // namespace bkp::fs
