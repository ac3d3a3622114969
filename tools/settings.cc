// Resolution of backupd's address, from the most explicit source to the least. The config
// file is TOML like backupd's, and equally strict: an unknown key is an error rather than
// ignored, because a typo ("sever = ...") would otherwise silently send bkptool to the default
// address, and on a multi-server site that is a different server, not an error.
#include "tools/settings.h"

#include <fmt/format.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cstdlib>

namespace bkp::tools {
namespace {

Result<net::HostPort> parse_server(std::string_view text) {
  net::HostPort hp = BKP_TRY(net::parse_host_port(text));
  if (hp.port == 0) {
    return fail(EINVAL, fmt::format("address '{}': port 0 cannot be connected to", text));
  }
  return hp;
}

// The `server` value of one config file; an empty string when the file does not set it.
Outcome<std::string> read_config(const std::string& file) {
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
    if (key.str() != "server") {
      return bad(fmt::format("config {}: unknown key '{}'", file, key.str()));
    }
  }
  const toml::node* node = table.get("server");
  if (node == nullptr) return std::string();
  auto value = node->value<std::string>();
  if (!value || node->type() != toml::node_type::string) {
    return bad(fmt::format("config {}: key 'server' must be a string \"host:port\"", file));
  }
  if (auto hp = parse_server(*value); !hp) {
    return bad(fmt::format("config {}: key 'server': {}", file, hp.error().message));
  }
  return *value;
}

}  // namespace

Environment Environment::from_process() {
  return Environment{std::getenv("BKP_SERVER"), std::getenv("XDG_CONFIG_HOME"),
                     std::getenv("HOME")};
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
                                      const std::vector<std::string>& config_files) {
  auto from = [](std::string_view text, std::string source) -> Outcome<ServerAddress> {
    auto hp = parse_server(text);
    if (!hp) {
      return fail_with(Exit::kUsage, kCodeUsage, fmt::format("{}: {}", source, hp.error().message));
    }
    return ServerAddress{*hp, std::string(text), std::move(source)};
  };
  if (!flag.empty()) return from(flag, "--server");
  if (env.bkp_server != nullptr && env.bkp_server[0] != '\0') {
    return from(env.bkp_server, "BKP_SERVER");
  }
  for (const auto& file : config_files) {
    if (::access(file.c_str(), F_OK) != 0) continue;
    if (::access(file.c_str(), R_OK) != 0) {
      return fail_with(Exit::kConfig, kCodeConfig, fmt::format("config {}: not readable", file));
    }
    std::string server = BKP_TRY(read_config(file));
    // A file without `server` still wins over the next one: it is the file the user is
    // editing, and falling through to /etc would be a surprise.
    if (server.empty()) break;
    return ServerAddress{*parse_server(server), server, file};
  }
  return ServerAddress{*parse_server(kDefaultServer), std::string(kDefaultServer), "default"};
}

}  // namespace bkp::tools
