// backupd's configuration file. TOML because operators edit it by hand; every error names the
// file and the key, and an unknown key is an error rather than silently ignored, since a typo
// ("listne") would otherwise leave the daemon on a default the operator did not choose.
#include "server/config.h"

#include <grp.h>
#include <sys/stat.h>

#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <set>
#include <toml++/toml.h>
#include <vector>

#include "common/progress.h"
#include "server/database.h"

namespace bkp::server {
namespace {

const std::set<std::string> kKnownKeys = {
    "listen",         "state_dir",    "snapshot_gzip_level", "snapshot_threads",
    "keep_snapshots", "copies",       "replica_grace_seconds", "tls",
    "control_socket", "http_listen",  "control_group",       "max_queued_ops",
    "verify_every_seconds", "verify_read_data", "forward_cache_mib", "catalog", "server_name", "lease_seconds", "snapshot_store",
    "snapshot_store_credentials"};

Result<std::string> string_key(const toml::table& table, const std::string& file,
                               const std::string& key) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return std::string();
  auto value = node->value<std::string>();
  if (!value || node->type() != toml::node_type::string) {
    return fail(EINVAL, fmt::format("config {}: key '{}' must be a string", file, key));
  }
  if (value->empty()) return fail(EINVAL, fmt::format("config {}: key '{}' is empty", file, key));
  return *value;
}

// Leaves value unchanged when the key is absent.
Result<void> int_key(const toml::table& table, const std::string& file, const std::string& key,
                     int64_t min, int64_t max, int& value) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return {};
  if (node->type() != toml::node_type::integer) {
    return fail(EINVAL, fmt::format("config {}: key '{}' must be an integer", file, key));
  }
  int64_t v = *node->value<int64_t>();
  if (v < min || v > max) {
    return fail(EINVAL, fmt::format("config {}: key '{}' must be from {} to {}, not {}", file, key,
                                    min, max, v));
  }
  value = static_cast<int>(v);
  return {};
}

Result<void> bool_key(const toml::table& table, const std::string& file, const char* key,
                      bool& value) {
  const toml::node* node = table.get(key);
  if (!node) return {};
  if (node->type() != toml::node_type::boolean) {
    return fail(EINVAL, fmt::format("config {}: key '{}' must be true or false", file, key));
  }
  value = *node->value<bool>();
  return {};
}

// The id of a group by name; ENOENT when there is no such group.
Result<gid_t> group_id(const std::string& name) {
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  int rc = getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (rc != 0) return fail(rc, fmt::format("looking up group '{}': {}", name, std::strerror(rc)));
  if (found == nullptr) return fail(ENOENT, fmt::format("no group named '{}'", name));
  return found->gr_gid;
}

}  // namespace

Result<std::optional<net::HostPort>> parse_http_listen(std::string_view text) {
  if (text == "off") return std::optional<net::HostPort>();
  return std::optional<net::HostPort>(BKP_TRY(net::parse_host_port(text)));
}

std::string catalog_location(const Settings& settings) {
  return settings.catalog.empty() ? settings.state_dir + "/catalog.db" : settings.catalog;
}

std::string identity_path(const std::string& state_dir) { return state_dir + "/identity.pem"; }

Result<Settings> load_settings(const Options& options) {
  Settings s;
  std::string listen;
  if (!options.config_file.empty()) {
    const std::string& file = options.config_file;
    if (::access(file.c_str(), R_OK) != 0) return fail_errno(fmt::format("config {}", file));
    struct stat st{};
    if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {  // a directory parses as empty
      return fail(EINVAL, fmt::format("config {}: not a regular file", file));
    }
    toml::table table;
    try {
      table = toml::parse_file(file);
    } catch (const toml::parse_error& e) {
      const auto& where = e.source().begin;
      return fail(EINVAL, fmt::format("config {}:{}:{}: {}", file, where.line, where.column,
                                      e.description()));
    }
    for (const auto& [key, node] : table) {
      if (!kKnownKeys.contains(std::string(key.str()))) {
        return fail(EINVAL, fmt::format("config {}: unknown key '{}'", file, key.str()));
      }
    }
    listen = BKP_TRY(string_key(table, file, "listen"));
    s.state_dir = BKP_TRY(string_key(table, file, "state_dir"));
    s.catalog = BKP_TRY(string_key(table, file, "catalog"));
    if (!s.catalog.empty() && !Database::is_postgres_uri(s.catalog)) {
      return fail(EINVAL, fmt::format("config {}: key 'catalog' must be a PostgreSQL URI "
                                      "(postgresql://...); leave it out for SQLite in the state "
                                      "directory", file));
    }
    s.server_name = BKP_TRY(string_key(table, file, "server_name"));
    BKP_TRY_VOID(int_key(table, file, "lease_seconds", 3, 3600, s.lease_seconds));
    if (s.catalog.empty() != s.server_name.empty()) {
      return fail(EINVAL, fmt::format("config {}: key 'server_name' goes with a shared catalog: "
                                      "set both 'catalog' and 'server_name' (unique among the "
                                      "servers sharing it), or neither", file));
    }
    BKP_TRY_VOID(int_key(table, file, "snapshot_gzip_level", 1, 9, s.snapshot_gzip_level));
    BKP_TRY_VOID(int_key(table, file, "snapshot_threads", 0, 256, s.snapshot_threads));
    BKP_TRY_VOID(int_key(table, file, "keep_snapshots", 1, 100000, s.keep_snapshots));
    BKP_TRY_VOID(int_key(table, file, "copies", 1, 16, s.copies));
    BKP_TRY_VOID(int_key(table, file, "replica_grace_seconds", 1, 365 * 86400,
                         s.replica_grace_seconds));
    BKP_TRY_VOID(bool_key(table, file, "tls", s.tls));
    BKP_TRY_VOID(int_key(table, file, "max_queued_ops", 1, 100000000, s.max_queued_ops));
    BKP_TRY_VOID(int_key(table, file, "forward_cache_mib", 0, 1 << 20, s.forward_cache_mib));
    BKP_TRY_VOID(int_key(table, file, "verify_every_seconds", 0, 365 * 86400,
                         s.verify_every_seconds));
    BKP_TRY_VOID(bool_key(table, file, "verify_read_data", s.verify_read_data));
    if (auto socket = BKP_TRY(string_key(table, file, "control_socket")); !socket.empty()) {
      s.control_socket = socket;
    }
    s.control_group = BKP_TRY(string_key(table, file, "control_group"));
    if (!s.control_group.empty()) {
      auto gid = group_id(s.control_group);
      if (!gid) return fail(EINVAL, fmt::format("config {}: key 'control_group': {}", file, gid.error().message));
      s.control_gid = *gid;
    }
    if (auto http = BKP_TRY(string_key(table, file, "http_listen")); !http.empty()) {
      s.http_listen = BKP_TRY(parse_http_listen(http).map_error([&](Error e) {
        return Error{EINVAL, fmt::format("config {}: key 'http_listen': {}", file, e.message)};
      }));
    }
    if (auto store = BKP_TRY(string_key(table, file, "snapshot_store")); !store.empty()) {
      auto key_error = [&](const char* key) {
        return [&file, key](Error e) {
          return Error{EINVAL, fmt::format("config {}: key '{}': {}", file, key, e.message)};
        };
      };
      s.snapshot_store = BKP_TRY(parse_s3_url(store).map_error(key_error("snapshot_store")));
      auto credentials = BKP_TRY(string_key(table, file, "snapshot_store_credentials"));
      if (credentials.empty()) {
        return fail(EINVAL, fmt::format("config {}: key 'snapshot_store' needs "
                                        "'snapshot_store_credentials' (a file of mode 0600)", file));
      }
      s.snapshot_store_credentials = BKP_TRY(
          load_s3_credentials(credentials).map_error(key_error("snapshot_store_credentials")));
    } else if (table.contains("snapshot_store_credentials")) {
      return fail(EINVAL, fmt::format("config {}: key 'snapshot_store_credentials' without "
                                      "'snapshot_store'", file));
    }
    if (!listen.empty()) {
      auto hp = net::parse_host_port(listen);
      if (!hp) {
        return fail(EINVAL, fmt::format("config {}: key 'listen': {}", file, hp.error().message));
      }
      s.listen = *hp;
    }
    if (s.state_dir.empty() && options.state_dir.empty()) {
      return fail(EINVAL, fmt::format("config {}: key 'state_dir' is not set (nor --state-dir)", file));
    }
  }
  if (!options.state_dir.empty()) s.state_dir = options.state_dir;
  if (!options.listen.empty()) {
    auto hp = net::parse_host_port(options.listen);
    if (!hp) return tl::unexpected(hp.error().wrap("--listen"));
    s.listen = *hp;
  }
  s.port_file = options.port_file;
  if (!options.http_listen.empty()) {
    s.http_listen = BKP_TRY(parse_http_listen(options.http_listen).map_error([](Error e) {
      return e.wrap("--http-listen");
    }));
  }
  s.http_port_file = options.http_port_file;
  if (!options.control_socket.empty()) s.control_socket = options.control_socket;
  if (options.no_tls) s.tls = false;
  if (!options.progress_every.empty()) {
    s.progress_every = BKP_TRY(progress::parse_every(options.progress_every)
                                   .map_error([](Error e) { return e.wrap("--progress-every"); }));
  }
  return s;
}

}  // namespace bkp::server
