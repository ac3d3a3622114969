// The backupfs processes: the keeper mounts over the application directory and holds the
// mount (keeper.h); its worker serves it, records its changes, ships them to the backupd that
// attaches at our port, and winds down cleanly. main.cc only parses flags into Options.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/changes/change_log.h"
#include "common/log.h"
#include "common/net/socket.h"
#include "common/net/tls.h"
#include "common/result.h"

namespace bkp::fs {

struct Options {
  std::string dir;            // the application directory, mounted over
  net::HostPort listen;       // where backupd attaches (port 0: any free port)
  std::string port_file;      // if set: the bound port, in decimal, once listening
  std::optional<net::HostPort> metrics_listen;  // --metrics-listen: where /metrics is served
  std::string metrics_port_file;                // if set: that port, once listening
  std::string host;           // volume host name; empty = gethostname()
  bool foreground = false;
  std::chrono::milliseconds progress_every{std::chrono::seconds(10)};
  log::Level level = log::Level::kInfo;
  std::string state_dir = "/var/lib/backupfs";  // holds identity.pem, this node's identity
  std::vector<std::string> server_ids;  // backupd identities accepted (--server-id, parsed)
  std::string server_ids_file;          // more of them, one per line (--server-ids FILE)
  bool tls = true;                      // --no-tls: plaintext, for a trusted loopback only
  size_t max_queued_ops = changes::kMaxQueuedOps;  // the change log's bound (change_log.h)
  std::string worker;  // --worker=FDS: run as the keeper's worker (keeper.h WorkerFds)
  std::vector<std::string> args;  // the command line after the program name
};

// What the keeper and its workers both derive from Options; errors are the operator's.
struct Checked {
  std::string path;  // the volume directory, resolved
  std::string host;
  net::Trust trust;
};
// with_trust: also load the identity and the backupd identities served (Checked::trust).
Result<Checked> check(const Options& options, bool with_trust = true);

// STATE_DIR/identity.pem.
std::string identity_path(const Options& options);

// --show-id: prints this node's identity (made if missing) and returns the exit status.
int show_id(const Options& options);

// Returns the process exit status: 0 after an unmount or SIGTERM/SIGINT, 1 on failure to start
// (for a worker: keeper.h's kExitHandedOver after handing over).
int run(const Options& options);

}  // namespace bkp::fs
