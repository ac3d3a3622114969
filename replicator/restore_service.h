// RestoreService: a replicator answering bkptool itself, so that a lost backupd does not mean
// lost backups (issue 13 item 4). With `--listen ADDR:PORT` the replicator accepts control
// connections (TLS as server with its own identity; only the identities given with
// --operator-id) and serves two of backupd's control requests from its snapshot copies:
// `snapshots` and `restore`, in exactly backupd's JSON shapes and codes (docs/PROTOCOL.md
// "Control"), so `bkptool --server ADDR:PORT --server-id REPLICA_ID restore ...` works as is.
//
// Each connection gets a thread, at most kMaxRestoreConnections at once (more are closed at
// once, logged), and is dropped after net::kControlIdleTimeoutMs of silence. The service only
// reads files the replica sessions write (held_snapshots.h), so the replica streams from backupd
// go on meanwhile.
//
// Thread-safety: start() and stop() from one thread; the rest is the service's own threads.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/net/socket.h"
#include "common/net/tls.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::replicator {

constexpr size_t kMaxRestoreConnections = 16;

struct RestoreServiceConfig {
  net::HostPort listen;
  std::string port_file;                  // if set: the bound port, once listening
  std::vector<std::string> operator_ids;  // bkptool identities served (grouped, parsed)
  std::string root;                       // the replicator's --root
  std::string name;                       // its replica name: the snapshots' holder
  std::shared_ptr<net::TlsConfig> tls;    // required: identities are how operators are told
  std::shared_timed_mutex* still = nullptr;  // held by the replica sessions (live_archive.h)
};

class RestoreService {
 public:
  // Listens (and writes the port file) and starts accepting. Fails if it cannot listen.
  static Result<std::unique_ptr<RestoreService>> start(RestoreServiceConfig config);
  ~RestoreService() { stop(); }
  RestoreService(const RestoreService&) = delete;
  RestoreService& operator=(const RestoreService&) = delete;

  // Stops accepting, shuts every open connection down and joins every thread. Idempotent.
  void stop();
  uint16_t port() const { return port_; }

 private:
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    UniqueFd socket;  // a dup, only for shutdown() by stop()
  };

  explicit RestoreService(RestoreServiceConfig config) : config_(std::move(config)) {}
  void accept_loop();
  void reap();  // joins finished workers; accept thread only (and stop, once it is joined)
  void serve(UniqueFd socket, const std::string& peer);

  const RestoreServiceConfig config_;
  UniqueFd listening_;
  UniqueFd wake_;  // eventfd: stop() wakes the accept loop
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> served_{0};  // connections accepted, to name them in the log
  std::mutex mu_;
  std::list<Worker> workers_;  // guarded by mu_
};

}  // namespace bkp::replicator
