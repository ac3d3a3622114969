// NodeSession: the node's end of the stream to backupd — takes what the FUSE side recorded and
// ships it, one acknowledged batch at a time, on its own thread, to the backupd that attached.
//
// backupd connects to us (registration, docs/PROTOCOL.md "Connections and roles"): the
// AttachListener accepts and checks the Attach, then offers the connection here. One backupd is
// served at a time; an offer while another is attached and alive is refused with EBUSY. When the
// connection breaks the session waits for the next attach, keeping the batch in flight.
//
// Nothing here ever blocks a FUSE callback: the only shared state is the ChangeLog (whose
// methods never wait on I/O) and, during a baseline scan, the log's namespace lock held
// exclusively for the length of a metadata walk.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/changes/change_log.h"
#include "common/changes/shipper.h"
#include "common/changes/transfer_progress.h"
#include "common/net/conn.h"
#include "common/progress.h"
#include "common/result.h"
#include "common/stream/sender.h"
#include "common/unique_fd.h"
#include "fs/attach_listener.h"
#include "fs/source_activity.h"

namespace bkp::fs {

struct SessionOptions {
  std::string host;       // the volume's host name (Hello.name)
  std::string path;       // the absolute path this node serves; Attach.path must equal it
  uint64_t instance = 0;  // random per stream (Hello.instance)
  // A stream handed over by the previous worker (keeper.h): its last batch backupd committed.
  // The instance is then that stream's, and numbering goes on from here.
  std::optional<uint64_t> resume_committed;
  std::shared_ptr<progress::Meter> meter;  // shows what is shipped (must not be null)
  net::Trust trust;  // TLS and the backupd identities this node serves
  // Told of every batch's files before and after their data is read, and asked which files a
  // reconcile must compare by content (source_activity.h); null: neither.
  SourceActivity* activity = nullptr;
};

class NodeSession {
 public:
  // listener: a listening TCP socket (owned from now on). root_fd: the tree's root directory
  // (mount fd for handles, root of the baseline scan). log and root_fd must outlive the session.
  NodeSession(SessionOptions options, UniqueFd listener, changes::ChangeLog& log, int root_fd);
  ~NodeSession();  // stops at once if drain() was not called
  NodeSession(const NodeSession&) = delete;
  NodeSession& operator=(const NodeSession&) = delete;

  // Starts accepting and the session thread.
  void start();
  // No more changes will be recorded. If a backupd is attached, ship what is left, waiting up to
  // grace; otherwise stop at once. Then close the port. True if nothing recorded is left
  // unacknowledged.
  bool drain(std::chrono::milliseconds grace);

  const changes::ShipCounters& counters() const { return counters_; }
  // What backupd does not have yet (any thread).
  stream::Lag lag() const { return sender_.lag(); }
  // Whether a backupd is attached now (any thread).
  bool attached() const;
  // The last batch backupd committed, as far as this session knows; for after drain().
  uint64_t committed() const { return sender_.committed(); }

 private:
  class StatusSource;

  // AttachListener's admit callback (handshake threads).
  // A stream attach, or (AttachPurpose::kManifest) a verify's manifest, answered right here.
  Result<void> offer(Attached& attached);
  Result<void> answer_manifest(Attached& attached);
  wire::Hello hello() const;
  bool peer_gone_locked() const;  // mu_ held

  // Session thread.
  void main();
  // The next attached connection; nullopt when the session should end.
  std::optional<Attached> wait_attached();
  void detach();
  // Hello, then ship until drained. Returns ok only when draining finished cleanly.
  Result<void> run_session(Attached& attached);
  Result<void> ship(net::Conn& conn, const changes::Batch& batch);
  Result<void> check_idle(net::Conn& conn);
  // Replaces the log with a scan of the whole tree.
  Result<void> take_baseline(net::Conn& conn);
  Result<void> send_status(net::Conn& conn, const std::string& current_file);
  bool status_due() const;
  bool nothing_left() const { return !sender_.in_flight() && log_empty(); }
  bool log_empty() const;
  bool stopping() const { return stop_.load(); }

  const SessionOptions options_;
  changes::ChangeLog& log_;
  const int root_fd_;
  changes::ShipCounters counters_;
  changes::SendProgress progress_;  // session thread only

  // Owned by the session thread.
  stream::Sender sender_{log_};
  bool baseline_ = false;  // the log's batches come from a baseline scan (progress label)
  bool activity_failing_ = false;  // the last batch could not be listed (warned once per streak)
  std::chrono::steady_clock::time_point last_status_{};

  std::thread thread_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;  // guards the fields below; lock order: mu_, then the ChangeLog's
  std::condition_variable cv_;
  std::optional<Attached> handoff_;  // admitted, not yet taken by the session thread
  bool attached_ = false;   // a backupd connection is handed off or being served
  bool drain_waits_ = false;  // a backupd was attached when drain() began: ship to it
  bool done_ = false;
  bool drained_ = false;
  int conn_fd_ = -1;  // the attached connection's socket, so stop can shut it down

  AttachListener listener_;  // last: stopped and destroyed first
};

}  // namespace bkp::fs
