// The control side of backupd: one bkptool connection, JSON requests and responses
// (docs/PROTOCOL.md "Control").
#pragma once

#include <atomic>
#include <string>

#include "common/net/conn.h"
#include "common/net/control_channel.h"
#include "common/wire/messages.h"
#include "server/peer_gate.h"
#include "server/registry.h"

namespace bkp::server {

using net::kControlIdleTimeoutMs;  // common/net/control_channel.h, with the framing

// Serves one control connection after its Hello{role=control}: HelloOk, then one Response per
// Request (restore adds Data frames and a final Response) until the client closes, stays idle
// past kControlIdleTimeoutMs, sends something that is not a Request (kError EPROTO, close), or
// stopping is set (the caller shuts the socket down). A bad request is answered with
// {"ok":false,...} and the connection stays usable. Every request is one log line naming peer
// (who asked: "local socket", or the address and identity of a remote operator) and what was
// done (a successful status only at debug level: `bkptool status --watch` repeats it every
// second). The caller has already decided that peer may control backupd.
void run_control_session(net::Conn& conn, const wire::Hello& hello, Registry& registry,
                         PeerGate& gate, const std::string& peer,
                         const std::atomic<bool>& stopping);

}  // namespace bkp::server
