// Which backupd a volume belongs on when several share one catalog (issue 16, item 2):
// rendezvous (highest-random-weight) hashing of the volume's key and each live server's name.
//
// Every server computes the same answer from the same list of live servers, without talking to
// the others. Adding a server moves to it only the volumes it now wins (about 1/N of them, each
// from whichever server held it); removing one moves only its own volumes, each to the server
// that wins it among the rest. Nothing else moves, so a server joining or leaving never
// reshuffles the volumes of the others.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace bkp::server {

// The server among `servers` that volume_key ("host:/path") belongs on; "" if there is none.
std::string preferred_owner(std::string_view volume_key, const std::vector<std::string>& servers);

}  // namespace bkp::server
