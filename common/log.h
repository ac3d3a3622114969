// Leveled, line-oriented logging to stderr, in three shapes chosen once per process by where
// stderr goes:
//   - a terminal: "12:00:01.234 backupd info: ..." (and a status line kept at the bottom);
//   - journald (a daemon under systemd): "<6>backupd info: ...", the syslog priority prefix
//     journald turns into the entry's level and strips;
//   - anything else (a pipe, a file): "backupd info: ...", since there nothing would strip the
//     prefix: `bkptool restore ... 2>&1 | less` shows what a person reads.
// Thread-safe: one write(2) per line (a status line is redrawn in the same write).
// A message is one line whatever it quotes: control characters (a newline or an escape sequence
// in a file name a peer sent) are written as \xNN, and a message longer than kMaxMessage bytes
// is cut there with a note of how much was left out, so no peer can forge or flood log lines.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace bkp::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

constexpr size_t kMaxMessage = 8192;

// The message as write() prints it: control characters escaped, cut at kMaxMessage bytes.
std::string printable(std::string_view message);

void set_level(Level level);  // default kInfo; -v gives kDebug, -q gives kWarn
void set_component(std::string_view name);  // "backupd", shown on terminals
bool enabled(Level level);
void write(Level level, std::string_view message);
// On a terminal: a line kept at the bottom (a progress bar), redrawn below every log line;
// "" removes it. Elsewhere it is ignored: status goes out as ordinary lines.
void set_status_line(std::string_view line);

// Whether a $JOURNAL_STREAM value ("DEVICE:INODE", systemd.exec(5)) names the file with that
// device and inode. systemd sets it for a service whose output goes to journald, and children
// inherit it even when their stderr goes elsewhere (a shell in a service, a pipe), so the log
// uses prefixes only when it names stderr itself.
bool is_journal_stream(std::string_view journal_stream, uint64_t dev, uint64_t ino);

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
