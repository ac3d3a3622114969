// Resolution of backupd's address and identity, from the most explicit source to the least.
// The config file is TOML like backupd's, and equally strict: an unknown key is an error rather
// than ignored, because a typo ("sever = ...") would otherwise silently send bkptool to the
// default address, and on a multi-server site that is a different server, not an error.
#include "tools/settings.h"

#include <fmt/format.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cstdlib>

#include "common/net/identity.h"

namespace bkp::tools {
namespace {

constexpr std::string_view kUnixPrefix = "unix:";

// A Unix socket path or a TCP ADDR:PORT (see settings.h).

struct ConfigValues {
  std::string server;     // "" when the file does not set it
  std::string server_id;  // canonical; "" when the file does not set it
};

Outcome<ConfigValues> read_config(const std::string& file) {
  auto bad = [&](std::string message) {
    return fail_with(Exit::kConfig, kCodeConfig, std::move(message));
  };
  toml::table table;
  try {
    table = toml::parse_file(file);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return bad(fmt::format("config {}:{}:{}: {}", file, where.line, where.column, e.description()));
  }
  for (const auto& [key, node] : table) {
    if (key.str() != "server" && key.str() != "server_id") {
      return bad(fmt::format("config {}: unknown key '{}'", file, key.str()));
    }
  }
  ConfigValues out;
  for (const char* key : {"server", "server_id"}) {
    const toml::node* node = table.get(key);
    if (node == nullptr) continue;
    auto value = node->value<std::string>();
    if (!value || node->type() != toml::node_type::string) {
      return bad(fmt::format("config {}: key '{}' must be a string", file, key));
    }
    Result<std::string> checked = std::string(key) == "server"
        ? parse_server(*value).map([](const ServerAddress& s) { return s.text; })
        : net::parse_id(*value);
    if (!checked) return bad(fmt::format("config {}: key '{}': {}", file, key, checked.error().message));
    (std::string(key) == "server" ? out.server : out.server_id) = *checked;
  }
  return out;
}

// The server id from an explicit source, validated.
Outcome<std::string> explicit_id(std::string_view text, std::string_view source) {
  auto id = net::parse_id(text);
  if (!id) return fail_with(Exit::kUsage, kCodeUsage, fmt::format("{}: {}", source, id.error().message));
  return *id;
}

}  // namespace

Result<ServerAddress> parse_server(std::string_view text) {
  ServerAddress out;
  out.text = std::string(text);
  if (text.starts_with(kUnixPrefix) || text.find('/') != std::string_view::npos) {
    std::string_view path = text.starts_with(kUnixPrefix) ? text.substr(kUnixPrefix.size()) : text;
    if (path.empty()) return fail(EINVAL, fmt::format("address '{}': the socket path is empty", text));
    out.transport = Transport::kUnix;
    out.socket_path = std::string(path);
    return out;
  }
  out.transport = Transport::kTcp;
  out.where = BKP_TRY(net::parse_host_port(text));
  if (out.where.port == 0) {
    return fail(EINVAL, fmt::format("address '{}': port 0 cannot be connected to", text));
  }
  return out;
}

Environment Environment::from_process() {
  return Environment{std::getenv("BKP_SERVER"), std::getenv("XDG_CONFIG_HOME"),
                     std::getenv("HOME"), std::getenv("BKP_SERVER_ID")};
}

std::vector<std::string> config_candidates(const Environment& env) {
  std::vector<std::string> out;
  // XDG: an unset or empty XDG_CONFIG_HOME means ~/.config; a relative one is ignored.
  if (env.xdg_config_home != nullptr && env.xdg_config_home[0] == '/') {
    out.push_back(std::string(env.xdg_config_home) + "/backupfs/bkptool.toml");
  } else if (env.home != nullptr && env.home[0] == '/') {
    out.push_back(std::string(env.home) + "/.config/backupfs/bkptool.toml");
  }
  out.push_back("/etc/backupfs/bkptool.toml");
  return out;
}

Outcome<ServerAddress> resolve_server(std::string_view flag, const Environment& env,
                                      const std::vector<std::string>& config_files,
                                      std::string_view server_id_flag) {
  auto from = [](std::string_view text, std::string source) -> Outcome<ServerAddress> {
    auto server = parse_server(text);
    if (!server) {
      return fail_with(Exit::kUsage, kCodeUsage, fmt::format("{}: {}", source, server.error().message));
    }
    server->source = std::move(source);
    return std::move(*server);
  };
  ServerAddress server;
  std::string file_id;  // the server_id of the config file the address came from
  if (!flag.empty()) {
    server = BKP_TRY(from(flag, "--server"));
  } else if (env.bkp_server != nullptr && env.bkp_server[0] != '\0') {
    server = BKP_TRY(from(env.bkp_server, "BKP_SERVER"));
  } else {
    server = BKP_TRY(from(kDefaultServer, "default"));
    for (const auto& file : config_files) {
      if (::access(file.c_str(), F_OK) != 0) continue;
      if (::access(file.c_str(), R_OK) != 0) {
        return fail_with(Exit::kConfig, kCodeConfig, fmt::format("config {}: not readable", file));
      }
      ConfigValues values = BKP_TRY(read_config(file));
      // A file without `server` still wins over the next one: it is the file the user is
      // editing, and falling through to /etc would be a surprise.
      if (values.server.empty()) break;
      server = BKP_TRY(from(values.server, file));
      file_id = values.server_id;
      break;
    }
  }
  if (!server_id_flag.empty()) {
    server.server_id = BKP_TRY(explicit_id(server_id_flag, "--server-id"));
    server.server_id_source = "--server-id";
  } else if (env.bkp_server_id != nullptr && env.bkp_server_id[0] != '\0') {
    server.server_id = BKP_TRY(explicit_id(env.bkp_server_id, "BKP_SERVER_ID"));
    server.server_id_source = "BKP_SERVER_ID";
  } else if (!file_id.empty()) {
    server.server_id = file_id;
    server.server_id_source = server.source;
  }
  return server;
}

Outcome<std::string> identity_path(std::string_view flag, const Environment& env) {
  if (!flag.empty()) return std::string(flag);
  if (env.xdg_config_home != nullptr && env.xdg_config_home[0] == '/') {
    return std::string(env.xdg_config_home) + "/bkptool/identity.pem";
  }
  if (env.home != nullptr && env.home[0] == '/') {
    return std::string(env.home) + "/.config/bkptool/identity.pem";
  }
  return fail_with(Exit::kUsage, kCodeUsage,
                   "no place for bkptool's identity: HOME is not set; give --identity FILE");
}

}  // namespace bkp::tools
