// SharedCatalogServer: one backupd of several that share a PostgreSQL catalog (README, "Running
// more than one server"), started the way ServerTakeoverTest and bench/takeover_volumes.cc need
// it: its own directory, a backupd.toml naming the catalog, the server and its lease time, an
// identity read before it starts (for backupfs --server-id), 127.0.0.1 only, no status page.
//
// Who serves which volume is read as an operator reads it: `bkptool --json list` through any
// server's control socket (served_by()), which every server answers from the shared catalog.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "tests/testutil/daemon.h"

namespace bkp::testutil {

// The backupd.toml of the server `server_name` on the catalog at catalog_url (postgresql://...),
// its leases lease_seconds long, then `extra` (more lines: a snapshot_store, ...).
std::string shared_catalog_config(const std::string& catalog_url, const std::string& server_name,
                                  int lease_seconds, const std::string& extra = "");

// Who serves each volume the catalog holds, as `bkptool --server SOCKET --json list` says: its
// path -> the server's name ("" while nobody does, its lease being taken over). nullopt if that
// server does not answer with a list (it is dead, or not on a shared catalog).
std::optional<std::map<std::string, std::string>> served_by(const std::string& bkptool,
                                                            const std::string& socket);

class SharedCatalogServer {
 public:
  struct Options {
    std::string backupd;      // the binary
    std::string name;         // server_name, unique per catalog
    std::string catalog_url;  // postgresql://...
    int lease_seconds = 3;
    std::string extra_config;  // more lines of its backupd.toml
    std::string dir;          // an existing directory of its own: config, state, socket, port
    std::string log_path;     // its stdout and stderr (appended)
    std::chrono::milliseconds timeout = std::chrono::seconds(20);  // to come up
  };

  // Writes DIR/backupd.toml, makes the identity (DIR/state) and starts backupd on 127.0.0.1:0;
  // returns once its port file shows it listening. An error (with its log) if it does not.
  static Result<std::unique_ptr<SharedCatalogServer>> start(const Options& options);
  ~SharedCatalogServer() = default;  // the Daemon stops it (SIGTERM) if still running

  const std::string& name() const { return name_; }
  const std::string& id() const { return id_; }  // for backupfs --server-id
  uint16_t port() const { return port_; }
  const std::string& state_dir() const { return state_; }
  std::string control_socket() const { return state_ + "/control.sock"; }
  // Where this server keeps its mirror of the volume HOST:PATH.
  std::string mirror(const std::string& host, const std::string& path) const;
  Daemon& process() { return *daemon_; }

 private:
  SharedCatalogServer(std::string name, std::string id, std::string state,
                      std::unique_ptr<Daemon> daemon, uint16_t port)
      : name_(std::move(name)), id_(std::move(id)), state_(std::move(state)),
        daemon_(std::move(daemon)), port_(port) {}

  std::string name_, id_, state_;
  std::unique_ptr<Daemon> daemon_;
  uint16_t port_;
};

}  // namespace bkp::testutil
