// TakeoverTest and LogWorkload (see takeover.h). The worker is found through /proc: the
// keeper's children (every thread's, in case the keeper forks from another one), minus zombies
// (a killed worker the keeper has not reaped yet) and minus anything without --worker. It counts
// as serving only once the keeper logged so, after the restart was asked for.
#include "tests/integration/takeover.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string_view>

#include "common/unique_fd.h"
#include "tests/integration/workload.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::wait_until;

// Children of every thread of pid that are not zombies.
std::vector<pid_t> live_children(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "children");
    for (pid_t child; in >> child;) {
      std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
      std::string line;
      std::getline(stat, line);
      size_t paren = line.rfind(") ");  // the command name may hold spaces and parentheses
      if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z') {
        out.push_back(child);
      }
    }
  }
  return out;
}

bool is_worker(pid_t pid) {
  auto cmdline = testutil::read_file("/proc/" + std::to_string(pid) + "/cmdline");
  if (!cmdline) return false;
  std::istringstream args(*cmdline);
  for (std::string arg; std::getline(args, arg, '\0');) {
    if (arg.rfind("--worker", 0) == 0) return true;
  }
  return false;
}

}  // namespace

const char* name_of(Restart how) {
  return how == Restart::kKillWorker ? "kill -9 of the worker" : "SIGHUP to the keeper";
}

std::string errno_text(int err) { return err == 0 ? "no errno" : std::strerror(err); }

std::optional<std::vector<std::string>> list_from_start(DIR* dir) {
  ::rewinddir(dir);
  std::vector<std::string> names;
  for (int i = 0; i < 100000; ++i) {  // a test directory holds a handful of entries
    errno = 0;
    const dirent* e = ::readdir(dir);
    if (e == nullptr) {
      if (errno != 0) return std::nullopt;
      std::sort(names.begin(), names.end());
      return names;
    }
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      names.emplace_back(e->d_name);
    }
  }
  errno = EOVERFLOW;
  return std::nullopt;
}

// ---- TakeoverTest

std::optional<pid_t> TakeoverTest::serving_worker(size_t from) {
  std::vector<pid_t> workers;
  for (pid_t child : live_children(keeper())) {
    if (is_worker(child)) workers.push_back(child);
  }
  if (workers.size() != 1) return std::nullopt;
  std::string log = log_text("backupfs");
  std::string line = "worker " + std::to_string(workers[0]) + " serving";
  if (log.size() < from || log.find(line, from) == std::string::npos) return std::nullopt;
  return workers[0];
}

::testing::AssertionResult TakeoverTest::wait_new_worker(pid_t old, size_t from, pid_t* worker) {
  std::optional<pid_t> got;
  wait_until(
      [&] {
        got = serving_worker(from);
        return (got && *got != old) || !mount()->process().alive() || expired();
      },
      kRestartTimeout, 10ms);
  if (got && *got != old) {
    *worker = *got;
    return ::testing::AssertionSuccess();
  }
  std::string children;
  bool alive = mount()->process().alive();
  if (alive) {
    for (pid_t c : live_children(keeper())) children += " " + std::to_string(c);
  }
  return ::testing::AssertionFailure()
         << "no new worker serving (the old one: " << (old == 0 ? "none" : std::to_string(old))
         << ") within " << kRestartTimeout.count() << " s; the keeper (" << keeper() << ") is "
         << (alive ? "alive" : "dead") << ", its live children:"
         << (children.empty() ? " none" : children) << " (backupfs's log is printed below)";
}

::testing::AssertionResult TakeoverTest::restart(Restart how, pid_t* worker) {
  pid_t old = *worker;
  size_t from = log_end();
  // Signals one process, never the group: SIGHUP must reach the keeper alone.
  int rc = how == Restart::kKillWorker ? ::kill(old, SIGKILL) : ::kill(keeper(), SIGHUP);
  if (rc != 0) return ::testing::AssertionFailure() << name_of(how) << ": " << errno_text(errno);
  return wait_new_worker(old, from, worker);
}

// ---- ErrorTally

void ErrorTally::add(const std::string& op, const std::string& path, int err) {
  std::lock_guard lock(mu_);
  Seen& seen = seen_[op + " " + path + ": " + errno_text(err)];
  if (seen.count++ == 0) seen.first_phase = phase_;
}

void ErrorTally::set_phase(std::string phase) {
  std::lock_guard lock(mu_);
  phase_ = std::move(phase);
}

size_t ErrorTally::total() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [what, seen] : seen_) n += seen.count;
  return n;
}

std::string ErrorTally::report() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [what, seen] : seen_) {
    out += "  " + what + " (x" + std::to_string(seen.count) + ", first " + seen.first_phase +
           ")\n";
  }
  return out;
}

// ---- LogWorkload

std::string LogWorkload::record(uint64_t i) { return random_string(kRecord, 1000 + i); }

LogWorkload::LogWorkload(std::string root) : root_(std::move(root)) {
  writer_ = std::thread([this] { run("writer", [this] { write_loop(); }); });
  reader_ = std::thread([this] { run("reader", [this] { read_loop(); }); });
}

LogWorkload::~LogWorkload() {
  request_stop();
  join();
}

bool LogWorkload::stop(std::chrono::milliseconds timeout) {
  request_stop();
  return wait_until([&] { return running_ == 0; }, timeout, 10ms);
}

void LogWorkload::join() {
  if (writer_.joinable()) writer_.join();
  if (reader_.joinable()) reader_.join();
}

void LogWorkload::run(const char* who, const std::function<void()>& loop) {
  try {
    loop();
  } catch (const std::exception& e) {
    errors_.add(who, std::string("threw ") + e.what(), 0);
  }
  --running_;
}

void LogWorkload::request_stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

bool LogWorkload::stopping() {
  std::lock_guard lock(mu_);
  return stop_;
}

bool LogWorkload::check(int rc, const std::string& op, const std::string& rel) {
  if (rc != 0) errors_.add(op, "w/" + rel, errno);
  return rc == 0;
}

void LogWorkload::write_loop() {
  UniqueFd fd;
  for (uint64_t i = 0; !stopping();) {
    if (!fd) fd.reset(::open(path("log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!check(fd ? 0 : -1, "open", "log")) continue;
    std::string data = record(i);
    ssize_t n = ::pwrite(fd.get(), data.data(), kRecord, static_cast<off_t>(i * kRecord));
    if (n != static_cast<ssize_t>(kRecord)) {
      errors_.add(n < 0 ? "pwrite" : "short pwrite", "w/log", n < 0 ? errno : 0);
      continue;
    }
    if (!check(::fsync(fd.get()), "fsync", "log")) continue;
    ++i;
    {
      std::lock_guard lock(mu_);
      records_ = i;
    }
    cv_.notify_all();
    if (i % kNamespaceEvery == 0) namespace_step(i / kNamespaceEvery);
  }
  if (fd) check(::close(fd.release()), "close", "log");
}

void LogWorkload::namespace_step(uint64_t j) {
  std::string content = "cur " + std::to_string(j);
  UniqueFd tmp(::open(path("tmp").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (check(tmp ? 0 : -1, "open", "tmp")) {
    ssize_t n = ::write(tmp.get(), content.data(), content.size());
    if (n != static_cast<ssize_t>(content.size())) errors_.add("write", "w/tmp", n < 0 ? errno : 0);
    check(::close(tmp.release()), "close", "tmp");
  }
  check(::rename(path("tmp").c_str(), path("cur").c_str()), "rename w/tmp to", "cur");
  std::string n = "n" + std::to_string(j), d = "d" + std::to_string(j);
  int fd = ::open(path(n).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (check(fd >= 0 ? 0 : -1, "open O_EXCL", n)) check(::close(fd), "close", n);
  check(::mkdir(path(d).c_str(), 0755), "mkdir", d);
  if (j > 1) {
    std::string prev = std::to_string(j - 1);
    check(::unlink(path("n" + prev).c_str()), "unlink", "n" + prev);
    check(::rmdir(path("d" + prev).c_str()), "rmdir", "d" + prev);
  }
}

void LogWorkload::read_loop() {
  for (uint64_t pass = 0;; ++pass) {
    uint64_t n;
    {
      std::unique_lock lock(mu_);
      // From the first record on, when w/log exists.
      cv_.wait(lock,
               [&] { return stop_ || (records_ > 0 && pass < kReaderPassesPerRecord * records_); });
      if (stop_) return;
      n = records_;
    }
    read_log(n, pass);
    read_cur();
    list_w();
  }
}

// Stats and opens w/log, checks its size covers the n records fsync'd, and reads back the last
// of them and one other.
void LogWorkload::read_log(uint64_t n, uint64_t pass) {
  struct stat st {};
  check(::stat(path("log").c_str(), &st), "stat", "log");
  UniqueFd fd(::open(path("log").c_str(), O_RDONLY | O_CLOEXEC));
  if (!check(fd ? 0 : -1, "open (reader)", "log")) return;
  if (check(::fstat(fd.get(), &st), "fstat", "log") &&
      static_cast<uint64_t>(st.st_size) < n * kRecord) {
    errors_.add("fstat", "w/log: size " + std::to_string(st.st_size) + " < " +
                             std::to_string(n) + " records", 0);
  }
  std::vector<uint64_t> which;
  if (n > 0) which = {n - 1, pass * 7919 % n};
  for (uint64_t i : which) {
    std::string got(kRecord, '\0');
    ssize_t r = ::pread(fd.get(), got.data(), kRecord, static_cast<off_t>(i * kRecord));
    if (r < 0) {
      errors_.add("pread", "w/log", errno);
    } else if (got != record(i)) {
      errors_.add("pread", "w/log: record " + std::to_string(i) + " differs", 0);
    }
  }
  check(::close(fd.release()), "close (reader)", "log");
}

// w/cur always holds some step's whole content: each is written before its rename.
void LogWorkload::read_cur() {
  UniqueFd fd(::open(path("cur").c_str(), O_RDONLY | O_CLOEXEC));
  if (!check(fd ? 0 : -1, "open", "cur")) return;
  char buf[64];
  ssize_t n = ::read(fd.get(), buf, sizeof buf);
  if (n < 0) {
    errors_.add("read", "w/cur", errno);
  } else if (std::string_view(buf, static_cast<size_t>(n)).rfind("cur ", 0) != 0) {
    errors_.add("read", "w/cur: \"" + std::string(buf, static_cast<size_t>(n)) + "\"", 0);
  }
  check(::close(fd.release()), "close", "cur");
}

void LogWorkload::list_w() {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir((root_ + "/w").c_str()), ::closedir);
  if (!check(dir ? 0 : -1, "opendir", "")) return;
  auto names = list_from_start(dir.get());
  if (!names) {
    errors_.add("readdir", "w", errno);
  } else if (!std::binary_search(names->begin(), names->end(), "log") ||
             !std::binary_search(names->begin(), names->end(), "cur")) {
    errors_.add("readdir", "w: log or cur missing", 0);
  }
  check(::closedir(dir.release()), "closedir", "");
}

}  // namespace bkp::it
