// One connection of the replicator to backupd: handshake, then apply what the server ships.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/changes/applier.h"
#include "common/net/conn.h"
#include "common/result.h"

namespace bkp::replicator {

constexpr int kHelloOkTimeoutMs = 10000;

// The replica trees under ROOT, one Applier per volume, opened on first Select and kept for the
// process's life (an Applier carries a baseline in progress across reconnects).
// Layout: ROOT/<host>/<path without leading '/'> and ROOT/.ids/<host>/<escaped path>.
class Trees {
 public:
  explicit Trees(std::string root) : root_(std::move(root)) {}
  // host and path must be validated.
  Result<changes::Applier*> open(const std::string& host, const std::string& path);

 private:
  std::string root_;
  std::map<std::string, std::unique_ptr<changes::Applier>> appliers_;  // by "host:path"
};

struct SessionEnd {
  Error error;           // why the session ended (ECONNRESET when the server closed)
  bool welcomed = false; // the server answered the Hello with HelloOk
  uint64_t acked = 0;    // batches acknowledged during the session
};

// Sends Hello{kReplica, name, instance}, expects HelloOk, then applies frames until the
// connection ends. Apply errors are sent to the server as kError before returning.
SessionEnd run_session(net::Conn& conn, const std::string& name, uint64_t instance, Trees& trees);

}  // namespace bkp::replicator
