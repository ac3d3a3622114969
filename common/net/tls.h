// TLS 1.3 for a Conn, in user space (this kernel has no kTLS): OpenSSL does the handshake and
// the record layer on memory BIOs, and the Conn keeps doing every socket read and send through
// its io_uring, so the data path keeps its shape. The BIOs are our own byte queues rather than
// OpenSSL's memory BIOs, which zero every byte they grow by, zero the whole buffer at each reset
// and move unread input to the front at each write: three passes over every byte of a stream. Peers authenticate each other by certificate
// fingerprint (common/net/identity.h): the handshake accepts any certificate whose key the peer
// proves to hold, and the caller then checks the fingerprint against what the operator pinned.
//
// TlsConfig is shared by every connection of a process (thread-safe); a TlsSession belongs to
// one Conn.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/net/identity.h"
#include "common/result.h"

struct ssl_ctx_st;
struct ssl_st;

namespace bkp::net {

enum class TlsSide { kClient, kServer };

class TlsConfig {
 public:
  // TLS 1.3 only, no session resumption, the peer must present a certificate.
  static Result<std::shared_ptr<TlsConfig>> make(const Identity& identity);
  // load_or_create_identity(path, name), then make().
  static Result<std::shared_ptr<TlsConfig>> load(const std::string& path, const std::string& name);
  ~TlsConfig();
  TlsConfig(const TlsConfig&) = delete;
  TlsConfig& operator=(const TlsConfig&) = delete;

  const std::string& id() const { return id_; }  // this process's own identity
  ssl_ctx_st* ctx() const { return ctx_; }

 private:
  TlsConfig(ssl_ctx_st* ctx, std::string id) : ctx_(ctx), id_(std::move(id)) {}
  ssl_ctx_st* ctx_;
  std::string id_;
};

// What a process accepts of the peers it talks to: its TLS config (null: TLS off, trusted
// loopback only) and the identities it was told to accept.
struct Trust {
  std::shared_ptr<TlsConfig> tls;
  std::vector<std::string> peers;  // grouped identities

  bool allows(const std::string& id) const;
};

class TlsSession {
 public:
  static Result<std::unique_ptr<TlsSession>> make(const TlsConfig& config, TlsSide side);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // One handshake step on what was fed so far: true when the handshake is complete, false when
  // it needs more input from the peer. Output to send may be waiting either way.
  Result<bool> handshake();
  // Encrypts plaintext into records waiting in output().
  Result<void> encrypt(std::span<const uint8_t> plaintext);
  // Ciphertext waiting to be sent; consume(n) after n of it were sent.
  std::span<const uint8_t> output() const;
  void consume(size_t n);
  // Ciphertext received from the peer.
  Result<void> feed(std::span<const uint8_t> ciphertext);
  // Decrypts into out: bytes written, 0 when more ciphertext is needed. ECONNRESET when the
  // peer closed the session, EPROTO for anything the record layer rejects.
  Result<size_t> decrypt(std::span<uint8_t> out);
  // Plaintext or ciphertext received and not yet returned by decrypt().
  bool has_buffered() const;
  // The peer's identity (fingerprint of its certificate), once the handshake is complete.
  std::string peer_id() const;

 private:
  TlsSession() = default;
  struct Queue;  // tls.cc
  // ssl_'s two BIOs point at these; the destructor frees ssl_ before they go.
  std::unique_ptr<Queue> in_, out_;
  ssl_st* ssl_ = nullptr;
};

}  // namespace bkp::net
