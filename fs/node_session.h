// NodeSession: the node's end of the stream to backupd — takes what the FUSE side recorded and
// ships it, one acknowledged batch at a time, on its own thread.
//
// Nothing here ever blocks a FUSE callback: the only shared state is the ChangeLog (whose
// methods never wait on I/O) and, during a baseline scan, the log's namespace lock held
// exclusively for the length of a metadata walk.
//
// Obtaining a connected socket (connect_socket) is kept apart from running the session on a
// connection (run_session): registration (issue 3) will have backupd connect to the node, and
// only the former changes.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/changes/change_log.h"
#include "common/changes/shipper.h"
#include "common/net/conn.h"
#include "common/net/socket.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::fs {

struct SessionOptions {
  net::HostPort server;
  std::string host;        // the volume's host name (Hello.name)
  std::string path;        // the volume's absolute path (Hello.path)
  uint64_t instance = 0;   // random per process start
};

class NodeSession {
 public:
  // root_fd: the tree's root directory (mount fd for handles, root of the baseline scan); it
  // and log must outlive the session.
  NodeSession(SessionOptions options, changes::ChangeLog& log, int root_fd);
  ~NodeSession();  // stops at once if drain() was not called
  NodeSession(const NodeSession&) = delete;
  NodeSession& operator=(const NodeSession&) = delete;

  void start();
  // No more changes will be recorded: ship what is left, then stop. Waits up to grace, then
  // abandons the connection. True if everything recorded was acknowledged.
  bool drain(std::chrono::milliseconds grace);

  const changes::ShipCounters& counters() const { return counters_; }

 private:
  void main();
  Result<UniqueFd> connect_socket();
  // Handshake, then ship until drained. Returns ok only when draining finished cleanly.
  Result<void> run_session(net::Conn& conn);
  Result<void> ship(net::Conn& conn, changes::Batch& batch);
  Result<void> check_idle(net::Conn& conn);
  Result<changes::Batch> take_baseline();
  bool log_empty() const;
  bool stopping() const { return stop_.load(); }
  void sleep_backoff();
  void set_conn_fd(int fd);

  const SessionOptions options_;
  changes::ChangeLog& log_;
  const int root_fd_;
  changes::ShipCounters counters_;

  // Owned by the session thread.
  std::optional<changes::Batch> inflight_;  // sent (or about to be), not yet acknowledged
  uint64_t next_number_ = 1;                // batch numbers are ours, strictly increasing
  std::chrono::milliseconds backoff_{100};
  bool outage_logged_ = false;

  std::thread thread_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  bool done_ = false;
  bool drained_ = false;
  int conn_fd_ = -1;  // the live connection's socket, so stop can shut it down
};

}  // namespace bkp::fs
