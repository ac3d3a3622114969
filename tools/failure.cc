// The one table that maps the control protocol's error codes to exit codes, next to the text
// that documents them in `bkptool --help`, so a change to one is made in sight of the other.
// The unit tests check every row of docs/PROTOCOL.md against exit_for_code(), and that the
// help names every exit code.
#include "tools/failure.h"

#include <array>
#include <utility>

namespace bkp::tools {
namespace {

constexpr std::array<std::pair<std::string_view, Exit>, 9> kServerCodes = {{
    {"bad_request", Exit::kUsage},
    {"unknown_volume", Exit::kUnknownVolume},
    {"unknown_peer", Exit::kUnknownVolume},
    {"duplicate", Exit::kDuplicate},
    {"node_unreachable", Exit::kNodeUnreachable},
    {"wrong_path", Exit::kNodeUnreachable},
    {"no_snapshot", Exit::kNoSnapshot},
    {"wrong_identity", Exit::kWrongIdentity},
    {"internal", Exit::kFailure},
}};

}  // namespace

const char* help_footer() {
  return R"(Volumes: HOST PATH, where HOST is the volume's name, its node's host name (backupfs
--host, by default that machine's name), whatever ADDRESS `register` reached it at. Where no
volume has that name, the registered address of exactly one volume with that PATH works too.

Exit codes:
  0   success
  1   failure (server-side error, broken connection, restore I/O error, not authorised)
  2   usage: bad arguments or values, non-empty restore target without --force, TCP
      without --server-id
  3   backupd unreachable
  4   unknown volume (no registration for that host and path), or unknown replica or
      operator identity
  5   duplicate registration or identity
  6   node unreachable, or the node serves another path
  7   no such snapshot
  8   wrong identity: a peer is not the one pinned (backupd's --server-id, a node's
      --node-id), or the node does not accept backupd's identity
  9   status HOST PATH: that volume is under-replicated
  10  verify found a difference (1: it could not check everything)
  78  bad configuration file (the message names the file and key)

Server address: --server, else $BKP_SERVER, else `server = "..."` in
$XDG_CONFIG_HOME/backupfs/bkptool.toml (default ~/.config/...) or /etc/backupfs/bkptool.toml,
else the local socket /run/backupd/control.sock. A path (anything with '/', or unix:PATH) is a
local control socket (root or backupd's control_group); ADDR:PORT is TCP with TLS, which needs
backupd's identity: --server-id, else $BKP_SERVER_ID, else `server_id = "..."` beside `server`
(`backupd --show-id` prints it on the server host). bkptool's own identity is --identity, else
$XDG_CONFIG_HOME/bkptool/identity.pem (~/.config/...), made on first use; `bkptool --show-id`
prints it for the server's admin to run `bkptool operator add ID`.)";
}

Exit exit_for_code(std::string_view code) {
  for (const auto& [name, exit] : kServerCodes) {
    if (name == code) return exit;
  }
  return Exit::kFailure;
}

}  // namespace bkp::tools
