// Parsing of the values bkptool's arguments carry. The period is the interesting one: users
// think in minutes ("--every 5"), so a bare number means minutes, but seconds, hours and days
// are common enough to deserve a unit suffix. Parsing is strict (no spaces, signs, fractions
// or mixed units) because a lenient parser turns typos into surprising schedules: "1.5h"
// read as "1" would back up every minute, "-5" wrapped to unsigned would mean centuries.
#include "tools/args.h"

#include <fmt/format.h>

#include <charconv>
#include <limits>

#include "common/path.h"
#include "common/wire/messages.h"

namespace bkp::tools {
namespace {

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// A decimal without sign or spaces. False on junk; a value beyond uint64 sets `overflow`.
bool parse_decimal(std::string_view s, uint64_t& out, bool& overflow) {
  overflow = false;
  if (!all_digits(s)) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec == std::errc::result_out_of_range) {
    overflow = true;
    return true;
  }
  return ec == std::errc() && end == s.data() + s.size();
}

int64_t unit_seconds(char unit) {
  switch (unit) {
    case 's':
      return 1;
    case 'm':
      return 60;
    case 'h':
      return 3600;
    case 'd':
      return 86400;
    default:
      return 0;
  }
}

// A count option: a decimal integer >= 0, where 0 means `zero_means`.
Result<uint64_t> parse_count_option(std::string_view text, std::string_view option,
                                    std::string_view zero_means) {
  uint64_t n = 0;
  bool overflow = false;
  if (!parse_decimal(text, n, overflow) || overflow ||
      n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return fail(EINVAL,
                fmt::format("{} '{}' must be a number >= 0 (0 = {})", option, text, zero_means));
  }
  return n;
}

}  // namespace

Result<int64_t> parse_period(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return fail(EINVAL, fmt::format("--every '{}': {}", text, why));
  };
  if (text.empty()) return fail(EINVAL, "--every: the period is empty");
  int64_t unit = 60;  // a bare number is minutes
  std::string_view digits = text;
  if (unit_seconds(text.back()) != 0) {
    unit = unit_seconds(text.back());
    digits = text.substr(0, text.size() - 1);
  }
  if (!digits.empty() && digits.front() == '-' && all_digits(digits.substr(1))) {
    return bad("the period must be positive");
  }
  uint64_t n = 0;
  bool overflow = false;
  if (!parse_decimal(digits, n, overflow)) {
    return bad("expected minutes (a positive integer) or a number with a unit: 30s, 5m, 2h, 1d");
  }
  constexpr auto kMax = static_cast<uint64_t>(kMaxPeriodSeconds);
  if (overflow || n > kMax / static_cast<uint64_t>(unit)) {
    return bad("the period must be at most 365 days");
  }
  if (n == 0) return bad("the period must be positive");
  return static_cast<int64_t>(n) * unit;
}

Result<uint16_t> parse_port(std::string_view text) {
  uint64_t n = 0;
  bool overflow = false;
  if (!parse_decimal(text, n, overflow) || overflow || n < 1 || n > 65535) {
    return fail(EINVAL, fmt::format("port '{}' must be a number from 1 to 65535", text));
  }
  return static_cast<uint16_t>(n);
}

Result<uint64_t> parse_limit(std::string_view text) {
  return parse_count_option(text, "--limit", "all runs");
}

Result<int64_t> parse_copies(std::string_view text) {
  uint64_t n = 0;
  bool overflow = false;
  if (!parse_decimal(text, n, overflow) || overflow || n > 16) {
    return fail(EINVAL, fmt::format("--copies '{}' must be a whole number from 1 to 16 (the "
                                    "mirror and the replicas), or 0 for the server's default",
                                    text));
  }
  return static_cast<int64_t>(n);
}

Result<uint64_t> parse_count(std::string_view text) {
  return parse_count_option(text, "--count", "until interrupted");
}

Result<int64_t> parse_interval(std::string_view text) {
  auto bad = [&] {
    return fail(EINVAL, fmt::format("--interval '{}' must be a number of seconds from 0.1 to 60 "
                                    "(at most three decimals)",
                                    text));
  };
  size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  std::string_view fraction = dot == std::string_view::npos ? "" : text.substr(dot + 1);
  uint64_t seconds = 0;
  bool overflow = false;
  if (!parse_decimal(whole, seconds, overflow) || overflow || fraction.size() > 3 ||
      (dot != std::string_view::npos && !all_digits(fraction))) {
    return bad();
  }
  int64_t ms = 0;
  int64_t scale = 100;
  for (char c : fraction) {
    ms += (c - '0') * scale;
    scale /= 10;
  }
  if (seconds > static_cast<uint64_t>(kMaxIntervalMs / 1000)) return bad();
  ms += static_cast<int64_t>(seconds) * 1000;
  if (ms < 100 || ms > kMaxIntervalMs) return bad();
  return ms;
}

Result<std::string> check_host(std::string_view host) {
  BKP_TRY_VOID(validate_host(host));
  return std::string(host);
}

Result<std::string> check_volume_path(std::string_view path) { return validate_volume_path(path); }

Result<std::string> check_peer_name(std::string_view name) {
  if (name.empty() || name.size() > wire::kMaxPeerName || wire::escape_controls(name) != name) {
    return fail(EINVAL, fmt::format("--name '{}' must be 1 to {} characters without control "
                                    "characters", wire::escape_controls(name), wire::kMaxPeerName));
  }
  return std::string(name);
}

}  // namespace bkp::tools
