// Helpers every backupd session uses at the edges of a connection: naming the peer in log lines
// and the handshake's first frame. (Sending messages and errors: common/net/messenger.h.)
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
// timeout_ms: what is left of the connection's deadline; deadline_ms: the whole of it, named in
// the error ("no hello within 3 s").
Result<wire::Hello> recv_hello(net::Conn& conn, int timeout_ms, int deadline_ms);

}  // namespace bkp::server
