// Recorder: the FUSE side's handle on the volume's ChangeLog. It forwards every recording
// unchanged and remembers when the log went from empty to non-empty, which is where the lag that
// NodeStatus reports (the age of the oldest unacknowledged change) starts.
//
// The ChangeLog itself has no clock (backupd's per-replica logs do not need one), and sampling
// the log from the session thread would date a change by when someone looked, not when it
// happened. Here the cost is one relaxed atomic load per recorded change, plus one clock read
// and compare-exchange for the first change after each take.
//
// Thread-safety: every method may be called from any thread. The timestamp is set *after* the
// change is in the log, so a change can never sit in the log with no timestamp covering it; the
// worst case is a timestamp left behind for a change that was already taken, which makes the
// reported lag too old, never too young (callers ignore it while the log is empty).
#pragma once

#include <atomic>
#include <cstdint>
#include <shared_mutex>

#include "common/changes/change_log.h"
#include "common/wire/messages.h"

namespace bkp::fs {

class Recorder {
 public:
  explicit Recorder(changes::ChangeLog& log) : log_(log) {}
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // The ChangeLog's recording methods, same contracts.
  void record(wire::Op op) {
    log_.record(std::move(op));
    mark();
  }
  void write(const changes::FileRef& file, uint64_t offset, uint64_t length) {
    log_.write(file, offset, length);
    mark();
  }
  void attrs(const changes::FileRef& file) {
    log_.attrs(file);
    mark();
  }
  void truncate(const changes::FileRef& file, uint64_t size) {
    log_.truncate(file, size);
    mark();
  }
  std::shared_mutex& namespace_lock() { return log_.namespace_lock(); }

  // CLOCK_REALTIME nanoseconds of the first change recorded since the last reset_since(); 0 if
  // none. Meaningful only while the log is non-empty.
  int64_t since_ns() const { return since_ns_.load(std::memory_order_relaxed); }
  // Returns since_ns() and starts a new period. Call right *before* ChangeLog::take() or
  // clear(), so a change recorded in between is dated by the next period (too old at worst).
  int64_t reset_since() { return since_ns_.exchange(0); }

 private:
  void mark();

  changes::ChangeLog& log_;
  std::atomic<int64_t> since_ns_{0};
};

}  // namespace bkp::fs
