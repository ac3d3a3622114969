// wait_until: the only way tests wait for something another process does. Polls a predicate
// until it holds or a deadline passes; never an unconditional sleep, never unbounded.
#pragma once

#include <chrono>
#include <thread>

namespace bkp::testutil {

// True as soon as pred() is true; false if it is still false at the deadline (checked once
// more at the deadline so a slow last poll is not lost).
template <class Pred>
bool wait_until(Pred&& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = std::chrono::milliseconds(200)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    std::this_thread::sleep_for(left < interval ? left : interval);
  }
}

}  // namespace bkp::testutil
