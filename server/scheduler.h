// Scheduler: runs every registered volume's backup every `every_seconds`, on its own thread.
//
// Timing (wall clock, milliseconds):
//   - after `register`: the first run is one period after the registration;
//   - after a restart: next = (start of the volume's last run, or its registration time if it
//     never ran) + period. If that moment passed while backupd was down, ONE catch-up run
//     happens min(period, 10 s) after startup (time for the link to connect), not one per
//     missed period; the schedule then continues from that run.
//   - after a run that was due at D: next = D + k * period, the first such time still in the
//     future, so a run that takes longer than its period skips ticks instead of piling up.
// A volume has at most one run at a time. Runs of different volumes proceed in parallel, each
// on its own short-lived thread, so a slow archive of one volume never delays another's run.
//
// Every run is a catalog row inserted when it starts and closed when it ends, plus one info
// line in the journal: "run web1:/srv/app: written 20261126T010203.123Z.tgz 12.3 MiB in 0.8 s",
// "run web1:/srv/app: unchanged", "run web1:/srv/app: failed: <reason>".
//
// Thread-safety: all public methods are safe from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "server/backup_run.h"
#include "server/catalog.h"
#include "server/link.h"
#include "server/volume.h"

namespace bkp::server {

constexpr int64_t kCatchUpDelayMs = 10000;

// When the first run after startup is due (see the timing rules above).
int64_t resume_time(const Registration& reg, std::optional<int64_t> last_run_started, int64_t now);

class Scheduler {
 public:
  Scheduler(Catalog& catalog, RunSettings settings) : catalog_(catalog), settings_(settings) {}
  ~Scheduler();  // stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void start();
  // Cancels runs in progress (they are recorded failed "interrupted ..."), waits for them and
  // for the scheduler thread. Idempotent.
  void stop();

  // Schedules a volume whose first run is at first_run_ms. Replaces nothing: the caller adds a
  // key once (Registry guarantees it).
  void add(const Registration& reg, std::shared_ptr<Volume> volume, std::shared_ptr<Link> link,
           int64_t first_run_ms);
  // Unschedules; a run in progress is cancelled and waited for.
  void remove(const std::string& key);
  // The next run's time, nullopt if not scheduled.
  std::optional<int64_t> next_run(const std::string& key) const;
  // Runs the volume now, out of schedule (`bkptool run`, `restore --live`), and returns that
  // run's record once it ended: a run that starts after this call, so its cut is later than
  // the call (one in progress is waited for first). The schedule is not moved. ENOENT if the
  // volume is not scheduled (or is unscheduled meanwhile); ETIMEDOUT after timeout; ECANCELED
  // when backupd stops first.
  Result<RunRecord> run_now(const std::string& key, std::chrono::milliseconds timeout);

 private:
  struct Entry {
    Registration reg;
    std::shared_ptr<Volume> volume;
    std::shared_ptr<Link> link;
    int64_t next_ms = 0;
    bool running = false;
    bool requested = false;   // run_now() asked for a run out of schedule
    uint64_t launched = 0;    // runs started, numbering them
    uint64_t finished = 0;    // the number of the last run that ended
    RunRecord last;           // its record
    std::thread thread;  // the run in progress, moved to finished_ when it ends
    std::atomic<bool> cancel{false};
    std::atomic<CancelReason> cancel_reason{CancelReason::kNone};
  };

  void loop();
  // manual: asked by run_now(), the schedule stays as it is.
  void launch(const std::shared_ptr<Entry>& e, int64_t due, bool manual);  // mu_ held
  void execute(const std::shared_ptr<Entry>& e, int64_t due, bool manual, uint64_t number);
  void join_finished(std::unique_lock<std::mutex>& lock);

  Catalog& catalog_;
  const RunSettings settings_;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool stopping_ = false;
  std::map<std::string, std::shared_ptr<Entry>> entries_;  // by Registration::key()
  std::vector<std::thread> finished_;            // run threads that ended, to be joined
  size_t running_ = 0;
  int64_t retry_catalog_at_ = 0;  // when to retry storing runs the catalog keeps; 0: none kept
};

}  // namespace bkp::server
