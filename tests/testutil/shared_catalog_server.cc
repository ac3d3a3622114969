// SharedCatalogServer (see shared_catalog_server.h): the directory layout, the start with a
// deadline that gives up early when backupd exits, and reading `list` for served_by.
#include "tests/testutil/shared_catalog_server.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common/path.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::testutil {

std::string shared_catalog_config(const std::string& catalog_url, const std::string& server_name,
                                  int lease_seconds, const std::string& extra) {
  return fmt::format("catalog = \"{}\"\nserver_name = \"{}\"\nlease_seconds = {}\n{}", catalog_url,
                     server_name, lease_seconds, extra);
}

std::optional<std::map<std::string, std::string>> served_by(const std::string& bkptool,
                                                            const std::string& socket) {
  auto r = run_command({bkptool, "--server", socket, "--json", "list"}, std::chrono::seconds(60));
  auto doc = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc["volumes"].is_array()) return std::nullopt;
  std::map<std::string, std::string> out;
  for (const auto& v : doc["volumes"]) {
    // null: a server on a catalog of its own, which serves everything it lists.
    auto who = v.find("served_by");
    if (who == v.end() || !who->is_string()) return std::nullopt;
    out[v.value("path", "")] = who->get<std::string>();
  }
  return out;
}

Result<std::unique_ptr<SharedCatalogServer>> SharedCatalogServer::start(const Options& options) {
  const std::string config = options.dir + "/backupd.toml";
  const std::string state = options.dir + "/state";
  const std::string port_file = options.dir + "/port";
  write_file(config,
             shared_catalog_config(options.catalog_url, options.name, options.lease_seconds,
                                   options.extra_config));
  if (::mkdir(state.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + state);
  auto id = BKP_TRY(show_id({options.backupd, "--state-dir", state, "--show-id"}));
  auto daemon = std::make_unique<Daemon>(
      "backupd " + options.name,
      std::vector<std::string>{options.backupd, "--config", config, "--state-dir", state,
                               "--listen", "127.0.0.1:0", "--port-file", port_file,
                               "--control-socket", state + "/control.sock", "--http-listen",
                               "off"},
      options.log_path);
  std::optional<uint16_t> port;
  wait_until(
      [&] {
        port = read_port_file(port_file);
        return port || !daemon->alive();
      },
      options.timeout, std::chrono::milliseconds(20));
  if (!port) {
    return fail(ETIMEDOUT, fmt::format("backupd {} did not start ({})\n{}", options.name,
                                       daemon->alive() ? "no port file in time"
                                                       : describe_status(*daemon->status()),
                                       daemon->log_tail()));
  }
  return std::unique_ptr<SharedCatalogServer>(
      new SharedCatalogServer(options.name, std::move(id), state, std::move(daemon), *port));
}

std::string SharedCatalogServer::mirror(const std::string& host, const std::string& path) const {
  return state_ + "/volumes/" + host + "/" + escape_path(path) + "/mirror";
}

}  // namespace bkp::testutil
