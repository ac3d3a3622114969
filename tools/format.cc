// Rendering of sizes, durations, dates and tables for bkptool's human output.
//
// Sizes use binary units because snapshot and mirror sizes are compared with `du -h`, which
// does too. Dates arrive in UTC (the protocol never carries local time, so a server and its
// clients in different zones agree) and are shown in the user's local zone without the zone
// suffix, the way `ls -l` and journalctl show them. Tables are plain aligned text: readable
// in a terminal, greppable, and --json exists for scripts.
#include "tools/format.h"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cassert>

namespace bkp::tools {
namespace {

// Display width of UTF-8 text: code points, which is right for the Latin-script paths and
// host names bkptool shows (wide CJK glyphs would need wcwidth and a locale).
size_t width(std::string_view s) {
  return static_cast<size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<uint8_t>(c) & 0xC0) != 0x80; }));
}

bool digits_at(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

}  // namespace

std::string human_size(uint64_t bytes) {
  static constexpr std::array<const char*, 6> kUnits = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double value = static_cast<double>(bytes) / 1024.0;
  size_t unit = 0;
  // Step up while the value would print as 1024.0 or more in this unit.
  while (value >= 1023.95 && unit + 1 < kUnits.size()) {
    value /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string human_duration_ms(uint64_t ms) {
  if (ms < 1000) return fmt::format("{} ms", ms);
  if (ms < 59950) return fmt::format("{:.1f} s", static_cast<double>(ms) / 1000.0);
  uint64_t s = (ms + 500) / 1000;
  auto pair = [](uint64_t big, const char* big_unit, uint64_t small, const char* small_unit) {
    return small == 0 ? fmt::format("{} {}", big, big_unit)
                      : fmt::format("{} {} {} {}", big, big_unit, small, small_unit);
  };
  if (s < 3600) return pair(s / 60, "min", s % 60, "s");
  if (s < 86400) return pair(s / 3600, "h", s % 3600 / 60, "min");
  return pair(s / 86400, "d", s % 86400 / 3600, "h");
}

std::string human_period(int64_t seconds) {
  if (seconds > 0 && seconds % 86400 == 0) return fmt::format("{} d", seconds / 86400);
  if (seconds > 0 && seconds % 3600 == 0) return fmt::format("{} h", seconds / 3600);
  if (seconds > 0 && seconds % 60 == 0) return fmt::format("{} min", seconds / 60);
  return fmt::format("{} s", seconds);
}

std::string counted(uint64_t n, std::string_view one, std::string_view many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

bool parse_utc(std::string_view s, int64_t& unix_seconds) {
  // YYYY-MM-DDTHH:MM:SS[.fraction]Z
  tm t{};
  int year = 0, month = 0;
  if (!digits_at(s, 0, 4, year) || s.size() < 20 || s[4] != '-' || !digits_at(s, 5, 2, month) ||
      s[7] != '-' || !digits_at(s, 8, 2, t.tm_mday) || s[10] != 'T' ||
      !digits_at(s, 11, 2, t.tm_hour) || s[13] != ':' || !digits_at(s, 14, 2, t.tm_min) ||
      s[16] != ':' || !digits_at(s, 17, 2, t.tm_sec)) {
    return false;
  }
  size_t pos = 19;
  if (s[pos] == '.') {
    ++pos;
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
    if (pos == start) return false;
  }
  if (pos + 1 != s.size() || s[pos] != 'Z') return false;
  if (month < 1 || month > 12 || t.tm_mday < 1 || t.tm_mday > 31 || t.tm_hour > 23 ||
      t.tm_min > 59 || t.tm_sec > 60) {
    return false;
  }
  t.tm_year = year - 1900;
  t.tm_mon = month - 1;
  unix_seconds = static_cast<int64_t>(timegm(&t));
  return true;
}

std::string local_time(std::string_view iso_utc) {
  int64_t secs = 0;
  if (!parse_utc(iso_utc, secs)) return std::string(iso_utc);
  time_t tt = static_cast<time_t>(secs);
  tm t{};
  localtime_r(&tt, &t);
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec);
}

Table::Table(std::vector<std::string> headers, std::vector<Align> align)
    : headers_(std::move(headers)), align_(std::move(align)) {
  align_.resize(headers_.size(), Align::kLeft);
}

void Table::add(std::vector<std::string> row) {
  assert(row.size() <= headers_.size() && "internal error: table row wider than its header");
  row.resize(headers_.size());
  rows_.push_back(std::move(row));
}

std::string Table::render() const {
  std::vector<size_t> widths(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) widths[c] = width(headers_[c]);
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], width(row[c]));
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t c = 0; c < cells.size(); ++c) {
      bool last = c + 1 == cells.size();
      size_t pad = widths[c] - width(cells[c]);
      if (c > 0) text += "  ";
      if (align_[c] == Align::kRight) text.append(pad, ' ');
      text += cells[c];
      if (align_[c] == Align::kLeft && !last) text.append(pad, ' ');
    }
    // A left-aligned column before empty trailing cells would still leave spaces.
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text;
    out += '\n';
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
  return out;
}

}  // namespace bkp::tools
