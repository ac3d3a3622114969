// `bkptool restore`: receive a snapshot stream from backupd and extract it (docs/PROTOCOL.md,
// "Control": Response with the size, Data frames carrying exactly that many bytes, a final
// Response).
#pragma once

#include <string>

#include "tools/client.h"
#include "tools/commands.h"

namespace bkp::tools {

// Sends the restore request on client and extracts the answer into inv.to, creating it if it
// is missing (only once backupd has accepted the request, so a typo in the snapshot id leaves
// no empty directory behind). Failures: the server's (no_snapshot, unknown_volume...), code
// "protocol" for a broken stream, code "local" for extraction errors (exit 1).
Outcome<Report> run_restore(ControlClient& client, const Invocation& inv, const Json& request);

}  // namespace bkp::tools
