// Human-readable rendering for bkptool's tables and messages: sizes, durations, periods, local
// dates and aligned text tables. Pure functions of their inputs (dates also of TZ), so they
// are unit-tested without a server.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bkp::tools {

// Binary units with one decimal: "512 B", "1.0 KiB", "12.3 MiB", "4.0 GiB".
std::string human_size(uint64_t bytes);

// An elapsed time: "350 ms", "12.3 s", "4 min 5 s", "2 h 3 min", "1 d 2 h".
std::string human_duration_ms(uint64_t ms);

// A backup period as users typed it: "30 s", "5 min", "2 h", "1 d"; a period that is not a
// whole number of the larger unit keeps the smaller one ("90 s", "150 min").
std::string human_period(int64_t seconds);

// "1 file", "2 files": a count with the right noun.
std::string counted(uint64_t n, std::string_view one, std::string_view many);

// The protocol's UTC time ("2026-11-26T01:02:03Z", fractional seconds allowed) as local time
// "2026-11-26 01:02:03". Text that is not such a time is returned unchanged, so a newer server's
// format still shows up rather than vanishing.
std::string local_time(std::string_view iso_utc);

// Seconds since the epoch for the protocol's UTC time; false if the text is not one.
bool parse_utc(std::string_view iso_utc, int64_t& unix_seconds);

// A text table: a header row and data rows, columns separated by two spaces and padded to the
// widest cell (by UTF-8 code points). The last column is not padded, so no line ends in
// spaces. Right-aligned columns suit numbers and sizes.
class Table {
 public:
  enum class Align { kLeft, kRight };

  explicit Table(std::vector<std::string> headers, std::vector<Align> align = {});
  // A row with fewer cells than headers is padded with empty cells; more is a bug (asserted).
  void add(std::vector<std::string> row);
  bool empty() const { return rows_.empty(); }
  // Header and rows, each line ending in '\n'.
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<Align> align_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace bkp::tools
