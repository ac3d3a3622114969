// `bkptool status [HOST PATH] [--watch [--count N] [--interval SECONDS]]`: what is moving
// right now (docs/PROTOCOL.md, "Control": the status request), once or redrawn until
// interrupted.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "tools/client.h"
#include "tools/commands.h"

namespace bkp::tools {

struct Watch {
  bool watching = false;  // --watch
  uint64_t count = 1;     // requests to make; 0 = until interrupted
  std::chrono::milliseconds interval{1000};
  bool terminal = false;  // stdout is a terminal: each redraw replaces the previous one
};

// The redraw settings of inv: one request without --watch; with it, --count (default 0) every
// --interval. A usage Failure names a bad value. terminal: whether stdout is a terminal.
Outcome<Watch> watch_options(const Invocation& inv, bool terminal);

// The Report of one status response; round counts redraws from 0. When watching on a terminal
// every table starts by homing the cursor and clearing the screen (ANSI); otherwise the redraws
// after the first start with a blank line, so a log of a watch reads as a sequence of blocks.
Report present_status(const Json& response, size_t round, const Watch& watch);

// The exit status of a status that does not watch: kUnderReplicated when it asked for one
// volume (HOST PATH) and that volume has fewer current copies than it wants, else kOk.
Exit status_exit(const Json& request, const Json& response);

// Sends request watch.count times (0: until the process is killed), one every watch.interval
// on the same connection, and hands each Report to sink as it arrives. Stops at the first
// failure (unknown_volume when the volume was unregistered meanwhile, a broken connection...).
Outcome<void> run_status(ControlClient& client, const Json& request, const Watch& watch,
                         const ReportSink& sink);

}  // namespace bkp::tools
