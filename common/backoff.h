// Backoff: how long a process waits before its next attempt to reach a peer that is away.
//
// Why not plain doubling: most outages are restarts (an upgrade, a crash brought back by its
// supervisor), and a peer back after 0.4 s was found only after 1.5 s of doubled waits, which
// was most of what a restart cost (bench/RESULTS.md, section 5). So the first seconds of an
// outage retry at the minimum period (a refused connect to a local or LAN address costs next to
// nothing), and only a longer outage doubles the wait up to the maximum, so a peer down for a
// day costs a connect every `max`.
//
// Not thread-safe: one thread owns it.
#pragma once

#include <algorithm>
#include <chrono>

namespace bkp {

class Backoff {
 public:
  using Ms = std::chrono::milliseconds;

  Backoff(Ms min, Ms max, Ms fast_window) : min_(min), max_(max), fast_window_(fast_window) {}

  // Progress was made (a session committed something): the next failure starts a new outage.
  void reset() {
    in_outage_ = false;
    wait_ = min_;
  }

  // The wait before the next attempt, after a failed one.
  Ms next() {
    auto now = std::chrono::steady_clock::now();
    if (!in_outage_) {
      in_outage_ = true;
      since_ = now;
    }
    if (now - since_ < fast_window_) return min_;
    wait_ = std::min(wait_ * 2, max_);
    return wait_;
  }

 private:
  const Ms min_, max_, fast_window_;
  bool in_outage_ = false;
  std::chrono::steady_clock::time_point since_{};
  Ms wait_ = min_;
};

}  // namespace bkp
