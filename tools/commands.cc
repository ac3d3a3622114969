// The control commands. Each is a Request built from the command line, one round trip
// (repeated by status --watch) and a presentation of the answer: the server's object as is for
// --json (scripts get exactly the documented protocol objects), a table or a one-line
// confirmation otherwise.
//
// Everything the user typed is validated here, before connecting, with the same rules the
// server applies (common/path.h), so a typo costs no round trip and always exits 2 with the
// bad value named; the server's bad_request remains the authority for anything we missed.
#include "tools/commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <optional>

#include "common/net/identity.h"
#include "tools/args.h"
#include "tools/client.h"
#include "tools/extract.h"
#include "tools/format.h"
#include "tools/restore.h"
#include "tools/status.h"
#include "tools/verify_report.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

template <class T>
Outcome<T> usage(Result<T> r) {
  if (!r) return fail_with(Exit::kUsage, kCodeUsage, r.error().message);
  return std::move(*r);
}

// host and path, validated, into the request.
Outcome<void> add_volume(Json& request, const Invocation& inv) {
  request["host"] = BKP_TRY(usage(check_host(inv.host)));
  request["path"] = BKP_TRY(usage(check_volume_path(inv.path)));
  return {};
}

// The volume a request designates, named as the server resolved it (HOST may have been the
// node's address) when the response says.
std::string name_of(const Json& request, const Json& response) {
  auto host = response.find("host");
  return volume_name(host != response.end() && host->is_string() ? host->get<std::string>()
                                                                 : request.value("host", ""),
                     request.value("path", ""));
}

const Json& array_field(const Json& response, const char* key) {
  static const Json kEmpty = Json::array();
  auto it = response.find(key);
  return it != response.end() && it->is_array() ? *it : kEmpty;
}

// "registered web1:/srv/app (node at 127.0.0.1:7701), every 5 min; baseline started": the
// volume is named by the node, so the confirmation says which name it got.
Report present_register(const Json& request, const Json& response) {
  Report r{response, "", {}, {}};
  int64_t every = request.value("every_seconds", int64_t{0});
  Json volume = Json::object();
  if (auto v = response.find("volume"); v != response.end() && v->is_object()) volume = *v;
  auto e = volume.find("every_seconds");
  if (e != volume.end() && e->is_number_integer()) every = e->get<int64_t>();
  r.messages.push_back(fmt::format(
      "registered {} (node at {}), every {}; baseline started",
      volume_name(field_text(volume, "host"), request.value("path", "")),
      node_address(volume.contains("address") ? volume : request), human_period(every)));
  if (volume.contains("copies")) r.messages.push_back("copies: " + copies_text(volume));
  std::string node_id = field_text(volume, "node_id");
  if (node_id != "-" && !node_id.empty()) {
    r.messages.push_back(fmt::format("node identity {} ({})", node_id,
                                     request.contains("node_id")
                                         ? "as given"
                                         : "pinned now: check it against `backupfs --show-id` "
                                           "on the node"));
  }
  return r;
}

// One line for what backupd did, then one per replica: where the copy is gone (purge) or
// closed, and where it will be once a replica returns.
Report present_unregister(const Json& request, const Json& response) {
  Report r{response, "", {}, {}};
  auto p = response.find("purged");
  bool purged = p != response.end() && p->is_boolean() && p->get<bool>();
  std::string deleted = field_text(response, "deleted");
  r.messages.push_back(
      purged ? fmt::format("unregistered {}; deleted its mirror, snapshots and history on backupd{}",
                           name_of(request, response),
                           deleted == "-" || deleted.empty() ? "" : " (" + deleted + ")")
             : fmt::format("unregistered {}; snapshots and history kept",
                           name_of(request, response)));
  const char* copy = purged ? "copy deleted" : "copy closed (kept on disk)";
  const char* later = purged ? "deletes" : "closes";
  for (const Json& replica : array_field(response, "replicas")) {
    std::string name = field_text(replica, "name"), state = field_text(replica, "state");
    if (state == "done") {
      r.messages.push_back(fmt::format("replica {}: {}", name, copy));
    } else if (state == "offline") {
      r.messages.push_back(
          fmt::format("replica {}: offline; it {} its copy when it reconnects", name, later));
    } else if (state == "failed") {
      r.warnings.push_back(fmt::format("replica {}: could not: {}; backupd asks again when it "
                                       "reconnects", name, field_text(replica, "error")));
    } else {
      r.messages.push_back(fmt::format("replica {}: busy; it {} its copy after its current batch",
                                       name, later));
    }
  }
  return r;
}

// "copies of web1:/srv/app: 3 wanted, mirror current, r1 catching up, r2 catching up".
Report present_set(const Json& request, const Json& response) {
  Report r{response, "", {}, {}};
  Json volume = Json::object();
  if (auto v = response.find("volume"); v != response.end() && v->is_object()) volume = *v;
  r.messages.push_back(fmt::format("copies of {}: {}",
                                   volume_name(field_text(volume, "host"), request.value("path", "")),
                                   copies_text(volume)));
  return r;
}

Report present_run(const Json& request, const Json& response) {
  Report r{response, "", {}, {}};
  const Json& run = response.contains("run") ? response["run"] : Json();
  const std::string name = volume_name(field_text(response, "host"), request.value("path", ""));
  const std::string status = field_text(run, "status");
  const uint64_t ms = run.value("duration_ms", uint64_t{0});
  if (status == "written") {
    r.messages.push_back(fmt::format("run {}: written {} ({}) in {}", name,
                                     field_text(run, "snapshot"),
                                     human_size(run.value("snapshot_bytes", uint64_t{0})),
                                     human_duration_ms(ms)));
    if (auto w = field_text(run, "warnings"); !w.empty()) r.warnings.push_back(w);
  } else if (status == "unchanged") {
    r.messages.push_back(fmt::format(
        "run {}: unchanged since the last snapshot, nothing written (checked in {})", name,
        human_duration_ms(ms)));
  } else {
    r.messages.push_back(fmt::format("run {}: failed: {}", name, field_text(run, "error")));
    r.exit = Exit::kFailure;
  }
  return r;
}

Report present_list(const Json& response) {
  Report r{response, "", {}, {}};
  const Json& volumes = array_field(response, "volumes");
  if (volumes.empty()) {
    r.messages.push_back("no volumes registered");
  } else {
    r.table = render_volumes(volumes);
  }
  return r;
}

Report present_history(const Json& request, const Json& response) {
  Report r{response, "", {}, {}};
  const Json& runs = array_field(response, "runs");
  if (runs.empty()) {
    r.messages.push_back(fmt::format("no runs yet for {}", name_of(request, response)));
  } else {
    r.table = render_runs(runs);
  }
  const Json& verifies = array_field(response, "verifies");
  if (!verifies.empty()) r.table += (r.table.empty() ? "" : "\n") + render_verifies(verifies);
  return r;
}

// "replica" of "replica_add".
std::string peer_kind(const std::string& command) { return command.substr(0, command.find('_')); }

bool is_peer_command(const std::string& command) {
  for (const char* kind : {"replica_", "operator_"}) {
    for (const char* verb : {"add", "remove", "list"}) {
      if (command == std::string(kind) + verb) return true;
    }
  }
  return false;
}

// replica/operator add, remove and list (docs/PROTOCOL.md "Control").
Outcome<Json> make_peer_request(const Invocation& inv, Json request) {
  if (inv.command.ends_with("_list")) return request;
  auto id = net::parse_id(inv.id);
  if (!id) return fail_with(Exit::kUsage, kCodeUsage, fmt::format("ID: {}", id.error().message));
  request["id"] = *id;
  if (inv.command.ends_with("_add") && !inv.name.empty()) {
    request["name"] = BKP_TRY(usage(check_peer_name(inv.name)));
  }
  return request;
}

Report present_peer(const Invocation& inv, const Json& response) {
  Report r{response, "", {}, {}};
  std::string kind = peer_kind(inv.command);
  if (inv.command.ends_with("_add")) {
    const Json& peer = response.contains(kind) ? response[kind] : response;
    std::string name = field_text(peer, "name");
    r.messages.push_back(fmt::format(
        "authorised {} {}{}; {}", kind, field_text(peer, "id"), name == "-" ? "" : " (" + name + ")",
        kind == "replica" ? "backupd serves it from its next connection"
                          : "it may now use bkptool over TCP"));
  } else if (inv.command.ends_with("_remove")) {
    uint64_t closed = field_u64(response, "sessions_closed");
    r.messages.push_back(fmt::format("removed {} {}; {}", kind, field_text(response, "id"),
                                     closed == 0 ? "it had no open session"
                                                 : counted(closed, "open session", "open sessions") +
                                                       " closed"));
  } else {
    const Json& peers = array_field(response, kind == "replica" ? "replicas" : "operators");
    const Json& pending = array_field(response, "pending");
    if (peers.empty()) r.messages.push_back(fmt::format("no {}s authorised", kind));
    if (!peers.empty()) r.table = render_peers(peers);
    if (!pending.empty()) {
      r.table += (r.table.empty() ? "" : "\n") + render_pending(pending);
      r.messages.push_back("authorise a waiting replica with: bkptool replica add ID");
    }
  }
  return r;
}

Report present_snapshots(const Json& request, const Json& response) {
  Report r{response, "", {}, {}};
  const Json& snapshots = array_field(response, "snapshots");
  if (snapshots.empty()) {
    r.messages.push_back(fmt::format("no snapshots of {}", name_of(request, response)));
  } else {
    r.table = render_snapshots(snapshots);
  }
  return r;
}

}  // namespace

Outcome<Json> make_request(const Invocation& inv) {
  Json request = Json::object();
  request["cmd"] = inv.command;
  if (inv.command == "list") return request;
  if (is_peer_command(inv.command)) return make_peer_request(inv, std::move(request));
  if (inv.command == "status") {
    if (inv.host.empty() != inv.path.empty()) {
      return fail_with(Exit::kUsage, kCodeUsage,
                       "status takes HOST and PATH together, or neither for every volume");
    }
    if (!inv.host.empty()) BKP_TRY_VOID(add_volume(request, inv));
    return request;
  }
  if (inv.command == "register") {
    request["address"] = BKP_TRY(usage(check_host(inv.host)));
    request["path"] = BKP_TRY(usage(check_volume_path(inv.path)));
    request["port"] = BKP_TRY(usage(parse_port(inv.port)));
    request["every_seconds"] = BKP_TRY(usage(parse_period(inv.every)));
    if (!inv.node_id.empty()) {
      request["node_id"] = BKP_TRY(usage(net::parse_id(inv.node_id)));
    }
    if (!inv.copies.empty()) request["copies"] = BKP_TRY(usage(parse_copies(inv.copies)));
    return request;
  }
  BKP_TRY_VOID(add_volume(request, inv));
  if (inv.command == "set") {
    request["copies"] = BKP_TRY(usage(parse_copies(inv.copies)));
  } else if (inv.command == "unregister") {
    request["purge"] = inv.purge;
  } else if (inv.command == "history") {
    request["limit"] = BKP_TRY(usage(parse_limit(inv.limit)));
  } else if (inv.command == "verify") {
    request["snapshots"] = inv.snapshots;
    request["replicas"] = inv.replicas;
    request["read_data"] = inv.read_data;
  } else if (inv.command == "restore") {
    if (inv.snapshot.empty()) {
      return fail_with(Exit::kUsage, kCodeUsage, "--snapshot: empty id (use an id or 'latest')");
    }
    if (inv.to.empty()) {
      return fail_with(Exit::kUsage, kCodeUsage, "--to: the target directory is empty");
    }
    request["snapshot"] = inv.snapshot;
    if (inv.live && inv.snapshot != "latest") {
      return fail_with(Exit::kUsage, kCodeUsage,
                       "--live restores the tree as it is now: it cannot be combined with "
                       "--snapshot");
    }
  } else if (inv.command != "snapshots" && inv.command != "run") {
    return fail_with(Exit::kUsage, kCodeUsage, fmt::format("unknown command '{}'", inv.command));
  }
  return request;
}

Report present(const Invocation& inv, const Json& request, const Json& response) {
  if (inv.command == "register") return present_register(request, response);
  if (inv.command == "unregister") return present_unregister(request, response);
  if (inv.command == "list") return present_list(response);
  if (inv.command == "history") return present_history(request, response);
  if (inv.command == "snapshots") return present_snapshots(request, response);
  if (inv.command == "status") {
    Report r = present_status(response, 0, Watch{});
    r.exit = status_exit(request, response);
    return r;
  }
  if (inv.command == "set") return present_set(request, response);
  if (inv.command == "run") return present_run(request, response);
  if (inv.command == "verify") return present_verify(request, response);
  if (is_peer_command(inv.command)) return present_peer(inv, response);
  return Report{response, "", {}, {}};
}

Outcome<void> check_restore_target(const Invocation& inv) {
  auto state = inspect_dir(inv.to);
  if (!state) {
    Exit exit = state.error().code == ENOTDIR ? Exit::kUsage : Exit::kFailure;
    return fail_with(exit, exit == Exit::kUsage ? kCodeUsage : kCodeLocal,
                     fmt::format("--to: {}", state.error().message));
  }
  if (*state == DirState::kNonEmpty && !inv.force) {
    return fail_with(Exit::kUsage, kCodeUsage,
                     fmt::format("restore target {} is not empty; use --force to restore into it "
                                 "(files from the snapshot replace files of the same name)",
                                 inv.to));
  }
  return {};
}

Outcome<void> run(const Invocation& inv, const ServerAddress& server, const ReportSink& sink) {
  Json request = BKP_TRY(make_request(inv));
  if (inv.command == "restore") {
    BKP_TRY_VOID(check_restore_target(inv));
    sink(BKP_TRY(run_restore(inv, server, request)));
    return {};
  }
  std::optional<Watch> watch;
  if (inv.command == "status") watch = BKP_TRY(watch_options(inv, isatty(STDOUT_FILENO) == 1));
  auto client = BKP_TRY(ControlClient::connect(server));
  if (watch) return run_status(*client, request, *watch, sink);
  // run waits for a whole snapshot run, a verify for reading the volume's copies.
  const int timeout = inv.command == "run"      ? kRunTimeoutMs
                      : inv.command == "verify" ? -1
                                                : kResponseTimeoutMs;
  sink(present(inv, request, BKP_TRY(client->call(request, timeout))));
  return {};
}

}  // namespace bkp::tools
