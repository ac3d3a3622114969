// Where bkptool finds backupd, and how it knows that it reached the right one.
//
// Address: --server, else $BKP_SERVER, else the first config file that exists
// ($XDG_CONFIG_HOME/backupfs/bkptool.toml, or ~/.config/... when XDG_CONFIG_HOME is unset, then
// /etc/backupfs/bkptool.toml; key `server`), else the local control socket
// /run/backupd/control.sock. An address is a Unix socket path (anything containing '/', or
// "unix:PATH"): no TLS, the socket's file mode decides who may connect; or ADDR:PORT: TCP with
// TLS, where bkptool proves its own identity and checks backupd's.
//
// backupd's identity (TCP only): --server-id, else $BKP_SERVER_ID, else key `server_id` of the
// config file the address came from (an id pinned in a file belongs to that file's server, never
// to an address given on the command line).
//
// bkptool's own identity (TCP only): --identity FILE, else $XDG_CONFIG_HOME/bkptool/identity.pem,
// else ~/.config/bkptool/identity.pem; made on first use (common/net/identity.h).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/net/socket.h"
#include "tools/failure.h"

namespace bkp::tools {

constexpr std::string_view kDefaultServer = "/run/backupd/control.sock";

enum class Transport { kUnix, kTcp };

struct ServerAddress {
  Transport transport = Transport::kUnix;
  net::HostPort where;      // kTcp
  std::string socket_path;  // kUnix
  std::string text;    // as given, for messages: "127.0.0.1:7700", "/run/backupd/control.sock"
  // What answers there, for messages: "backupd", or "replica r1" for a restore source.
  std::string role = "backupd";
  std::string source;  // "--server", "BKP_SERVER", a config file path, or "default"
  std::string server_id;         // the pinned identity, canonical; "" when none was given
  std::string server_id_source;  // "--server-id", "BKP_SERVER_ID" or a config file path
  // TCP only, set by the command line: TLS (false: --no-tls) with the identity kept there.
  bool tls = true;
  std::string identity_path;
};

// The environment the lookup depends on; null members mean "unset". from_process() reads the
// real environment; tests pass their own.
struct Environment {
  const char* bkp_server = nullptr;
  const char* xdg_config_home = nullptr;
  const char* home = nullptr;
  const char* bkp_server_id = nullptr;
  static Environment from_process();
};

// An address as --server takes it (a socket path, unix:PATH, or ADDR:PORT); EINVAL naming it.
// transport, where or socket_path and text are set, nothing else.
Result<ServerAddress> parse_server(std::string_view text);

// The config files to try, in order.
std::vector<std::string> config_candidates(const Environment& env);

// Resolves the address and the pinned server identity. A bad --server, BKP_SERVER, --server-id
// or BKP_SERVER_ID is a usage error (exit 2); a config file that does not parse, has an unknown
// key, or a bad `server` or `server_id` value fails with kConfig (78) and a message naming the
// file and the key. Config files are not read when --server or BKP_SERVER decides, so a broken
// file never blocks an explicit address.
Outcome<ServerAddress> resolve_server(std::string_view flag, const Environment& env,
                                      const std::vector<std::string>& config_files,
                                      std::string_view server_id_flag = "");

// bkptool's identity file: flag if given, else the XDG location above. A usage Failure when
// neither the flag nor an absolute XDG_CONFIG_HOME or HOME gives one.
Outcome<std::string> identity_path(std::string_view flag, const Environment& env);

}  // namespace bkp::tools
