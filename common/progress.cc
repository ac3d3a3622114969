// Meter episodes and the Display thread (see progress.h).
#include "common/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <utility>

#include <fmt/format.h>

#include "common/log.h"
#include "common/systemd_notify.h"

namespace bkp::progress {
namespace {

using namespace std::chrono_literals;

// A terminal bar is redrawn this often; periodic lines and STATUS= are checked as often.
constexpr auto kTick = 200ms;
constexpr auto kNotifyEvery = 1s;
// An episode shorter than this never gets a bar: small batches would only flicker.
constexpr auto kBarAfter = 500ms;
// Episodes that moved at least this much get their 100% line even if they were never shown.
constexpr uint64_t kReportBytes = 64ull << 20;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

size_t terminal_width() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
  return 100;
}

bool is_long_phase(const std::string& phase) { return phase == "baseline" || phase == "restore"; }

}  // namespace

std::string format_bytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[unit]);
}

Result<std::chrono::milliseconds> parse_every(std::string_view seconds) {
  std::string text(seconds);
  char* end = nullptr;
  errno = 0;
  double value = text.empty() ? 0 : std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || end != text.c_str() + text.size() || !std::isfinite(value) ||
      value <= 0 || value > 86400) {
    return fail(EINVAL, fmt::format("'{}' is not a number of seconds between 0 and 86400", text));
  }
  return std::chrono::milliseconds(std::max<int64_t>(1, std::llround(value * 1000)));
}

Result<uint64_t> parse_bytes(std::string_view text) {
  auto bad = [&] {
    return fail(EINVAL, fmt::format("'{}' is not a size (a number of bytes, or with K, M, G or T "
                                    "as in 500G)", text));
  };
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 18) return bad();
  uint64_t value = std::stoull(std::string(text.substr(0, digits)));
  std::string_view unit = text.substr(digits);
  int shift = 0;
  if (!unit.empty()) {
    const std::string_view units = "KMGT";
    size_t at = units.find(unit[0]);
    if (at == std::string_view::npos || (unit.size() != 1 && unit.substr(1) != "iB")) return bad();
    shift = 10 * static_cast<int>(at + 1);
  }
  if (value > (uint64_t{1} << (63 - shift))) return bad();
  return value << shift;
}

DisplayOptions display_options(std::chrono::milliseconds every) {
  return DisplayOptions{every, isatty(STDERR_FILENO) != 0};
}

int View::percent() const {
  bool unfinished = active || interrupted;
  if (!unfinished) return 100;
  if (total_bytes == 0) return 0;
  int p = static_cast<int>(100.0 * static_cast<double>(done_bytes) / static_cast<double>(total_bytes));
  return std::clamp(p, 0, 99);
}

double View::rate() const { return elapsed_s > 0 ? static_cast<double>(done_bytes) / elapsed_s : 0; }

void Meter::begin(std::string phase) {
  std::lock_guard lock(mu_);
  if (active_ && phase_ == phase) return;
  if (active_ && phase_ == "catch-up" && base_ == last_.moved) {
    phase_ = std::move(phase);  // named right after it started: nothing moved yet
  } else {
    next_phase_ = std::move(phase);
  }
}

void Meter::update(const Sample& sample) {
  std::lock_guard lock(mu_);
  bool pending = sample.pending_bytes != 0 || sample.pending_files != 0 || sample.pending_ops != 0;
  auto now = Clock::now();
  if (pending && !active_) {
    active_ = true;
    base_ = std::min(last_.moved, sample.moved);  // what this sample moved is the episode's
    phase_ = next_phase_.empty() ? "catch-up" : std::move(next_phase_);
    next_phase_.clear();
    start_ = now;
    interrupted_ = false;
  }
  last_ = sample;
  if (!pending && active_) end_locked(false);
}

void Meter::interrupt() {
  std::lock_guard lock(mu_);
  if (active_) end_locked(true);
}

void Meter::end_locked(bool interrupted) {
  active_ = false;
  interrupted_ = interrupted;
  end_ = Clock::now();
  file_.clear();
  if (finished_.size() == kKeptFinished) finished_.erase(finished_.begin() + 1);
  finished_.push_back(view_locked(end_));
}

void Meter::set_file(std::string_view file) {
  std::lock_guard lock(mu_);
  if (active_) file_.assign(file);
}

View Meter::view() const {
  std::lock_guard lock(mu_);
  return view_locked(Clock::now());
}

std::optional<View> Meter::take_finished() {
  std::lock_guard lock(mu_);
  if (finished_.empty()) return std::nullopt;
  View v = std::move(finished_.front());
  finished_.pop_front();
  return v;
}

View Meter::view_locked(Clock::time_point now) const {
  View v;
  v.subject = subject_;
  v.phase = phase_.empty() ? "catch-up" : phase_;
  v.active = active_;
  v.interrupted = interrupted_;
  bool pending = active_ || interrupted_;
  v.done_bytes = last_.moved >= base_ ? last_.moved - base_ : 0;
  v.total_bytes = v.done_bytes + (pending ? last_.pending_bytes : 0);
  v.pending_files = pending ? last_.pending_files : 0;
  v.pending_ops = pending ? last_.pending_ops : 0;
  v.file = file_;
  v.elapsed_s = start_ == Clock::time_point{} ? 0 : seconds((active_ ? now : end_) - start_);
  return v;
}

Display::Display(DisplayOptions options) : options_(options) {}

Display::~Display() { stop(); }

void Display::add(const std::shared_ptr<Meter>& meter) {
  std::lock_guard lock(mu_);
  entries_.push_back(Entry{meter});
}

void Display::set_idle_status(std::function<std::string()> idle) {
  std::lock_guard lock(mu_);
  idle_ = std::move(idle);
}

void Display::start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { run(); });
}

void Display::stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  tick(Clock::now(), true);
}

void Display::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, kTick, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    tick(Clock::now(), false);
    lock.lock();
  }
}

std::string Display::describe(const View& v) {
  if (v.interrupted) {
    return fmt::format("{} {}: stopped at {}%, {} of {} after {:.1f} s", v.phase, v.subject,
                       v.percent(), format_bytes(static_cast<double>(v.done_bytes)),
                       format_bytes(static_cast<double>(v.total_bytes)), v.elapsed_s);
  }
  if (!v.active) {
    return fmt::format("{} {}: 100%, {} in {:.1f} s ({}/s)", v.phase, v.subject,
                       format_bytes(static_cast<double>(v.done_bytes)), v.elapsed_s,
                       format_bytes(v.rate()));
  }
  std::string text = fmt::format("{} {}: {}%, {} of {}", v.phase, v.subject, v.percent(),
                                 format_bytes(static_cast<double>(v.done_bytes)),
                                 format_bytes(static_cast<double>(v.total_bytes)));
  if (v.total_bytes == 0 && v.pending_ops) text += fmt::format(", {} operations left", v.pending_ops);
  if (v.pending_files) {
    text += fmt::format(", {} {} left", v.pending_files, v.pending_files == 1 ? "file" : "files");
  }
  if (v.elapsed_s >= 0.5) text += fmt::format(", {}/s", format_bytes(v.rate()));
  if (!v.file.empty()) text += ", now " + v.file;
  return text;
}

std::string Display::bar_line(const View& v, size_t width) {
  constexpr size_t kBar = 20;
  size_t filled = static_cast<size_t>(v.percent()) * kBar / 100;
  std::string bar = "[" + std::string(filled, '#') + std::string(kBar - filled, '-') + "]";
  std::string text = fmt::format("{} {} {} {:3}% {}/{}", v.phase, v.subject, bar, v.percent(),
                                 format_bytes(static_cast<double>(v.done_bytes)),
                                 format_bytes(static_cast<double>(v.total_bytes)));
  if (v.elapsed_s >= 0.5) text += fmt::format(" {}/s", format_bytes(v.rate()));
  if (!v.file.empty()) {
    std::string file = v.file;
    // The file's tail is what tells files apart; at least 16 columns of it, even if the line
    // then gets cut at the terminal's edge.
    size_t room = std::max<size_t>(width > text.size() + 3 ? width - text.size() - 3 : 0, 16);
    if (file.size() > room) file = "..." + file.substr(file.size() - (room - 3));
    text += "  " + file;
  }
  if (text.size() > width - 1) text.resize(width - 1);
  return text;
}

void Display::tick(Clock::time_point now, bool final) {
  std::vector<std::string> status;
  std::string bar;
  size_t more = 0;
  std::function<std::string()> idle;
  {
    std::lock_guard lock(mu_);
    idle = idle_;
    std::erase_if(entries_, [](const Entry& e) { return e.meter.expired(); });
    for (Entry& e : entries_) {
      auto meter = e.meter.lock();
      if (!meter) continue;
      // Only the first could have been shown: the others started and ended since the last tick.
      while (auto done = meter->take_finished()) {
        if (e.shown || is_long_phase(done->phase) || done->done_bytes >= kReportBytes) {
          log::info("{}", describe(*done));
        }
        e.shown = false;
        e.last_line = {};
      }
      View v = meter->view();
      if (!v.active) continue;
      status.push_back(describe(v));
      if (options_.terminal) {
        if (v.elapsed_s >= seconds(kBarAfter) || e.shown) {
          e.shown = true;
          if (bar.empty()) {
            bar = bar_line(v, terminal_width());
          } else {
            ++more;
          }
        }
        continue;
      }
      bool first = e.last_line == Clock::time_point{};
      bool due = first ? (is_long_phase(v.phase) || v.elapsed_s >= seconds(options_.every))
                       : now - e.last_line >= options_.every;
      if (due && !final) {
        log::info("{}", describe(v));
        e.last_line = now;
        e.shown = true;
      }
    }
  }
  if (options_.terminal) {
    if (more) bar += fmt::format(" (+{} more)", more);
    log::set_status_line(final ? "" : bar);
  }
  if (final) return;
  std::string text = status.empty() ? (idle ? idle() : "idle") : status.front();
  if (status.size() > 1) text += fmt::format(" (+{} more)", status.size() - 1);
  if (text != last_status_ && now - last_notify_ >= kNotifyEvery) {
    SystemdNotifier::status(text);
    last_status_ = text;
    last_notify_ = now;
  }
}

}  // namespace bkp::progress
