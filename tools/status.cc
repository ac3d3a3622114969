// The status command and its --watch loop.
//
// A watch keeps the one control connection and asks again every interval rather than having
// backupd push updates: the control protocol stays strictly request/response, a watch costs
// backupd one small answer per interval, and the interval (at most 60 s) stays well inside
// backupd's 5 minute idle timeout. Requests are paced from a fixed start, so a slow answer
// does not make the display drift. Redrawing in place on a terminal is only "cursor home,
// clear screen" before each block: no curses, and a pipe or a log file gets plain blocks.
#include "tools/status.h"

#include <algorithm>
#include <thread>

#include "tools/args.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

constexpr const char* kClearScreen = "\x1b[H\x1b[2J";  // cursor home, erase the whole screen

}  // namespace

Outcome<Watch> watch_options(const Invocation& inv, bool terminal) {
  Watch watch;
  watch.terminal = terminal;
  watch.watching = inv.watch;
  if (!inv.watch) return watch;
  auto count = parse_count(inv.count);
  if (!count) return fail_with(Exit::kUsage, kCodeUsage, count.error().message);
  auto interval = parse_interval(inv.interval);
  if (!interval) return fail_with(Exit::kUsage, kCodeUsage, interval.error().message);
  watch.count = *count;
  watch.interval = std::chrono::milliseconds(*interval);
  return watch;
}

Report present_status(const Json& response, size_t round, const Watch& watch) {
  Report r{response, "", {}, {}};
  if (watch.watching && watch.terminal) {
    r.table = kClearScreen;
  } else if (round > 0) {
    r.table = "\n";
  }
  auto volumes = response.find("volumes");
  bool any_volume = volumes != response.end() && volumes->is_array() && !volumes->empty();
  if (any_volume) {
    r.table += render_status(*volumes);
  } else {
    r.messages.push_back("no volumes registered");
  }
  auto replicators = response.find("replicators");
  if (replicators != response.end() && replicators->is_array() && !replicators->empty()) {
    r.table += (any_volume ? "\n" : "") + render_replicators(*replicators);
  }
  auto pending = response.find("pending_replicas");
  if (pending != response.end() && pending->is_array() && !pending->empty()) {
    r.table += (any_volume ? "\n" : "") + render_pending(*pending);
    r.warnings.push_back("a replicator is waiting for authorisation: if it is yours, run "
                         "bkptool replica add ID");
  }
  return r;
}

Exit status_exit(const Json& request, const Json& response) {
  return request.contains("host") && any_under_replicated(response) ? Exit::kUnderReplicated
                                                                    : Exit::kOk;
}

Outcome<void> run_status(ControlClient& client, const Json& request, const Watch& watch,
                         const ReportSink& sink) {
  auto due = std::chrono::steady_clock::now();
  for (size_t round = 0; watch.count == 0 || round < watch.count; ++round) {
    std::this_thread::sleep_until(due);
    // After a stall (a slow answer, a suspended machine) the next request is simply late,
    // not followed by a burst of catch-up requests.
    due = std::max(due + watch.interval, std::chrono::steady_clock::now());
    Json response = BKP_TRY(client.call(request));
    Report r = present_status(response, round, watch);
    if (!watch.watching) r.exit = status_exit(request, response);
    sink(r);
  }
  return {};
}

}  // namespace bkp::tools
