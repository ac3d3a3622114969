// The scheduler thread and its run threads (see scheduler.h for the timing rules).
//
// The scheduler thread only decides: it sleeps until the earliest due volume (or a change to
// the table), launches that volume's run on a thread of its own, and joins run threads that
// have finished. Runs do the work: they may wait for a batch boundary or spend minutes in gzip,
// and doing that on the scheduler thread would delay every other volume. Each run thread, as
// its last act, computes its volume's next time and hands its own std::thread object to
// finished_ for the scheduler to join, so no thread ever joins itself.
//
// The run row is inserted before the run does anything, so a kill -9 in the middle leaves an
// open row that startup recovery closes as failed "interrupted (backupd stopped during the run)".
// A run whose row cannot be inserted or closed (the catalog's disk is full) is still performed
// or failed as usual and kept by the Catalog in memory; the scheduler thread retries storing it
// every kCatalogRetryMs until it succeeds.
#include "server/scheduler.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/log.h"

namespace bkp::server {
namespace {

constexpr int64_t kIdleWakeMs = 60000;
// While the catalog keeps runs it could not store, it is retried this often even when no run
// is due, so history is complete soon after space returns.
constexpr int64_t kCatalogRetryMs = 5000;

}  // namespace

int64_t resume_time(const Registration& reg, std::optional<int64_t> last_run_started, int64_t now) {
  int64_t period = reg.every_seconds * 1000;
  int64_t next = last_run_started.value_or(reg.registered_at) + period;
  if (next > now) return next;
  return now + std::min(period, kCatchUpDelayMs);
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
  thread_ = std::thread([this] { loop(); });
}

void Scheduler::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [key, e] : entries_) {
      e->cancel_reason = CancelReason::kStopping;
      e->cancel = true;
    }
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return running_ == 0; });
  join_finished(lock);
}

void Scheduler::add(const Registration& reg, std::shared_ptr<Volume> volume,
                    std::shared_ptr<Link> link, int64_t first_run_ms) {
  auto e = std::make_shared<Entry>();
  e->reg = reg;
  e->volume = std::move(volume);
  e->link = std::move(link);
  e->next_ms = first_run_ms;
  std::lock_guard lock(mu_);
  entries_[reg.key()] = e;
  cv_.notify_all();
}

void Scheduler::remove(const std::string& key) {
  std::unique_lock lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  std::shared_ptr<Entry> e = it->second;
  entries_.erase(it);
  e->cancel_reason = CancelReason::kUnregistered;
  e->cancel = true;
  e->volume->batch_done.notify_all();
  cv_.wait(lock, [&] { return !e->running; });
  join_finished(lock);
}

std::optional<int64_t> Scheduler::next_run(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second->next_ms;
}

Result<RunRecord> Scheduler::run_now(const std::string& key, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return fail(ENOENT, key + " is not scheduled");
  std::shared_ptr<Entry> e = it->second;
  const uint64_t want = e->launched + 1;
  e->requested = true;
  cv_.notify_all();
  const bool ended = cv_.wait_for(lock, timeout, [&] {
    return e->finished >= want || stopping_ || !entries_.contains(key) ||
           entries_.at(key) != e;
  });
  if (e->finished >= want) return e->last;
  if (stopping_) return fail(ECANCELED, "backupd is stopping");
  if (!ended) return fail(ETIMEDOUT, fmt::format("the run of {} did not end within {} s", key,
                                                 timeout.count() / 1000));
  return fail(ENOENT, key + " was unregistered");
}

void Scheduler::loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    join_finished(lock);
    if (stopping_) break;
    if (retry_catalog_at_ != 0 && retry_catalog_at_ <= wall_ms()) {
      lock.unlock();
      bool all_stored = catalog_.flush_unrecorded() == 0;
      lock.lock();
      retry_catalog_at_ = all_stored ? 0 : wall_ms() + kCatalogRetryMs;
    }
    int64_t now = wall_ms();
    int64_t wake = now + kIdleWakeMs;
    if (retry_catalog_at_ != 0) wake = std::min(wake, retry_catalog_at_);
    for (auto& [key, e] : entries_) {
      if (e->running) continue;
      if (settings_.serving && !settings_.serving(key)) continue;  // leaving this server
      if (e->next_ms <= now) {
        launch(e, e->next_ms, /*manual=*/false);
      } else if (e->requested) {
        launch(e, now, /*manual=*/true);
      } else {
        wake = std::min(wake, e->next_ms);
      }
    }
    // Wall-clock deadline: a clock step is noticed at the next wake-up, at most kIdleWakeMs away.
    cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(1, wake - now)));
  }
}

void Scheduler::launch(const std::shared_ptr<Entry>& e, int64_t due, bool manual) {
  e->running = true;
  e->requested = false;  // a due run serves a request as well: it starts after it
  if (!manual) e->next_ms = due + e->reg.every_seconds * 1000;  // shown meanwhile; fixed at the end
  ++running_;
  const uint64_t number = ++e->launched;
  e->thread = std::thread([this, e, due, manual, number] { execute(e, due, manual, number); });
}

void Scheduler::execute(const std::shared_ptr<Entry>& e, int64_t due, bool manual,
                        uint64_t number) {
  Volume& v = *e->volume;
  int64_t started = wall_ms();
  auto run_id = catalog_.begin_run(v.host(), v.path(), started);
  RunRecord record = run_id ? perform_run(v, *e->link, catalog_, settings_, e->cancel,
                                          e->cancel_reason, *run_id, started)
                            : failed_run(v, started, run_id.error().message);
  if (settings_.replication_note) {
    if (auto note = settings_.replication_note(v.name())) {
      record.error = record.error ? *record.error + "; " + *note : *note;
    }
  }
  bool stored = true;
  if (auto done = catalog_.record_run(record); !done) {
    stored = false;
    log::error("run {}: cannot store the run in the catalog yet (kept in memory until it can): {}",
               v.name(), done.error().message);
  }
  log::info("run {}: {}", v.name(), describe_run(record));

  std::lock_guard lock(mu_);
  if (!stored) retry_catalog_at_ = wall_ms() + kCatalogRetryMs;
  if (!manual) {
    int64_t period = e->reg.every_seconds * 1000;
    int64_t now = wall_ms();
    int64_t next = due + period;
    if (next <= now) next += ((now - next) / period + 1) * period;
    e->next_ms = next;
  }
  e->finished = number;
  e->last = std::move(record);
  e->running = false;
  --running_;
  finished_.push_back(std::move(e->thread));
  cv_.notify_all();
}

void Scheduler::join_finished(std::unique_lock<std::mutex>& lock) {
  while (!finished_.empty()) {
    std::vector<std::thread> done = std::move(finished_);
    finished_.clear();
    lock.unlock();
    for (auto& t : done) {
      if (t.joinable()) t.join();
    }
    lock.lock();
  }
}

}  // namespace bkp::server
