// Restore sources: remembered, learned from backupd, or given with --from (restore_sources.h).
#include "tools/restore_sources.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "common/files.h"
#include "common/log.h"
#include "common/net/identity.h"
#include "common/net/socket.h"

namespace bkp::tools {
namespace {

// The entry if every field is there and well formed (the address parses, the id is canonical).
std::optional<KnownSource> known_source(const Json& j) {
  if (!j.is_object()) return std::nullopt;
  KnownSource s;
  for (auto [key, field] : {std::pair{"name", &s.name}, {"address", &s.address}, {"id", &s.id}}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
      return std::nullopt;
    }
    *field = it->get<std::string>();
  }
  auto id = net::parse_id(s.id);
  if (!id || !net::parse_host_port(s.address)) return std::nullopt;
  s.id = *id;
  return s;
}

}  // namespace

std::string remembered_sources_path(const std::string& identity_path) {
  return (std::filesystem::path(identity_path).parent_path() / "sources.json").string();
}

std::vector<KnownSource> load_remembered(const std::string& file) {
  std::vector<KnownSource> out;
  std::ifstream in(file);
  if (!in) return out;
  Json j = Json::parse(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(),
                       nullptr, /*allow_exceptions=*/false);
  auto list = j.is_object() ? j.find("sources") : j.end();
  if (list == j.end() || !list->is_array()) {
    log::warn("{}: not a list of restore sources; ignoring it", file);
    return out;
  }
  for (const auto& entry : *list) {
    if (auto s = known_source(entry)) {
      out.push_back(*s);
    } else {
      log::warn("{}: skipping a malformed restore source", file);
    }
  }
  return out;
}

Result<void> remember(const std::string& file, const std::vector<KnownSource>& learned) {
  auto all = load_remembered(file);
  bool changed = false;
  for (const auto& s : learned) {
    auto it = std::find_if(all.begin(), all.end(), [&](const auto& k) { return k.name == s.name; });
    if (it == all.end()) {
      all.push_back(s);
      changed = true;
    } else if (!(*it == s)) {
      *it = s;
      changed = true;
    }
  }
  if (!changed) return {};
  Json list = Json::array();
  for (const auto& s : all) {
    list.push_back(Json{{"name", s.name}, {"address", s.address}, {"id", s.id}});
  }
  BKP_TRY_VOID(make_dirs(std::filesystem::path(file).parent_path().string()));
  return write_file_atomic(file, Json{{"sources", list}}.dump(2) + "\n", Durability::kSync);
}

std::vector<KnownSource> sources_from_answer(const Json& header) {
  std::vector<KnownSource> out;
  auto list = header.find("sources");
  if (list == header.end() || !list->is_array()) return out;
  for (const auto& entry : *list) {
    if (auto s = known_source(entry)) out.push_back(*s);
  }
  return out;
}

ServerAddress source_address(const KnownSource& source, const ServerAddress& server) {
  ServerAddress out;
  out.transport = Transport::kTcp;
  out.where = net::parse_host_port(source.address).value_or(net::HostPort{});
  out.text = source.address;
  out.role = "replica " + source.name;
  out.source = "restore sources";
  out.server_id = source.id;
  out.server_id_source = "the restore sources backupd named";
  out.tls = true;
  out.identity_path = server.identity_path;
  return out;
}

Outcome<std::vector<ServerAddress>> parse_from(std::string_view list, const ServerAddress& server,
                                               const std::vector<KnownSource>& known) {
  std::vector<ServerAddress> out;
  auto usage = [](std::string message) {
    return fail_with(Exit::kUsage, kCodeUsage, "--from: " + std::move(message));
  };
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    const bool last = comma == std::string_view::npos;
    std::string_view entry = list.substr(start, last ? comma : comma - start);
    start = last ? list.size() + 1 : comma + 1;
    if (entry.empty()) return usage("an empty entry (use ADDR:PORT[,ADDR:PORT...])");
    std::string id;
    const bool socket_path = entry.find('/') != std::string_view::npos;
    if (size_t at = entry.find('@'); at != std::string_view::npos && !socket_path) {
      auto parsed = net::parse_id(entry.substr(0, at));
      if (!parsed) return usage(fmt::format("'{}': {}", entry, parsed.error().message));
      id = *parsed;
      entry = entry.substr(at + 1);
    }
    auto address = parse_server(entry);
    if (!address) return usage(address.error().message);
    address->source = "--from";
    address->tls = server.tls;
    address->identity_path = server.identity_path;
    const bool is_backupd = address->text == server.text;
    auto remembered = std::find_if(known.begin(), known.end(), [&](const KnownSource& k) {
      return k.address == address->text;
    });
    if (is_backupd) {
      address->role = server.role;
    } else if (remembered != known.end()) {
      address->role = "replica " + remembered->name;
    } else {
      address->role = "source";
    }
    if (!id.empty()) {
      address->server_id = id;
      address->server_id_source = "--from";
    } else if (is_backupd) {
      address->server_id = server.server_id;
      address->server_id_source = server.server_id_source;
    } else if (remembered != known.end()) {
      address->server_id = remembered->id;
      address->server_id_source = "the remembered restore sources";
    } else if (address->transport == Transport::kTcp && address->tls) {
      return usage(fmt::format("no identity is known for {}: write it as ID@{} (a replicator's "
                               "id: `replicator --root DIR --show-id` on its host)",
                               address->text, address->text));
    }
    out.push_back(std::move(*address));
  }
  return out;
}

}  // namespace bkp::tools
