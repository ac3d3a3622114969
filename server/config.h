// backupd's settings: command-line flags over an optional TOML file over defaults.
#pragma once

#include <string>

#include "common/net/socket.h"
#include "common/result.h"

namespace bkp::server {

constexpr int kExitUsage = 2;    // bad flags
constexpr int kExitConfig = 78;  // EX_CONFIG: bad configuration file, the message names the key

// What the command line said; empty strings mean "not given".
struct Options {
  std::string state_dir;
  std::string config_file;
  std::string listen;
  std::string port_file;
};

struct Settings {
  std::string state_dir;
  net::HostPort listen{"0.0.0.0", 7700};
  std::string port_file;
};

// Reads the config file if one is given (keys: listen, state_dir) and applies the flags over it.
// Errors name the file and the key; the caller exits kExitConfig. Flags are assumed valid (main
// checks them and exits kExitUsage).
Result<Settings> load_settings(const Options& options);

}  // namespace bkp::server
