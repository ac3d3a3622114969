// The replicator process after flag parsing.
#pragma once

#include <chrono>
#include <string>

namespace bkp::replicator {

constexpr int kExitUsage = 2;

struct Options {
  std::string server;  // "ADDR:PORT", already checked by main
  std::string root;
  std::string name;    // replica name, already validated
  std::chrono::milliseconds progress_every{std::chrono::seconds(10)};
};

// Connects to backupd (forever, with backoff) and rebuilds its volumes under root. Returns the
// exit code: 0 after SIGTERM/SIGINT.
int run(const Options& options);

}  // namespace bkp::replicator
