// TakeoverTest: ClusterTest for a backupfs that restarts under a live mount (issue 11), and
// LogWorkload, the application takeover_test.cc keeps busy across those restarts.
//
// The contract tested: `backupfs DIR ... -f` (the Daemon the fixture starts) is a keeper that
// mounts, holds /dev/fuse and runs the real server as a worker child (`backupfs ... --worker...`).
// A SIGKILLed worker is replaced; SIGHUP to the keeper upgrades (the worker drains and exits, the
// keeper execs its binary again and starts a new one). Either way the keeper logs
// `worker PID serving` once the new worker has taken over the FUSE connection.
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/cluster.h"

namespace bkp::it {

// For a new worker to serve after a restart, and for the application to get on after it.
constexpr auto kRestartTimeout = 30s;

enum class Restart { kKillWorker, kUpgrade };
const char* name_of(Restart how);  // "kill -9 of the worker", "SIGHUP to the keeper"

// strerror(err), or "no errno" for 0 (a failure that is not a failed call, e.g. wrong data).
std::string errno_text(int err);

// Names in a directory stream from its start (rewinddir), sorted, without "." and "..";
// nullopt (errno set) if readdir fails.
std::optional<std::vector<std::string>> list_from_start(DIR* dir);

class TakeoverTest : public ClusterTest {
 protected:
  pid_t keeper() { return mount()->process().pid(); }

  // The keeper's one live worker (a non-zombie child with a --worker argument), if the log
  // says "worker PID serving" at or after byte `from` of backupfs's log: the byte offset of the
  // log taken before a restart keeps a reused pid from matching an old line.
  std::optional<pid_t> serving_worker(size_t from);
  // Waits up to kRestartTimeout for a serving worker other than old (0: any), logged at or after
  // byte from, and sets *worker to it. Gives up early if the keeper dies or the watchdog fires.
  ::testing::AssertionResult wait_new_worker(pid_t old, size_t from, pid_t* worker);
  // Kills *worker or sends SIGHUP to the keeper, then wait_new_worker().
  ::testing::AssertionResult restart(Restart how, pid_t* worker);
  // The current size of backupfs's log: where a restart's lines start.
  size_t log_end() const { return log_text("backupfs").size(); }
};

// Failed calls of an application, counted by "op path: error", each with the phase of the test
// it first happened in (which restart). Thread-safe.
class ErrorTally {
 public:
  void add(const std::string& op, const std::string& path, int err);
  void set_phase(std::string phase);  // "before any restart" until set
  size_t total() const;
  // One "  op path: error (xN, first PHASE)" line each; "" if none.
  std::string report() const;

 private:
  struct Seen {
    size_t count = 0;
    std::string first_phase;
  };
  mutable std::mutex mu_;
  std::string phase_ = "before any restart";  // guarded by mu_
  std::map<std::string, Seen> seen_;          // guarded by mu_
};

// An application on two threads under ROOT/w, which must exist with a file w/cur in it.
//
// The writer appends record after record (record(i), kRecord bytes) to w/log: pwrite at the
// record's offset, then fsync, so a record whose call failed is retried in place. After every
// kNamespaceEvery records it takes a namespace step: w/tmp written and renamed over w/cur, n<j>
// created with O_EXCL and n<j-1> unlinked, d<j> made and d<j-1> removed.
// The reader stats, opens and reads back fsync'd records of w/log (checking their bytes), reads
// w/cur (also while a step renames over it: an open that looked up the replaced file must still
// succeed) and lists w. From the first record on, it runs at most kReaderPassesPerRecord passes
// per record written, so it keeps requests in flight without starving the daemons of a 2-core
// machine.
// Both go on after a failed call, counting it in errors().
class LogWorkload {
 public:
  static constexpr size_t kRecord = 4096;
  static constexpr uint64_t kNamespaceEvery = 4;
  static constexpr uint64_t kReaderPassesPerRecord = 4;
  static std::string record(uint64_t i);  // the same bytes every time

  explicit LogWorkload(std::string root);  // starts both threads
  ~LogWorkload();                          // stop(), then join(): call stop() first if it may block
  LogWorkload(const LogWorkload&) = delete;
  LogWorkload& operator=(const LogWorkload&) = delete;

  uint64_t records() const { return records_; }  // written and fsync'd
  bool both_running() const { return running_ == 2; }
  ErrorTally& errors() { return errors_; }
  // Asks both threads to stop. True once both returned; false if one is still in a call (on a
  // hung mount) after timeout: unblock it (kill backupfs), then join().
  bool stop(std::chrono::milliseconds timeout);
  void join();

 private:
  std::string path(const std::string& rel) const { return root_ + "/w/" + rel; }
  void run(const char* who, const std::function<void()>& loop);
  void request_stop();
  bool stopping();
  // True if rc == 0; otherwise counts op on w/rel with errno.
  bool check(int rc, const std::string& op, const std::string& rel);
  void write_loop();
  void namespace_step(uint64_t j);
  void read_loop();
  void read_log(uint64_t n, uint64_t pass);
  void read_cur();
  void list_w();

  const std::string root_;
  ErrorTally errors_;
  std::atomic<int> running_{2};
  std::mutex mu_;
  std::condition_variable cv_;          // records_ grew or stop_ was set
  std::atomic<uint64_t> records_{0};  // stored under mu_ too, for the reader's wait
  bool stop_ = false;                 // guarded by mu_
  std::thread writer_, reader_;       // last: started once everything above exists
};

}  // namespace bkp::it
