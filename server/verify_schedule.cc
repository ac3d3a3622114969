// The verify schedule (see verify_schedule.h): wake when the next volume is due (or kRescan
// later, for registrations made meanwhile), verify what is due, sleep again.
#include "server/verify_schedule.h"

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"

namespace bkp::server {

int64_t next_verify_ms(std::optional<int64_t> last_started_ms, int64_t since_ms, int64_t every_ms) {
  return last_started_ms.value_or(since_ms) + every_ms;
}

VerifyScheduler::VerifyScheduler(Registry& registry, std::chrono::seconds every,
                                 VerifyOptions options)
    : registry_(registry),
      every_ms_(std::chrono::duration_cast<std::chrono::milliseconds>(every).count()),
      options_(options),
      started_ms_(wall_ms()) {}

VerifyScheduler::~VerifyScheduler() { stop(); }

void VerifyScheduler::start() {
  log::info("verifying every volume every {} s{}", every_ms_ / 1000,
            options_.read_data ? ", contents included" : "");
  thread_ = std::thread([this] { main(); });
}

void VerifyScheduler::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void VerifyScheduler::main() {
  while (!stopping_) {
    const int64_t now = wall_ms();
    const int64_t rescan = std::chrono::duration_cast<std::chrono::milliseconds>(kRescan).count();
    const int64_t next = std::min(run_due(now), now + rescan);
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(0, next - wall_ms())),
                 [this] { return stopping_.load(); });
  }
}

int64_t VerifyScheduler::run_due(int64_t now_ms) {
  int64_t next = now_ms + every_ms_;
  auto volumes = registry_.list();
  if (!volumes) {
    log::error("scheduled verify: {}", volumes.error().message);
    return next;
  }
  for (const auto& view : *volumes) {
    if (stopping_) break;
    const Registration& reg = view.reg;
    auto last = registry_.catalog().verify_runs(reg.host, reg.path, 1);
    std::optional<int64_t> last_started;
    if (last && !last->empty()) last_started = last->front().started_at;
    const int64_t due = next_verify_ms(last_started, started_ms_, every_ms_);
    if (due > wall_ms()) {
      next = std::min(next, due);
      continue;
    }
    auto target = registry_.verify_target(reg.host, reg.path);
    if (!target) continue;  // unregistered meanwhile
    verify_volume(*target, registry_, options_, stopping_);
    next = std::min(next, wall_ms() + every_ms_);
  }
  return next;
}

}  // namespace bkp::server
