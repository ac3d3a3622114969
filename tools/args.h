// Client-side checks of what the user typed, done before bkptool connects anywhere, so a typo
// fails at once with a message naming the value (exit 2) instead of as a server round trip.
// Every function returns EINVAL errors whose message is ready to print after "bkptool: ".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace bkp::tools {

// The longest accepted backup period; longer is certainly a typo (and keeps every time
// computation on the server far from overflow).
constexpr int64_t kMaxPeriodSeconds = 365 * 86400;

// The value of --every, in seconds. A bare positive integer is minutes ("5" = 300); a number
// with a unit is explicit: "30s", "5m", "2h", "1d". Rejects 0, negatives, junk, fractions,
// spaces and anything above kMaxPeriodSeconds, naming the value.
Result<int64_t> parse_period(std::string_view text);

// PORT of a node: a decimal integer 1..65535.
Result<uint16_t> parse_port(std::string_view text);

// --limit N: a decimal integer >= 0 (0 = all).
Result<uint64_t> parse_limit(std::string_view text);

// --copies N: 0 (the server's default) to 16.
Result<int64_t> parse_copies(std::string_view text);

// --count N of status --watch: a decimal integer >= 0 (0 = until interrupted).
Result<uint64_t> parse_count(std::string_view text);

// The longest accepted --interval: backupd drops a control connection idle for 5 minutes, and
// a status display refreshed less than once a minute is not live any more.
constexpr int64_t kMaxIntervalMs = 60000;

// --interval SECONDS of status --watch, in milliseconds: a decimal number of seconds with at
// most three decimals ("1", "0.5", "2.25"), from 0.1 to 60.
Result<int64_t> parse_interval(std::string_view text);

// HOST as the server will accept it (common/path.h validate_host), with a message naming it.
Result<std::string> check_host(std::string_view host);

// PATH of a volume: absolute and normalized (common/path.h validate_volume_path).
Result<std::string> check_volume_path(std::string_view path);

// --name of `replica add` / `operator add`: 1 to wire::kMaxPeerName bytes, no control
// characters.
Result<std::string> check_peer_name(std::string_view name);

}  // namespace bkp::tools
