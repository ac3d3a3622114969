// Recorder (see recorder.h): dating the first change of each period of the change log.
#include "fs/recorder.h"

namespace bkp::fs {

void Recorder::mark() {
  if (since_ns_.load(std::memory_order_relaxed) != 0) return;
  int64_t expected = 0;
  since_ns_.compare_exchange_strong(expected, wire::realtime_ns());
}

}  // namespace bkp::fs
