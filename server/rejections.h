// Rejections: the log lines for connections backupd turns away on its port (a TLS handshake that
// fails, no Hello in time, too many connections), at most kRejectionBurst per source address in
// each kRejectionQuiet, so a flood of bad connections from one host (the hostile-peer review: 200
// idle connections wrote 200 error lines) costs a few lines every few seconds, and the next line
// says how many were not logged. The caller passes the time, so the rule is testable without
// waiting.
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace bkp::server {

constexpr std::chrono::seconds kRejectionQuiet{10};
constexpr uint64_t kRejectionBurst = 5;

// The source address of a peer named "address:port" (as backupd names accepted connections):
// what both the connection limit per host and these log lines count by.
std::string peer_address(const std::string& peer);

class Rejections {
 public:
  using Clock = std::chrono::steady_clock;

  // A connection from peer ("address:port") was rejected for `reason`: the line to log, or
  // nothing when its address had kRejectionBurst lines in the current kRejectionQuiet already.
  std::optional<std::string> line(const std::string& peer, const std::string& reason,
                                  Clock::time_point now = Clock::now());

 private:
  struct Seen {
    Clock::time_point since;  // the start of the address's current period
    uint64_t logged = 0;      // lines in it
    uint64_t unlogged = 0;    // rejections not logged since the last line
  };
  std::mutex mu_;
  std::map<std::string, Seen> by_address_;  // guarded by mu_; bounded (line())
};

}  // namespace bkp::server
