// Implementation of common/log.h: a level filter and one write(2) per line so that lines from
// concurrent threads never interleave. Where stderr goes is looked at once, before main().
#include "common/log.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdlib>
#include <mutex>
#include <string>

namespace bkp::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::string g_component = "bkp";
const char* kNames[] = {"debug", "info", "warn", "error"};
const char* kPriorities[] = {"<7>", "<6>", "<4>", "<3>"};
const bool g_terminal = isatty(STDERR_FILENO) != 0;

bool stderr_is_journal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  return env != nullptr && ::fstat(STDERR_FILENO, &st) == 0 &&
         is_journal_stream(env, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
}
const bool g_journal = stderr_is_journal();

std::mutex g_status_mu;
std::string g_status;  // guarded by g_status_mu; only ever set on a terminal

// Writes text to stderr; on a terminal, after clearing the status line and then redrawing it.
void emit(std::string_view text) {
  std::string out;
  std::lock_guard lock(g_status_mu);
  if (!g_status.empty()) {
    out.reserve(text.size() + g_status.size() + 8);
    out.append("\r\033[K").append(text).append(g_status);
    text = out;
  }
  ssize_t ignored = ::write(STDERR_FILENO, text.data(), text.size());
  (void)ignored;
}
}  // namespace

void set_level(Level level) { g_level = static_cast<int>(level); }
void set_component(std::string_view name) { g_component = name; }
bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }

std::string printable(std::string_view message) {
  std::string out;
  size_t n = std::min(message.size(), kMaxMessage);
  out.reserve(n + 32);
  for (size_t k = 0; k < n; ++k) {
    auto c = static_cast<unsigned char>(message[k]);
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (n < message.size()) out += fmt::format("... ({} more bytes)", message.size() - n);
  return out;
}

void write(Level level, std::string_view raw) {
  int i = static_cast<int>(level);
  std::string message = printable(raw);
  std::string line;
  if (g_terminal) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    localtime_r(&ts.tv_sec, &t);
    line = fmt::format("{:02}:{:02}:{:02}.{:03} {} {}: {}\n", t.tm_hour, t.tm_min, t.tm_sec,
                       ts.tv_nsec / 1000000, g_component, kNames[i], message);
  } else {
    line = fmt::format("{}{} {}: {}\n", g_journal ? kPriorities[i] : "", g_component, kNames[i],
                       message);
  }
  emit(line);
}

void set_status_line(std::string_view line) {
  if (!g_terminal) return;
  std::lock_guard lock(g_status_mu);
  if (line == g_status) return;
  std::string out = "\r\033[K";
  out.append(line);
  ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
  (void)ignored;
  g_status.assign(line);
}

bool is_journal_stream(std::string_view journal_stream, uint64_t dev, uint64_t ino) {
  size_t colon = journal_stream.find(':');
  if (colon == std::string_view::npos) return false;
  auto number = [](std::string_view text, uint64_t& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size() && !text.empty();
  };
  uint64_t d = 0, i = 0;
  return number(journal_stream.substr(0, colon), d) &&
         number(journal_stream.substr(colon + 1), i) && d == dev && i == ino;
}

}  // namespace bkp::log
