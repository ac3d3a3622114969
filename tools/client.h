// ControlClient: bkptool's one connection to backupd (docs/PROTOCOL.md, "Control").
//
// connect() opens the local control socket, or TCP (5 s timeout) and TLS with bkptool's
// identity, checking that backupd presents the pinned identity; then it sends
// Hello{role=control, name="bkptool"} and waits for HelloOk. call() sends one Request and returns its Response; a response with "ok": false is
// returned as a Failure carrying the server's code and sentence, mapped to an exit code. A
// restore reads its Data frames with next_frame() after call().
//
// Failures: TCP without a pinned server identity -> kUsage (before connecting); cannot connect
// or no handshake -> kUnreachable; backupd presents another identity -> kWrongIdentity naming the
// one it presented; an Error frame instead of HelloOk -> kFailure with the server's text (code
// not_authorised for an identity backupd does not know); a broken connection, timeout or malformed response
// after the handshake -> kFailure with code "protocol".
//
// Not thread-safe (but for abort()); one thread owns the client.
#pragma once

#include <memory>

#include "common/net/conn.h"
#include "tools/failure.h"
#include "tools/json.h"
#include "tools/settings.h"

namespace bkp::tools {

constexpr int kConnectTimeoutMs = 5000;
constexpr int kHandshakeTimeoutMs = 10000;
constexpr int kResponseTimeoutMs = 60000;  // register waits for the node and the baseline start
// `run` (and restore --live) waits for a whole snapshot run; backupd gives up after 6 h.
constexpr int kRunTimeoutMs = 6 * 3600 * 1000 + 60000;

class ControlClient {
 public:
  static Outcome<std::unique_ptr<ControlClient>> connect(const ServerAddress& server);

  // One Request/Response round trip, waiting up to timeout_ms (-1: as long as it takes) for the
  // answer. The response object when "ok" is true.
  Outcome<Json> call(const Json& request, int timeout_ms = kResponseTimeoutMs);
  // The halves of call(), for requests sent ahead of their answers (answered in order).
  Outcome<void> send(const Json& request);
  Outcome<Json> next_response(int timeout_ms = kResponseTimeoutMs);
  // Breaks the connection: a thread blocked reading from it returns a Failure. The only call
  // safe from another thread.
  void abort();

  // The next frame of a streaming answer (restore's Data frames and final Response), waiting
  // up to timeout_ms. An Error frame is returned as a Failure.
  Outcome<wire::Frame> next_frame(int timeout_ms = kResponseTimeoutMs);

  // A Response payload parsed and checked: an object with a boolean "ok". "ok": false becomes
  // the Failure it describes.
  Outcome<Json> parse_response(const wire::Frame& frame) const;

  const std::string& server_text() const { return server_text_; }
  const std::string& role() const { return role_; }

 private:
  ControlClient(std::unique_ptr<net::Conn> conn, std::string server_text, std::string role)
      : conn_(std::move(conn)), server_text_(std::move(server_text)), role_(std::move(role)) {}
  Failure broken(const Error& e) const;

  std::unique_ptr<net::Conn> conn_;
  std::string server_text_;
  std::string role_;  // ServerAddress::role
};

// bkptool's identity at path (ServerAddress::identity_path) as a TLS configuration, made on first
// use with its directory; a kFailure (code local) naming the file otherwise.
Outcome<std::shared_ptr<net::TlsConfig>> load_identity(const std::string& path);

// The Failure an "ok": false response describes (exported for tests).
Failure failure_from_response(const Json& response);

}  // namespace bkp::tools
