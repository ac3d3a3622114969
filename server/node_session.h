// The node side of backupd: one backupfs streaming one volume's changes into its mirror.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "common/net/conn.h"
#include "common/result.h"
#include "common/wire/messages.h"
#include "server/volume.h"

namespace bkp::server {

// Serves one node connection whose Hello the caller has received and checked (role, magic,
// version, path). Marks the volume's node connected (EBUSY, with a kError frame, if another
// session holds it), answers HelloOk, then applies frames until the connection closes, fails,
// or stopping is set (the caller then shuts the socket down to end a blocking recv). Logs every
// outcome itself; on an error it sends a kError frame first. hello_bytes: size of the Hello
// frame, for the stats. peer: "HOST:PORT" of the node, for log lines.
// Returns the error that ended the session: ECONNRESET when the node closed, ECANCELED when
// stopping, the protocol or apply error otherwise.
Error run_node_session(net::Conn& conn, const std::shared_ptr<Volume>& volume,
                       const wire::Hello& hello, uint64_t hello_bytes, const std::string& peer,
                       const std::atomic<bool>& stopping);

}  // namespace bkp::server
