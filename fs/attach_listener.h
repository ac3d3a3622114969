// AttachListener: the node's port. backupd connects here for every volume registered on this
// node (docs/PROTOCOL.md, "Connections and roles"); this class accepts those connections, reads
// and checks the first frame, and hands a connection whose Attach names our volume to whoever
// admits it (the NodeSession).
//
// Each accepted connection gets a short-lived handshake thread, and the accept thread enforces
// every handshake's deadline by shutting its socket down, so a peer that connects and says
// nothing (or trickles bytes) can neither hold the port nor delay a real backupd. At most
// kMaxHandshakes run at once; connections beyond that are closed at once.
//
// With TLS on (the default), the handshake comes first and the backupd must present one of the
// identities this node was told (backupfs --server-id): any other gets Error{EACCES} naming its
// identity, before the Attach is even read, so an impostor learns nothing of the volume.
//
// Refusals follow the protocol: a first frame that is not a well-formed Attach of our magic and
// version gets Error{EPROTO}; an Attach for another path Error{ENOENT, "this node serves /x, not
// /y"}; an Attach the admitter refuses (another backupd is attached) the admitter's error. Each
// is logged as one line naming the peer. Nothing here touches the change log.
//
// Thread-safety: start() and stop() from one owning thread; admit is called on handshake
// threads, possibly concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/net/conn.h"
#include "common/net/tls.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "common/wire/messages.h"

namespace bkp::fs {

// A connection whose Attach was accepted: the stream continues with our Hello.
struct Attached {
  std::unique_ptr<net::Conn> conn;
  wire::Attach attach;
  std::string peer;  // "127.0.0.1:40312", for log lines
};

class AttachListener {
 public:
  // Takes ownership of the connection on success; on error the listener sends the error to the
  // peer (code and message) and closes. Must not block for long, except to answer an Attach
  // whose purpose is a manifest (a verify), which it serves to the end on this thread.
  using Admit = std::function<Result<void>(Attached& attached)>;

  static constexpr auto kAttachDeadline = std::chrono::seconds(10);
  static constexpr size_t kMaxHandshakes = 8;

  // listener: a listening TCP socket. path: the absolute volume path this node serves. trust:
  // TLS and the backupd identities accepted.
  AttachListener(UniqueFd listener, std::string path, net::Trust trust, Admit admit);
  ~AttachListener();  // stop()
  AttachListener(const AttachListener&) = delete;
  AttachListener& operator=(const AttachListener&) = delete;

  void start();
  // Stops accepting, cuts short the handshakes in progress, joins every thread, closes the
  // port. Idempotent.
  void stop();

 private:
  struct Handshake {
    std::thread thread;
    int fd = -1;  // a duplicate of the socket, owned; closed when the handshake is reaped
    std::chrono::steady_clock::time_point deadline;
    bool finished = false;  // the socket is no longer ours to shut down (admitted or closed)
    bool expired = false;   // the deadline passed and the socket was shut down
    bool joinable_now = false;  // the thread has returned
  };

  void accept_loop();
  void expire_and_reap();  // deadlines and finished threads; called by the accept thread
  void handshake(Handshake* h, UniqueFd sock);
  Result<wire::Attach> read_attach(net::Conn& conn, Handshake* h);
  // The TLS handshake and the check of backupd's identity (nothing to do with TLS off).
  Result<void> authenticate(net::Conn& conn, const std::string& peer);
  // Marks the handshake finished; false if the deadline had already cut it.
  bool finish(Handshake* h);

  UniqueFd listen_fd_;
  const std::string path_;
  const net::Trust trust_;
  const Admit admit_;
  std::thread accept_thread_;
  std::atomic<bool> stop_{false};

  std::mutex mu_;  // guards handshakes_ and the fields of each Handshake
  std::list<Handshake> handshakes_;
};

// "127.0.0.1:40312" / "[::1]:40312" for a connected socket; "?" if unknown.
std::string peer_name(int fd);

}  // namespace bkp::fs
