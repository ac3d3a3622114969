// Wall-clock time as the daemons record and show it: milliseconds since the epoch
// (CLOCK_REALTIME), and the ISO 8601 UTC text of such an instant.
#pragma once

#include <cstdint>
#include <string>

namespace bkp {

int64_t wall_ms();
// "2026-11-26T01:02:03Z".
std::string iso_time(int64_t unix_ms);

}  // namespace bkp
