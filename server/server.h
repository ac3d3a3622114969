// backupd's entry point after flag parsing.
#pragma once

#include "server/config.h"

namespace bkp::server {

// Loads the settings, opens the state directory, listens and serves until SIGTERM or SIGINT.
// Returns the process exit code: 0 after a signal, kExitConfig for a bad config file, 1 when
// the state directory or the listening socket cannot be set up. With options.show_id it only
// prints backupd's identity (STATE/identity.pem, made if missing) and returns 0.
int run(const Options& options);

}  // namespace bkp::server
