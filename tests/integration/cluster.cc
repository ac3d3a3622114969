// ClusterTest (see cluster.h): starting, watching and always stopping the real processes.
#include "tests/integration/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <sstream>

#include "common/path.h"
#include "common/unique_fd.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {

using testutil::Daemon;
using testutil::describe_status;
using testutil::wait_until;

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

std::string address(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

bool exited_zero(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

}  // namespace

Binaries Binaries::find() {
  return {env_or("BKP_BACKUPD", BKP_BACKUPD_PATH), env_or("BKP_REPLICATOR", BKP_REPLICATOR_PATH),
          env_or("BKP_BACKUPFS", BKP_BACKUPFS_PATH), env_or("BKP_BKPTOOL", BKP_BKPTOOL_PATH)};
}

uint16_t free_port() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (!fd || bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return 0;
  }
  return ntohs(addr.sin_port);
}

bool finishes_within(const std::function<void()>& fn, std::chrono::milliseconds timeout,
                     const std::function<void()>& unblock) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
  std::thread worker([&] {
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  });
  bool in_time;
  {
    std::unique_lock lock(mu);
    in_time = cv.wait_for(lock, timeout, [&] { return done; });
  }
  if (!in_time) unblock();
  worker.join();
  if (error) std::rethrow_exception(error);
  return in_time;
}

namespace {

// The identity a daemon's --show-id prints (made on first use); a failure if it prints none.
std::string show_id(const std::vector<std::string>& argv) {
  auto id = testutil::show_id(argv);
  EXPECT_TRUE(id) << id.error().message;
  return id.value_or("");
}

}  // namespace

void ClusterTest::SetUp() {
  if (auto why = testutil::fuse_unavailable_reason()) GTEST_SKIP() << *why;
  bin_ = Binaries::find();
  for (const std::string& b : {bin_.backupd, bin_.replicator, bin_.backupfs, bin_.bkptool}) {
    ASSERT_EQ(access(b.c_str(), X_OK), 0) << b << " is not built";
  }
  tmp_.emplace("bkp-it");
  src_ = tmp_->mkdir("src");
  ref_ = tmp_->mkdir("ref");
  state_ = tmp_->mkdir("state");
  logs_ = tmp_->mkdir("logs");
  roots_[0] = tmp_->mkdir("r1");
  roots_[1] = tmp_->mkdir("r2");
  replica_metrics_port_files_[0] = tmp_->sub("r1-metrics-port");
  replica_metrics_port_files_[1] = tmp_->sub("r2-metrics-port");
  node_state_ = tmp_->mkdir("node-state");
  port_file_ = tmp_->sub("port");
  http_port_file_ = tmp_->sub("http-port");
  node_port_file_ = tmp_->sub("node-port");
  server_id_ = show_id({bin_.backupd, "--state-dir", state_, "--show-id"});
  node_id_ = show_id({bin_.backupfs, "--state-dir", node_state_, "--show-id"});
  for (int i = 0; i < 2; ++i) {
    replica_ids_[i] = show_id({bin_.replicator, "--root", roots_[i], "--show-id"});
  }
  start_watchdog();
}

void ClusterTest::TearDown() {
  if (mount_) {
    EXPECT_TRUE(unmount_source());
  }
  for (auto& r : replicators_) {
    if (r) r->stop(10s);
    r.reset();
  }
  if (backupd_) {
    bool was_alive = backupd_->alive();
    int st = backupd_->stop(15s);
    if (was_alive) {
      EXPECT_TRUE(exited_zero(st)) << "backupd on SIGTERM: " << describe_status(st);
    } else if (!HasFailure()) {
      ADD_FAILURE() << "backupd died during the test: " << describe_status(st);
    }
    backupd_.reset();
  }
  stop_watchdog();
  if (expired_) ADD_FAILURE() << "the watchdog fired: the test ran out of time";
  if (HasFailure()) print_logs();
}

ClusterTest::~ClusterTest() {
  stop_watchdog();
  // Members go in reverse order: the mount first, then the daemons, then the directory.
}

void ClusterTest::start_watchdog() {
  long seconds = std::atol(env_or("BKP_TEST_WATCHDOG_SECONDS", "100").c_str());
  watchdog_ = std::thread([this, seconds] {
    std::unique_lock lock(watchdog_mu_);
    if (watchdog_cv_.wait_for(lock, std::chrono::seconds(seconds),
                              [&] { return watchdog_stop_; })) {
      return;
    }
    fprintf(stderr, "[watchdog] test still running after %ld s: giving up its waits\n", seconds);
    expired_ = true;
    // Calls blocked on the mount return ENOTCONN once its server is gone.
    if (pid_t pg = fuse_pgid_.load(); pg > 0) kill(-pg, SIGKILL);
  });
}

void ClusterTest::stop_watchdog() {
  {
    std::lock_guard lock(watchdog_mu_);
    watchdog_stop_ = true;
  }
  watchdog_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
}

::testing::AssertionResult ClusterTest::start_server(uint16_t port) {
  unlink(port_file_.c_str());  // a stale port from a previous run must not be read
  unlink(http_port_file().c_str());
  std::vector<std::string> argv = with_progress(
      {bin_.backupd, "--state-dir", state_, "--listen", address(port), "--port-file", port_file_,
       "--control-socket", control_socket(), "--http-listen", address(0), "--http-port-file",
       http_port_file()});
  argv.insert(argv.end(), backupd_args.begin(), backupd_args.end());
  argv.insert(argv.begin(), backupd_wrapper.begin(), backupd_wrapper.end());
  backupd_ = std::make_unique<Daemon>("backupd", argv, logs_ + "/backupd.log", backupd_env);
  std::optional<uint16_t> got;
  wait_until(
      [&] {
        got = testutil::read_port_file(port_file_);
        return got || !backupd_->alive() || expired();
      },
      20s, 20ms);
  if (!got) {
    std::string why = backupd_->alive() ? "no port file after 20 s"
                                        : "exited: " + describe_status(*backupd_->status());
    return ::testing::AssertionFailure() << "backupd did not start (" << why << ")\n"
                                         << backupd_->log_tail();
  }
  if (port != 0 && *got != port) {
    return ::testing::AssertionFailure() << "backupd asked for port " << port << " wrote " << *got;
  }
  port_ = *got;
  // Authorise both replicators (again after a restart: already there is fine).
  for (int i = 0; i < 2; ++i) {
    auto r = bkptool({"replica", "add", replica_ids_[i], "--name", "r" + std::to_string(i + 1)});
    if (r.exit_code() != 0 && r.exit_code() != 5) {
      return ::testing::AssertionFailure() << "bkptool replica add: " << r.output;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::stop_server() {
  if (!backupd_) return ::testing::AssertionFailure() << "backupd is not running";
  int st = backupd_->stop(15s);
  std::string log = backupd_->log_tail();
  backupd_.reset();
  if (!exited_zero(st)) {
    return ::testing::AssertionFailure()
           << "backupd on SIGTERM: " << describe_status(st) << " (expected exit 0)\n"
           << log;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::kill_server() {
  if (!backupd_) return ::testing::AssertionFailure() << "backupd is not running";
  backupd_->signal(SIGKILL);
  auto st = backupd_->wait_exit(10s);
  backupd_.reset();
  if (!st) return ::testing::AssertionFailure() << "backupd survived SIGKILL for 10 s";
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::start_replicators() {
  for (int i = 0; i < 2; ++i) {
    if (auto r = start_replicator(i); !r) return r;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::start_replicator(int i) {
  std::string name = "r" + std::to_string(i + 1);
  auto& r = replicators_[i];
  const std::string server = replicator_server[i].empty() ? address(port_) : replicator_server[i];
  std::vector<std::string> argv =
      with_progress({bin_.replicator, "--server", server, "--server-id", server_id_, "--root",
                     roots_[i], "--name", name});
  unlink(replica_metrics_port_files_[i].c_str());  // a previous run's port must not be read
  if (replicator_metrics) {
    argv.insert(argv.end(), {"--metrics-listen", address(0), "--metrics-port-file",
                             replica_metrics_port_files_[i]});
  }
  argv.insert(argv.end(), replicator_args[i].begin(), replicator_args[i].end());
  r = std::make_unique<Daemon>(name, argv, logs_ + "/" + name + ".log", replicator_env);
  // A replicator retries its connection in the background; only an early exit is a failure.
  if (r->wait_exit(200ms)) {
    return ::testing::AssertionFailure()
           << r->name() << " exited at start: " << describe_status(*r->status()) << "\n"
           << r->log_tail();
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::kill_replicator(int i) {
  auto& r = replicators_[i];
  if (!r) return ::testing::AssertionFailure() << "replicator " << i + 1 << " is not running";
  r->signal(SIGKILL);
  auto st = r->wait_exit(10s);
  r.reset();
  if (!st) return ::testing::AssertionFailure() << "a replicator survived SIGKILL for 10 s";
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::mount_source(uint16_t node_port) {
  unlink(node_port_file_.c_str());  // the port of a previous mount must not be read
  testutil::MountOptions opts;
  opts.binary = backupfs_binary.empty() ? bin_.backupfs : backupfs_binary;
  opts.dir = src_;
  opts.args = with_progress(
      {"--listen", address(node_port), "--port-file", node_port_file_, "--host", node_name,
       "--state-dir", node_state_, "--server-id", server_id_});
  opts.args.insert(opts.args.end(), backupfs_args.begin(), backupfs_args.end());
  opts.log_path = logs_ + "/backupfs.log";
  opts.env = backupfs_env;
  auto m = testutil::MountedFs::mount(opts);
  if (!m) return ::testing::AssertionFailure() << m.error().message;
  mount_ = std::move(*m);
  fuse_pgid_ = mount_->process().pid();
  // backupfs writes its port file right after mounting.
  std::optional<uint16_t> got;
  wait_until(
      [&] {
        got = testutil::read_port_file(node_port_file_);
        return got || !mount_->process().alive() || expired();
      },
      10s, 20ms);
  if (!got) {
    return ::testing::AssertionFailure() << "backupfs mounted but wrote no port file\n"
                                         << mount_->process().log_tail();
  }
  if (node_port != 0 && *got != node_port) {
    return ::testing::AssertionFailure()
           << "backupfs asked for port " << node_port << " wrote " << *got;
  }
  node_port_ = *got;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::register_volume(const std::string& every) {
  std::vector<std::string> args{"register", kHost, std::to_string(node_port_), src_, "--every",
                                every};
  if (!copies.empty()) args.insert(args.end(), {"--copies", copies});
  auto r = bkptool(args);
  if (r.exit_code() != 0) {
    return ::testing::AssertionFailure()
           << "bkptool register: " << (r.timed_out ? "timed out" : describe_status(r.status))
           << "\n" << r.output;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTest::start_all(const std::string& every, bool with_replicators) {
  // Without replicators the mirror is the volume's one copy, so it is not under-replicated.
  if (!with_replicators && copies.empty()) copies = "1";
  if (auto r = start_server(); !r) return r;
  if (with_replicators) {
    if (auto r = start_replicators(); !r) return r;
  }
  if (auto r = mount_source(); !r) return r;
  return register_volume(every);
}

testutil::CommandResult ClusterTest::bkptool(const std::vector<std::string>& args,
                                             std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{bin_.bkptool, "--server", control_socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return testutil::run_command(argv, timeout);
}

Result<int> ClusterTest::unmount_source_status() {
  if (!mount_) return fail(ENOENT, "nothing mounted");
  fuse_pgid_ = 0;
  auto r = mount_->unmount();
  mount_.reset();
  return r;
}

::testing::AssertionResult ClusterTest::unmount_source() {
  if (!mount_) return ::testing::AssertionFailure() << "nothing mounted";
  auto r = unmount_source_status();
  if (!r) return ::testing::AssertionFailure() << r.error().message;
  if (!exited_zero(*r)) {
    return ::testing::AssertionFailure()
           << "backupfs after unmount: " << describe_status(*r) << " (expected exit 0)";
  }
  return ::testing::AssertionSuccess();
}

std::string ClusterTest::scratch_dir(const std::string& name) const { return tmp_->mkdir(name); }

UniqueFd ClusterTest::notify_socket(const std::string& path, int flags) const {
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | flags, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (!fd || path.size() >= sizeof(addr.sun_path)) {
    ADD_FAILURE() << "no notify socket at " << path;
    return UniqueFd();
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "bind " << path << ": " << std::strerror(errno);
    return UniqueFd();
  }
  return fd;
}

std::string ClusterTest::volume_dir(const std::string& name) const {
  return state_ + "/volumes/" + name + "/" + escape_path(src_);
}

std::string ClusterTest::replica(int i) const {
  return roots_[i] + "/" + node_name + "/" + escape_path(src_);
}

std::string ClusterTest::wait_converged(std::chrono::seconds timeout,
                                        const testutil::CompareOptions& options) {
  std::string last;
  auto start = std::chrono::steady_clock::now();
  wait_until(
      [&] {
        std::vector<std::pair<std::string, Daemon*>> running;
        if (backupd_) running.push_back({"backupd", backupd_.get()});
        for (auto& r : replicators_) {
          if (r) running.push_back({r->name(), r.get()});
        }
        if (mount_ && !backupfs_alive) running.push_back({"backupfs", &mount_->process()});
        for (auto& [name, d] : running) {
          if (!d->alive()) {
            last = name + " died (" + describe_status(*d->status()) + ")";
            return true;
          }
        }
        if (backupfs_alive && !backupfs_alive()) {
          last = "backupfs died";
          return true;
        }
        if (expired()) {
          last += " [watchdog]";
          return true;
        }
        std::vector<std::pair<std::string, std::string>> copies;
        if (compare_mirror) copies.push_back({"mirror", mirror()});
        for (int i = 0; i < 2; ++i) {
          if (replicators_[i]) copies.push_back({"replica " + replicators_[i]->name(), replica(i)});
        }
        for (const auto& [what, path] : copies) {
          std::string d = testutil::compare_trees(src_, path, options);
          if (!d.empty()) {
            last = what + ": " + d;
            return false;
          }
        }
        last.clear();
        return true;
      },
      timeout, 200ms);
  if (last.empty()) {
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    fprintf(stderr, "[cluster] converged in %.1f s\n", took.count() / 1000.0);
    return "";
  }
  return "not converged within " + std::to_string(timeout.count()) + " s: " + last;
}

std::optional<std::map<std::string, uint64_t>> ClusterTest::server_stats() const {
  return testutil::read_stats(volume_dir() + "/stats");
}

size_t ClusterTest::server_error_lines() const {
  auto log = testutil::read_file(logs_ + "/backupd.log");
  if (!log) return 0;
  std::istringstream in(*log);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    std::transform(line.begin(), line.end(), line.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (line.find("error") != std::string::npos) ++n;
  }
  return n;
}

std::string ClusterTest::log_text(const std::string& name) const {
  return testutil::read_file(logs_ + "/" + name + ".log").value_or("");
}

std::vector<std::string> ClusterTest::with_progress(std::vector<std::string> args) const {
  if (!progress_every.empty()) {
    args.push_back("--progress-every");
    args.push_back(progress_every);
  }
  return args;
}

void ClusterTest::print_logs() const {
  std::vector<std::string> paths;  // every process's log, the ones a test started itself too
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(logs_, ec)) {
    paths.push_back(entry.path().string());
  }
  std::sort(paths.begin(), paths.end());
  for (const auto& path : paths) {
    auto text = testutil::read_file(path);
    if (!text) continue;
    constexpr size_t kMax = 24000;
    if (text->size() > kMax) {
      size_t cut = text->find('\n', text->size() - kMax);
      *text = "[...]\n" + text->substr(cut == std::string::npos ? text->size() - kMax : cut + 1);
    }
    fprintf(stderr, "\n----- %s -----\n%s\n", path.c_str(), text->c_str());
  }
}

}  // namespace bkp::it
