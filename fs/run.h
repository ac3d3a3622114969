// The backupfs process as a whole: mount over the application directory, serve it, record its
// changes, ship them to the backupd that attaches at our port, and wind down cleanly. main.cc
// only parses flags into Options.
#pragma once

#include <chrono>
#include <string>

#include "common/log.h"
#include "common/net/socket.h"

namespace bkp::fs {

struct Options {
  std::string dir;            // the application directory, mounted over
  net::HostPort listen;       // where backupd attaches (port 0: any free port)
  std::string port_file;      // if set: the bound port, in decimal, once listening
  std::string host;           // volume host name; empty = gethostname()
  bool foreground = false;
  std::chrono::milliseconds progress_every{std::chrono::seconds(10)};
  log::Level level = log::Level::kInfo;
};

// Returns the process exit status: 0 after an unmount or SIGTERM/SIGINT, 1 on failure to start.
int run(const Options& options);

}  // namespace bkp::fs
