// The replicator process after flag parsing.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/net/socket.h"

namespace bkp::replicator {

constexpr int kExitUsage = 2;

struct Options {
  // Every backupd followed: "ADDR:PORT" each (--server, once per server), checked by main and
  // told apart; one session loop runs per server, at once.
  std::vector<std::string> servers;
  std::string root;
  std::string name;    // replica name, already validated
  std::chrono::milliseconds progress_every{std::chrono::seconds(10)};
  // backupd identities accepted (--server-id, parsed), from any of the servers.
  std::vector<std::string> server_ids;
  bool tls = true;                      // --no-tls: plaintext, for a trusted loopback only
  std::optional<uint64_t> capacity;     // --capacity: the most kept under root (usage.h)
  std::optional<net::HostPort> metrics_listen;  // --metrics-listen: where /metrics is served
  std::string metrics_port_file;                // if set: that port, once listening
  // --listen: where bkptool may fetch this replica's snapshot copies (restore_service.h).
  std::optional<net::HostPort> listen;
  std::string listen_port_file;           // if set: that port, once listening
  std::vector<std::string> operator_ids;  // --operator-id: bkptool identities served (parsed)
};

// ROOT/.identity.pem: the replicator's key pair and certificate (host names, which name the
// trees under ROOT, never start with '.').
std::string identity_path(const std::string& root);
// ROOT/.stats.json: the replicator's totals (common/stats_file.h), beside its identity for the
// same reason.
std::string stats_path(const std::string& root);

// --show-id: prints the replicator's identity (made if missing) and returns the exit code.
int show_id(const std::string& root);

// Connects to every backupd of options.servers (each forever, with its own backoff, at once) and
// rebuilds their volumes under root, serving its snapshot copies to bkptool (--listen) and
// /metrics if asked and keeping stats_path(root) (at start, every StatsFile::every() and at the
// end). Returns the exit code: 0 after SIGTERM/SIGINT, 1 if --listen cannot listen.
int run(const Options& options);

}  // namespace bkp::replicator
