// Daemon: one real binary started by a test, in its own process group.
//
// stdout and stderr go to a log file (appended, so a restarted daemon keeps one log) that the
// test reads back: to match logged errors, and to print on failure. Stopping signals the whole
// group (SIGTERM, then SIGKILL after a grace period), so helpers the daemon spawned go too. Only
// the group this object created is ever signalled, and never after its leader was reaped.
//
// If the test process dies without cleaning up (killed by a ctest timeout), the daemon gets
// SIGTERM from the kernel (PR_SET_PDEATHSIG). That signal follows the *thread* that started the
// daemon, so start daemons from the test's main thread only.
//
// Not thread-safe: one test thread owns a Daemon.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace bkp::testutil {

class Daemon {
 public:
  // Starts argv[0] (a path) with argv, in this process's environment plus env ("NAME=VALUE"
  // entries, each replacing a variable of that name). If exec fails, the child logs why and
  // exits 127, so the failure shows up as !alive() plus a readable log.
  Daemon(std::string name, std::vector<std::string> argv, std::string log_path,
         const std::vector<std::string>& env = {});
  ~Daemon();  // stop()
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }

  // False once the process exited (it is reaped then, and its status kept).
  bool alive();
  // Sends sig to the process group, if the leader is still running.
  void signal(int sig);
  // Waits up to timeout for the process to exit. The raw wait status, or nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // SIGTERM to the group, wait up to grace, then SIGKILL and wait. Returns the wait status.
  // Idempotent: a second call returns the same status.
  int stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // The wait status, once exited.
  std::optional<int> status() const;

  std::string log() const;
  // The last max_bytes of the log, cut at a line start.
  std::string log_tail(size_t max_bytes = 16384) const;

 private:
  bool reap(bool block);

  std::string name_;
  std::string log_path_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// "exit 0", "exit 1", "signal 9 (Killed)".
std::string describe_status(int wait_status);

struct CommandResult {
  int status = -1;     // raw wait status; -1 if it could not be started
  std::string output;  // stdout and stderr, in the order they were read
  std::string out;     // stdout alone (a --json document)
  std::string err;     // stderr alone (messages)
  bool timed_out = false;

  // The exit code, or -1 if the command did not exit normally.
  int exit_code() const;
};

// Runs argv to completion (killing its process group after timeout) and captures its output.
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

// The identity argv (a daemon's command line with --show-id) prints (made on first use), or an
// error with its output.
Result<std::string> show_id(const std::vector<std::string>& argv);

}  // namespace bkp::testutil
