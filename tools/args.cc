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
  uint64_t n = 0;
  bool overflow = false;
  if (!parse_decimal(text, n, overflow) || overflow ||
      n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return fail(EINVAL, fmt::format("--limit '{}' must be a number >= 0 (0 = all runs)", text));
  }
  return n;
}

Result<std::string> check_host(std::string_view host) {
  BKP_TRY_VOID(validate_host(host));
  return std::string(host);
}

Result<std::string> check_volume_path(std::string_view path) { return validate_volume_path(path); }

}  // namespace bkp::tools
