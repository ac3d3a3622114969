// The replicator process after flag parsing.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bkp::replicator {

constexpr int kExitUsage = 2;

struct Options {
  std::string server;  // "ADDR:PORT", already checked by main
  std::string root;
  std::string name;    // replica name, already validated
  std::chrono::milliseconds progress_every{std::chrono::seconds(10)};
  std::vector<std::string> server_ids;  // backupd identities accepted (--server-id, parsed)
  bool tls = true;                      // --no-tls: plaintext, for a trusted loopback only
  std::optional<uint64_t> capacity;     // --capacity: the most kept under root (usage.h)
};

// ROOT/.identity.pem: the replicator's key pair and certificate (host names, which name the
// trees under ROOT, never start with '.').
std::string identity_path(const std::string& root);

// --show-id: prints the replicator's identity (made if missing) and returns the exit code.
int show_id(const std::string& root);

// Connects to backupd (forever, with backoff) and rebuilds its volumes under root. Returns the
// exit code: 0 after SIGTERM/SIGINT.
int run(const Options& options);

}  // namespace bkp::replicator
