// Recorder (see recorder.h): dating the first change of each period of the change log.
#include "fs/recorder.h"

#include <time.h>

namespace bkp::fs {

int64_t realtime_ns() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void Recorder::mark() {
  if (since_ns_.load(std::memory_order_relaxed) != 0) return;
  int64_t expected = 0;
  since_ns_.compare_exchange_strong(expected, realtime_ns());
}

}  // namespace bkp::fs
