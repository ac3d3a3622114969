// Link: backupd's connection to one registered node, opened by backupd and kept up by the
// link's own thread for as long as the volume is registered.
//
// A registered link is the only way a node's stream reaches backupd (nodes never connect to
// backupd). The connecting side speaks first: backupd sends Attach{path, server_id}; the node
// answers with its Hello (or Error ENOENT "serves another path" / EBUSY "attached to another
// backupd"), and from there the connection carries an ordinary node session
// (run_node_session). The Hello's name is the volume's name: `register` learns it there, and
// every later attach checks it, so a different node that now answers at the registered address
// (another machine got the IP, another backupfs on the port) is refused instead of being
// mirrored into this volume. When the session ends for any reason other than stop(), the thread
// reconnects with backoff (every 100 ms for the first 5 s of an outage, then doubling to 30 s
// (common/backoff.h); a fresh outage after a session that
// committed something), logs each distinct failure of an outage once
// (repeats at debug), and remembers the last error for `bkptool list` and for failed runs.
//
// Thread-safety: status() and last_error() may be called from any thread; start() and stop()
// from one owner thread. stop() returns promptly (it shuts the socket down and wakes the
// backoff wait) except while a connect() is pending, which is bounded by kConnectTimeoutMs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/backoff.h"
#include "common/net/conn.h"
#include "common/net/tls.h"
#include "common/result.h"
#include "common/wire/messages.h"
#include "server/catalog.h"
#include "server/volume.h"

namespace bkp::server {

constexpr int kConnectTimeoutMs = 5000;
constexpr int kAttachTimeoutMs = 10000;  // from Attach sent to the node's Hello

// How backupd dials nodes: the id it sends in every Attach and its TLS (null: TLS off).
struct Dialer {
  uint64_t server_id = 0;
  std::shared_ptr<net::TlsConfig> tls;
};

// A connection on which the node has answered Attach with a valid Hello for the right path.
struct AttachedNode {
  std::unique_ptr<net::Conn> conn;
  wire::Hello hello;
  uint64_t hello_bytes = 0;  // size of the Hello frame, for the volume's stats
  std::string node_id;       // the identity the node presented ("" with TLS off)
};

// "127.0.0.1:4567", "[::1]:4567".
std::string node_address(const std::string& address, uint16_t port);

// Connects to the node at reg.address:reg.port and attaches. reg.host is the volume's name the
// node must give in its Hello; empty (during `register`) accepts any name. Errors, each a full
// sentence naming the node:
//   ECONNREFUSED (any connect failure: refused, unresolvable, timed out): "node H:P
//     unreachable: connect: Connection refused"
//   ENOENT: the node serves another path (its Error text, or a Hello for another path)
//   EBUSY: the node is attached to another backupd
//   EPERM: the node's Hello names another host than reg.host (an Error frame tells it why)
//   EACCES: the node presents another identity than reg.node_id (checked right after the TLS
//     handshake, before the Attach names the path; an empty reg.node_id accepts any), or it
//     refused backupd's identity (its Error text says how to authorise it)
//   EPROTO / ETIMEDOUT / ECONNRESET: not a backupfs node, or it did not answer in time.
// on_socket is called with the connected socket before anything is sent, so that another
// thread can shut it down to cancel the wait (it stays valid until the result is destroyed).
// purpose kManifest: the connection is for one verify manifest, not the stream (server/verify.h).
Result<AttachedNode> attach_node(const Registration& reg, const Dialer& dialer,
                                 const std::function<void(int)>& on_socket,
                                 wire::AttachPurpose purpose = wire::AttachPurpose::kStream);

struct LinkStatus {
  bool connected = false;                 // a node session is running
  std::optional<std::string> last_error;  // of the current or most recent outage; cleared on attach
  int64_t failures = 0;                   // consecutive failed attempts in the current outage
};

class Link {
 public:
  // Called on the link thread when a volume registered before node identities existed (empty
  // reg.node_id) first attaches: the identity to pin from now on.
  using Pin = std::function<void(const std::string& node_id)>;

  Link(Registration reg, std::shared_ptr<Volume> volume, Dialer dialer, Pin pin);
  ~Link();  // stop()
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Starts the link thread. first: a connection register already attached (used before any
  // reconnect), or nullopt to connect now.
  void start(std::optional<AttachedNode> first);
  // Ends the session (closing the connection) and the thread. Idempotent.
  void stop();

  LinkStatus status() const;
  // Why the volume cannot be archived now: the last error, or "node H:P not connected yet".
  std::string unavailable_reason() const;
  const Registration& registration() const { return reg_; }

 private:
  void main(std::optional<AttachedNode> first);
  void serve(AttachedNode node);
  void note_failure(const Error& e);
  void set_socket(int fd);
  void sleep_backoff();
  void wait_for_space();  // after a session ended on a full disk (full_disk.h)

  const Registration reg_;
  const std::shared_ptr<Volume> volume_;
  const Dialer dialer_;
  const Pin pin_;
  std::string node_id_;  // reg_.node_id, or the one pinned since (link thread only)
  const std::string address_;  // node_address(reg_.address, reg_.port)

  std::thread thread_;
  std::atomic<bool> stopping_{false};
  Backoff backoff_;  // link thread only
  // Batches the volume committed since backupd started (a session made progress if it moved;
  // the batch number alone may not, as a restarted node counts from 1 again).
  uint64_t batches_committed() const;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // wakes the backoff wait on stop()
  // Guarded by mu_.
  LinkStatus status_;
  int socket_ = -1;  // the live connection's socket (owned by its Conn), for stop()
};

}  // namespace bkp::server
