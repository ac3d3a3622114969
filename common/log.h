// Leveled, line-oriented logging to stderr, journald-friendly: each line starts with a syslog
// priority prefix ("<6>") when stderr is not a terminal, so journald keeps the level.
// Thread-safe: one write(2) per line (a status line is redrawn in the same write).
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace bkp::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_level(Level level);  // default kInfo; -v gives kDebug, -q gives kWarn
void set_component(std::string_view name);  // "backupd", shown on terminals
bool enabled(Level level);
void write(Level level, std::string_view message);
// On a terminal: a line kept at the bottom (a progress bar), redrawn below every log line;
// "" removes it. Elsewhere it is ignored: status goes out as ordinary lines.
void set_status_line(std::string_view line);

template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kDebug)) write(Level::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kInfo)) write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kWarn)) write(Level::kWarn, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace bkp::log
