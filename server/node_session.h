// The node side of backupd: one backupfs streaming one volume's changes into its mirror.
#pragma once

#include <atomic>
#include <string>

#include "common/net/conn.h"
#include "common/wire/messages.h"
#include "server/hub.h"

namespace bkp::server {

// Serves one node connection after its Hello until it closes, fails, or stopping is set (the
// caller then shuts the socket down to end a blocking recv). Logs every outcome itself; on an
// error it sends a kError frame first. hello_bytes: size of the Hello frame, for the stats.
void run_node_session(net::Conn& conn, const wire::Hello& hello, uint64_t hello_bytes, Hub& hub,
                      const std::string& peer, const std::atomic<bool>& stopping);

}  // namespace bkp::server
