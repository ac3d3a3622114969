// `bkptool restore`: fetch a snapshot from backupd and the replicators holding copies, in
// parts and in parallel, and extract it (restore.cc; docs/PROTOCOL.md, "Control", restore).
#pragma once

#include <string>

#include "tools/client.h"
#include "tools/commands.h"

namespace bkp::tools {

// Restores the snapshot request names into inv.to, creating it if it is missing (only once a
// source has accepted the request, so a typo in the snapshot id leaves no empty directory
// behind). Sources: inv.from, else backupd at server and the replicators it names, else (backupd
// unreachable) the remembered ones. Failures: the reference source's (no_snapshot,
// unknown_volume...), code "damaged" or "protocol" when a part could be had from no source,
// code "local" for extraction errors (exit 1).
Outcome<Report> run_restore(const Invocation& inv, const ServerAddress& server,
                            const Json& request);

}  // namespace bkp::tools
