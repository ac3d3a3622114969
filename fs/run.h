// The backupfs process as a whole: mount over the application directory, serve it, record its
// changes, ship them to the backupd that attaches at our port, and wind down cleanly. main.cc
// only parses flags into Options.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/changes/change_log.h"
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
  std::string state_dir = "/var/lib/backupfs";  // holds identity.pem, this node's identity
  std::vector<std::string> server_ids;  // backupd identities accepted (--server-id, parsed)
  std::string server_ids_file;          // more of them, one per line (--server-ids FILE)
  bool tls = true;                      // --no-tls: plaintext, for a trusted loopback only
  size_t max_queued_ops = changes::kMaxQueuedOps;  // the change log's bound (change_log.h)
};

// STATE_DIR/identity.pem.
std::string identity_path(const Options& options);

// --show-id: prints this node's identity (made if missing) and returns the exit status.
int show_id(const Options& options);

// Returns the process exit status: 0 after an unmount or SIGTERM/SIGINT, 1 on failure to start.
int run(const Options& options);

}  // namespace bkp::fs
