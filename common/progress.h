// Progress of transfers (baseline, catch-up, restore), for people and for systemd.
//
// A Meter belongs to one transfer path (a node's stream, one replica's stream of a volume, a
// restore). Its owner feeds it cheap samples — a monotone "bytes moved" counter and what is
// still pending — plus the name of the file now moving. The Meter cuts that stream of samples
// into episodes: an episode starts when something becomes pending and ends when nothing is, so
// its percentage is moved / (moved + pending) counted from the episode's start. The data path
// never formats or prints anything. A catch-up under a live writer is a long episode followed by
// short ones (each batch written after it caught up); every ended episode is kept until the
// Display takes it, so the long one's final line is not replaced by the next short one's.
//
// A Display (one per process) polls its meters from its own thread and shows them:
//   - on a terminal (stderr is a tty): one redrawn line with a bar, the percentage, the rate and
//     the file now moving; log lines are written above it (log::set_status_line);
//   - otherwise: one log line per active transfer every `every` (a baseline or a restore also
//     gets a line when it starts), and a 100% line when an episode that was shown ends, so a
//     journal shows what moved without a line per small batch;
//   - under systemd: STATUS= with the same text (or the idle text), at most once a second.
//
// Thread-safety: every method of both classes is safe to call concurrently.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"

namespace bkp::progress {

using Clock = std::chrono::steady_clock;

struct Sample {
  uint64_t moved = 0;          // bytes moved so far by the owner, ever (only grows)
  uint64_t pending_bytes = 0;  // bytes still to move
  uint64_t pending_files = 0;  // files still to move (0 if unknown)
  uint64_t pending_ops = 0;    // namespace operations still to move (0 if unknown)
};

// One episode of a meter, as shown.
struct View {
  std::string subject;  // what moves where: "alpha:/srv/app", "alpha:/srv/app to r1"
  std::string phase;    // "baseline", "catch-up", "restore"
  bool active = false;
  bool interrupted = false;  // ended by interrupt(), with things still pending
  uint64_t done_bytes = 0;   // moved since the episode started
  uint64_t total_bytes = 0;  // done + pending
  uint64_t pending_files = 0;
  uint64_t pending_ops = 0;
  std::string file;  // the file moving now, "" if unknown
  double elapsed_s = 0;

  // 0..100; 100 once nothing is pending.
  int percent() const;
  // Bytes per second over the episode so far.
  double rate() const;
};

class Meter {
 public:
  explicit Meter(std::string subject) : subject_(std::move(subject)) {}

  // Names the next episode (or the running one, if it started without a name): "baseline",
  // "restore". Unnamed episodes are "catch-up". Naming a running episode what it is already
  // (each batch of a baseline) names nothing else.
  void begin(std::string phase);
  void update(const Sample& sample);
  void set_file(std::string_view file);
  // The transfer stopped with things still pending (the peer went away): ends the episode as
  // interrupted. The next update() with something pending starts a new one.
  void interrupt();

  // The running episode (active) or the last one (inactive: 100%, or stopped).
  View view() const;
  // The oldest episode that ended since the last call, each once: call it until nullopt. Of
  // those not taken yet, the first (the one a display may have shown while it ran) and the
  // newest kKeptFinished - 1 are kept.
  std::optional<View> take_finished();
  static constexpr size_t kKeptFinished = 16;

 private:
  View view_locked(Clock::time_point now) const;
  void end_locked(bool interrupted);

  const std::string subject_;
  mutable std::mutex mu_;
  std::string next_phase_;
  std::string phase_;
  bool active_ = false;
  uint64_t base_ = 0;  // `moved` when the episode started
  Sample last_;
  std::string file_;
  Clock::time_point start_{};
  Clock::time_point end_{};
  bool interrupted_ = false;
  std::deque<View> finished_;  // ended episodes, as they ended, not yet taken (oldest first)
};

struct DisplayOptions {
  // Period of the status lines when stderr is not a terminal.
  std::chrono::milliseconds every{std::chrono::seconds(10)};
  bool terminal = false;  // draw a bar instead of lines (callers pass isatty(2))
};

class Display {
 public:
  explicit Display(DisplayOptions options);
  ~Display();  // stop()
  Display(const Display&) = delete;
  Display& operator=(const Display&) = delete;

  // Shows the meter for as long as someone else holds it.
  void add(const std::shared_ptr<Meter>& meter);
  // The STATUS= text while nothing moves ("idle, 3 volumes"); default "idle".
  void set_idle_status(std::function<std::string()> idle);
  void start();
  // Reports what ended and clears the bar; idempotent.
  void stop();

  // One line of text for a view: "baseline alpha:/srv/app 37% 120.0 MiB of 320.0 MiB, ...".
  static std::string describe(const View& v);
  // The same with a bar, fitted to width columns.
  static std::string bar_line(const View& v, size_t width);

 private:
  struct Entry {
    std::weak_ptr<Meter> meter;
    Clock::time_point last_line{};  // last periodic line of the running episode
    bool shown = false;             // the running episode got a line (or the bar)
  };

  void run();
  void tick(Clock::time_point now, bool final);

  const DisplayOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<Entry> entries_;  // guarded by mu_
  std::function<std::string()> idle_;
  std::string last_status_;
  Clock::time_point last_notify_{};
  std::thread thread_;
};

// "1.5 MiB", "320.0 MiB", "12 B".
std::string format_bytes(double bytes);

// A size as an operator types it: a whole number of bytes, or with a binary unit "K", "M",
// "G", "T" (also "KiB" ... "TiB"): "500G", "64MiB". EINVAL naming the text otherwise, or past
// 2^63.
Result<uint64_t> parse_bytes(std::string_view text);

// The value of a --progress-every flag: seconds, fractions allowed, > 0 and <= 86400. EINVAL
// with a message otherwise.
Result<std::chrono::milliseconds> parse_every(std::string_view seconds);

// The display options for this process: stderr's tty-ness, and `every`.
DisplayOptions display_options(std::chrono::milliseconds every);

}  // namespace bkp::progress
