// Peers written from docs/PROTOCOL.md that play one side of a stream frame by frame, so a test
// can stop a real replicator (or backupd) at exactly the frame it means: FakeBackupd accepts
// real replicators, StreamFrames sends a stream's frames on any connection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/net/conn.h"
#include "common/net/tls.h"
#include "common/unique_fd.h"
#include "common/wire/messages.h"

namespace bkp::it {

constexpr int kFakePeerTimeoutMs = 10000;

// An Op with mode 0644.
wire::Op make(wire::OpKind kind, std::string path, std::string target = "", uint64_t id = 0);

// The sending side of a stream on conn (a replica session, or a node's).
class StreamFrames {
 public:
  explicit StreamFrames(net::Conn& conn) : conn_(conn) {}

  // Selects a volume of host "h" with that stream instance: the replica's Position.
  wire::Position select(const std::string& path, uint64_t instance);
  void op(const wire::Op& o);
  void write(uint64_t id, const std::string& data);  // at offset 0
  // Commit{batch}; true if the receiver acknowledged it.
  bool commit(uint64_t batch = 1);

 private:
  net::Conn& conn_;
};

// A backupd on 127.0.0.1 that replicators connect to (with --server-id id()).
class FakeBackupd {
 public:
  // identity: the PEM file of its TLS identity (made if missing).
  explicit FakeBackupd(const std::string& identity);
  uint16_t port() const { return port_; }
  std::string id() const { return tls_ ? tls_->id() : ""; }
  // The next replicator's connection, after TLS and its Hello (answered with HelloOk); null
  // (with a test failure) if none came within kFakePeerTimeoutMs.
  std::unique_ptr<net::Conn> accept();

 private:
  UniqueFd listener_;
  uint16_t port_ = 0;
  std::shared_ptr<net::TlsConfig> tls_;
};

}  // namespace bkp::it
