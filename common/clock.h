// Wall-clock time as the daemons record and show it: milliseconds since the epoch
// (CLOCK_REALTIME), and the ISO 8601 UTC text of such an instant.
#pragma once

#include <cstdint>
#include <string>

namespace bkp {

int64_t wall_ms();
// "2026-11-26T01:02:03Z".
std::string iso_time(int64_t unix_ms);
// Seconds from the oldest change not yet delivered (oldest_ns, CLOCK_REALTIME) until now_ms, to
// the millisecond; 0 when there is none (oldest_ns 0). The recovery point every view shows.
double lag_seconds(int64_t oldest_ns, int64_t now_ms);

}  // namespace bkp
