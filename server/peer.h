// Helpers every backupd session uses at the edges of a connection: naming the peer in log lines,
// the handshake's first frame, and the one kError frame sent before closing.
#pragma once

#include <string>
#include <string_view>

#include "common/net/conn.h"
#include "common/result.h"
#include "common/wire/messages.h"

namespace bkp::server {

constexpr int kHelloTimeoutMs = 10000;

// "127.0.0.1:43210" / "[::1]:43210" for a connected socket; "?" if unknown.
std::string peer_name(int fd);

// Waits for the first frame and checks it is a Hello of our magic and version with a known role
// (node, replica or control; the caller refuses nodes). EPROTO (or ETIMEDOUT, ECONNRESET) with the reason otherwise.
Result<wire::Hello> recv_hello(net::Conn& conn, int timeout_ms);

// Best effort: queues a kError frame and flushes it. Failures are ignored (the peer may be gone).
void send_error(net::Conn& conn, int code, std::string_view text);

// Sends one encoded message and flushes.
template <class Msg>
Result<void> send_msg(net::Conn& conn, wire::MsgType type, const Msg& msg) {
  std::vector<uint8_t> payload;
  wire::encode(msg, payload);
  BKP_TRY_VOID(conn.send(type, 0, payload));
  return conn.flush();
}

}  // namespace bkp::server
