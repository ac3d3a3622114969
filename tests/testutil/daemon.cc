// Daemon and run_command: fork/exec with everything the child needs prepared before fork(), so
// the child only calls async-signal-safe functions (the test process has threads).
#include "tests/testutil/daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>

namespace bkp::testutil {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

// This process's environment with the "NAME=VALUE" entries of extra replacing or adding to it.
std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
  auto name_of = [](std::string_view entry) { return entry.substr(0, entry.find('=')); };
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool replaced = false;
    for (const auto& x : extra) replaced = replaced || name_of(x) == name_of(entry);
    if (!replaced) out.emplace_back(entry);
  }
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

// In the child: own process group, stdin from /dev/null, stdout to out_fd, stderr to err_fd,
// then exec.
// PR_SET_PDEATHSIG: if the test process is killed outright (a ctest timeout), every daemon it
// started gets SIGTERM, on which backupfs unmounts itself, so not even a SIGKILL of the test
// leaves a mount or a process behind.
[[noreturn]] void exec_child(pid_t parent, int null_fd, int out_fd, int err_fd,
                             char* const* argv, char* const* envp) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(126);  // the parent died before prctl took effect
  dup2(null_fd, STDIN_FILENO);
  dup2(out_fd, STDOUT_FILENO);
  dup2(err_fd, STDERR_FILENO);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execve(argv[0], argv, envp);
  const char* msg = "testutil: exec failed: ";
  (void)!write(STDERR_FILENO, msg, strlen(msg));
  (void)!write(STDERR_FILENO, argv[0], strlen(argv[0]));
  const char* err = strerror(errno);  // not strictly async-signal-safe; good enough on glibc
  (void)!write(STDERR_FILENO, ": ", 2);
  (void)!write(STDERR_FILENO, err, strlen(err));
  (void)!write(STDERR_FILENO, "\n", 1);
  _exit(127);
}

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

}  // namespace

Daemon::Daemon(std::string name, std::vector<std::string> argv, std::string log_path,
               const std::vector<std::string>& env)
    : name_(std::move(name)), log_path_(std::move(log_path)) {
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::system_error(errno, std::generic_category(), "open " + log_path_);
  std::string banner = "=== testutil: starting " + join(argv) + "\n";
  (void)!::write(log_fd, banner.data(), banner.size());
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto args = c_argv(argv);
  std::vector<std::string> environment = merged_environment(env);
  auto envp = c_argv(environment);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_child(parent, null_fd, log_fd, log_fd, args.data(), envp.data());
  int fork_errno = errno;
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) throw std::system_error(fork_errno, std::generic_category(), "fork");
  setpgid(pid, pid);  // also in the child: whichever runs first wins, no race with kill(-pid)
  pid_ = pid;
}

Daemon::~Daemon() { stop(); }

bool Daemon::reap(bool block) {
  if (reaped_) return true;
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    reaped_ = true;
    status_ = st;
  }
  return reaped_;
}

bool Daemon::alive() { return !reap(false); }

void Daemon::signal(int sig) {
  if (!reap(false)) kill(-pid_, sig);
}

std::optional<int> Daemon::wait_exit(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!reap(false)) {
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

int Daemon::stop(std::chrono::milliseconds grace) {
  if (reap(false)) return status_;
  kill(-pid_, SIGTERM);
  if (wait_exit(grace)) return status_;
  fprintf(stderr, "[testutil] %s (pid %d) ignored SIGTERM for %lld ms; killing\n", name_.c_str(),
          pid_, static_cast<long long>(grace.count()));
  kill(-pid_, SIGKILL);
  reap(true);
  return status_;
}

std::optional<int> Daemon::status() const {
  if (!reaped_) return std::nullopt;
  return status_;
}

std::string Daemon::log() const {
  std::ifstream in(log_path_, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Daemon::log_tail(size_t max_bytes) const {
  std::string all = log();
  if (all.size() <= max_bytes) return all;
  size_t start = all.size() - max_bytes;
  size_t nl = all.find('\n', start);
  if (nl != std::string::npos) start = nl + 1;
  return "[...]\n" + all.substr(start);
}

std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    return "signal " + std::to_string(WTERMSIG(st)) + " (" + strsignal(WTERMSIG(st)) + ")";
  }
  return "status " + std::to_string(st);
}

int CommandResult::exit_code() const {
  return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  CommandResult res;
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    res.output = std::string("pipe: ") + strerror(errno);
    return res;
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    res.output = std::string("pipe: ") + strerror(errno);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return res;
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto args = c_argv(argv);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_child(parent, null_fd, out_pipe[1], err_pipe[1], args.data(), environ);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(null_fd);
  if (pid < 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    res.output = std::string("fork: ") + strerror(errno);
    return res;
  }
  setpgid(pid, pid);
  auto deadline = Clock::now() + timeout;
  bool exited = false;
  // [0]: stdout, [1]: stderr; -1 once at end of file.
  int fds[2] = {out_pipe[0], err_pipe[0]};
  std::string* into[2] = {&res.out, &res.err};
  char buf[4096];
  while (!(fds[0] < 0 && fds[1] < 0 && exited)) {
    if (Clock::now() >= deadline) {
      res.timed_out = true;
      if (!exited) kill(-pid, SIGKILL);
      break;
    }
    if (fds[0] >= 0 || fds[1] >= 0) {
      pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
      if (poll(p, 2, 20) > 0) {
        for (int i = 0; i < 2; ++i) {
          if (fds[i] < 0 || p[i].revents == 0) continue;
          ssize_t n = ::read(fds[i], buf, sizeof buf);
          if (n > 0) {
            res.output.append(buf, static_cast<size_t>(n));
            into[i]->append(buf, static_cast<size_t>(n));
          } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            ::close(fds[i]);
            fds[i] = -1;
          }
        }
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!exited) {
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        exited = true;
        res.status = st;
      }
    }
  }
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  if (!exited) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    res.status = st;
  }
  return res;
}

Result<std::string> show_id(const std::vector<std::string>& argv) {
  auto r = run_command(argv, std::chrono::seconds(30));
  std::string id = r.out.substr(0, r.out.find('\n'));
  if (r.exit_code() != 0 || id.size() != 64) {
    return fail(EPROTO, argv[0] + " --show-id: " + r.output);
  }
  return id;
}

}  // namespace bkp::testutil
