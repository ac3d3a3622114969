// VerifyScheduler: verifies every registered volume on a schedule (backupd.toml
// verify_every_seconds), recorded in the history like the ones bkptool asks for.
//
// One thread, one verify at a time, volume after volume: a verify reads whole trees (and with
// verify_read_data every byte of every copy), so running them side by side would only compete
// for the same disks. It never waits for anything a snapshot or the ingest holds (verify.h), so
// neither is delayed by it. A volume is due one period after its last verify began (any, asked
// or scheduled), or, never verified, one period after backupd started, so a restart does not
// verify everything at once. Registrations made meanwhile are noticed within kRescan.
//
// Thread-safety: start() and stop() from the owning thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>

#include "server/registry.h"
#include "server/verify.h"

namespace bkp::server {

// When a volume is next due (ms): its last verify's start plus the period, or, if it was never
// verified, `since_ms` plus the period.
int64_t next_verify_ms(std::optional<int64_t> last_started_ms, int64_t since_ms, int64_t every_ms);

class VerifyScheduler {
 public:
  static constexpr auto kRescan = std::chrono::minutes(1);

  VerifyScheduler(Registry& registry, std::chrono::seconds every, VerifyOptions options);
  ~VerifyScheduler();  // stop()
  VerifyScheduler(const VerifyScheduler&) = delete;
  VerifyScheduler& operator=(const VerifyScheduler&) = delete;

  void start();
  // Ends the waits of a running verify and joins (a walk in progress is finished first).
  void stop();

 private:
  void main();
  // Verifies every due volume; returns when the next one is due.
  int64_t run_due(int64_t now_ms);

  Registry& registry_;
  const int64_t every_ms_;
  const VerifyOptions options_;
  const int64_t started_ms_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace bkp::server
