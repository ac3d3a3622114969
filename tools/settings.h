// Where bkptool finds backupd: --server, else $BKP_SERVER, else the first config file that
// exists ($XDG_CONFIG_HOME/backupfs/bkptool.toml, or ~/.config/... when XDG_CONFIG_HOME is
// unset, then /etc/backupfs/bkptool.toml; key `server = "host:port"`), else 127.0.0.1:7700.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/net/socket.h"
#include "tools/failure.h"

namespace bkp::tools {

constexpr std::string_view kDefaultServer = "127.0.0.1:7700";

struct ServerAddress {
  net::HostPort where;
  std::string text;    // as given, for messages: "127.0.0.1:7700"
  std::string source;  // "--server", "BKP_SERVER", a config file path, or "default"
};

// The environment the lookup depends on; null members mean "unset". from_process() reads the
// real environment; tests pass their own.
struct Environment {
  const char* bkp_server = nullptr;
  const char* xdg_config_home = nullptr;
  const char* home = nullptr;
  static Environment from_process();
};

// The config files to try, in order.
std::vector<std::string> config_candidates(const Environment& env);

// Resolves the address. A bad --server or BKP_SERVER is a usage error (exit 2); a config file
// that does not parse, has an unknown key, or a bad `server` value fails with kConfig (78) and
// a message naming the file and the key. Config files are not read when --server or
// BKP_SERVER decides, so a broken file never blocks an explicit address.
Outcome<ServerAddress> resolve_server(std::string_view flag, const Environment& env,
                                      const std::vector<std::string>& config_files);

}  // namespace bkp::tools
