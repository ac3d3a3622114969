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
Result<wire::Hello> recv_hello(net::Conn& conn, int timeout_ms);

}  // namespace bkp::server
