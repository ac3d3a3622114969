// A control session: bkptool's requests, answered one by one (see control_session.h).
//
// The session is a thin layer over the control framing it shares with a replicator's restore
// service (common/net/control_channel.h): it checks field types, calls the Registry, the
// Catalog or the PeerGate (authorised replicas and operators), and turns the outcome into a
// response with the documented codes. A request that
// fails never ends the connection; a frame that is not a Request does (the peer is not speaking
// the protocol). Restore streams the snapshot file through an fd opened before the response is
// sent: rotation may unlink the file meanwhile, but the bytes promised in the response are the
// bytes sent.
#include "server/control_session.h"


#include <fmt/format.h>

#include <optional>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/net/identity.h"
#include "common/net/messenger.h"
#include "server/control_json.h"
#include "server/peer.h"
#include "server/verify_json.h"

namespace bkp::server {
namespace {

using Handled = ControlResult<json>;

// A snapshot archive a control session has open (ControlSession::open_).
struct OpenSnapshot {
  std::string host, path;
  SnapshotRecord shown;  // bytes: its stored size
  std::unique_ptr<ByteSource> source;
};

// A successful response, or an error response, plus a short summary for the log line.
class ControlSession {
 public:
  ControlSession(net::Conn& conn, Registry& registry, PeerGate& gate, const std::string& peer,
                 const std::atomic<bool>& stopping)
      : channel_(conn), registry_(registry), gate_(gate), peer_(peer), stopping_(stopping) {}

  // Serves requests until the connection ends. Returns the error that ended it.
  Error serve() {
    while (true) {
      auto request = channel_.next(kControlIdleTimeoutMs);
      if (!request) return request.error();
      if (auto r = handle(*request); !r) return r.error();
    }
  }

 private:
  Result<void> handle(const net::ControlRequest& request) {
    const std::string& cmd = request.cmd;
    Handled result = request.invalid.empty()
                         ? dispatch(cmd, request.body)
                         : control_fail(Fault::kBadRequest, request.invalid);
    std::string what = describe(cmd, request.body);
    if (!result) {
      log::info("control {}: {}: {}: {}", peer_, what, fault_code(result.error().fault),
                result.error().message);
      return respond(error_json(result.error()));
    }
    if (result->is_null()) {  // restore answered and streamed (or died half way) itself
      if (stream_error_) {
        log::info("control {}: {}: stream failed: {}", peer_, what, stream_error_->message);
        return tl::unexpected(*std::exchange(stream_error_, std::nullopt));
      }
      log::info("control {}: {}: ok", peer_, what);
      return {};
    }
    if (cmd == "status") {
      log::debug("control {}: {}: ok", peer_, what);  // a watch asks every second
    } else {
      log::info("control {}: {}: ok", peer_, what);
    }
    return respond(*result);
  }

  static std::string describe(const std::string& cmd, const json& request) {
    if (!request.is_object()) return cmd;
    std::string out = cmd;
    for (const char* key : {"address", "host", "path", "id"}) {
      auto it = request.find(key);
      if (it != request.end() && it->is_string()) {
        out += std::string(key == std::string("path") ? ":" : " ") + it->get<std::string>();
      }
    }
    return out;
  }

  Handled dispatch(const std::string& cmd, const json& request) {
    RequestArgs args(request);
    if (cmd == "register") return do_register(args);
    if (cmd == "unregister") return do_unregister(args);
    if (cmd == "list") return do_list();
    if (cmd == "history") return do_history(args);
    if (cmd == "snapshots") return do_snapshots(args);
    if (cmd == "restore") return do_restore(args, request);
    if (cmd == "status") return do_status(args);
    if (cmd == "run") return do_run(args);
    if (cmd == "set") return do_set(args);
    if (cmd == "verify") return do_verify(args);
    for (PeerKind kind : {PeerKind::kReplica, PeerKind::kOperator}) {
      std::string prefix = std::string(peer_kind_name(kind)) + "_";
      if (cmd == prefix + "add") return do_peer_add(kind, args);
      if (cmd == prefix + "remove") return do_peer_remove(kind, args);
      if (cmd == prefix + "list") return do_peer_list(kind);
    }
    return control_fail(Fault::kBadRequest,
                        fmt::format("unknown command '{}' (register, unregister, list, history, "
                                    "snapshots, restore, status, set, run, verify, replica_add, "
                                    "replica_remove, replica_list, operator_add, operator_remove, "
                                    "operator_list)",
                                    cmd));
  }

  Handled do_peer_add(PeerKind kind, const RequestArgs& args) {
    auto id = BKP_TRY(args.string("id"));
    auto name = BKP_TRY(args.string_or("name", ""));
    auto added = BKP_TRY(gate_.add(kind, id, name, wall_ms()));
    return json{{"ok", true}, {peer_kind_name(kind), peer_json(added)}};
  }

  // A removed identity's open sessions are shut down at once.
  Handled do_peer_remove(PeerKind kind, const RequestArgs& args) {
    auto id = BKP_TRY(args.string("id"));
    auto closed = BKP_TRY(gate_.remove(kind, id));
    return json{{"ok", true}, {"id", *net::parse_id(id)}, {"sessions_closed", closed}};
  }

  // Replicas come with the ones refused lately, which are what an operator adds next.
  Handled do_peer_list(PeerKind kind) {
    auto peers = BKP_TRY(gate_.list(kind));
    json out = json::array();
    for (const auto& p : peers) out.push_back(peer_json(p));
    if (kind == PeerKind::kOperator) return json{{"ok", true}, {"operators", std::move(out)}};
    return json{{"ok", true}, {"replicas", std::move(out)}, {"pending", pending_json()}};
  }

  json pending_json() {
    json out = json::array();
    for (const auto& p : gate_.pending()) out.push_back(pending_replica_json(p));
    return out;
  }

  Handled do_register(const RequestArgs& args) {
    auto address = BKP_TRY(args.string("address"));
    auto port = BKP_TRY(args.integer("port"));
    auto path = BKP_TRY(args.string("path"));
    auto every = BKP_TRY(args.integer("every_seconds"));
    auto node_id = BKP_TRY(args.string_or("node_id", ""));
    auto copies = BKP_TRY(args.integer_or("copies", 0));
    auto view = BKP_TRY(registry_.register_volume(address, port, path, every, node_id, copies));
    return json{{"ok", true}, {"volume", volume_json(view, wall_ms())}};
  }

  // Settings of a registered volume: copies (0: the default).
  Handled do_set(const RequestArgs& args) {
    auto host = BKP_TRY(args.string("host"));
    auto path = BKP_TRY(args.string("path"));
    if (!args.has("copies")) return control_fail(Fault::kBadRequest, "set needs copies");
    auto copies = BKP_TRY(args.integer("copies"));
    auto view = BKP_TRY(registry_.set_copies(host, path, copies));
    return json{{"ok", true}, {"volume", volume_json(view, wall_ms())}};
  }

  Handled do_unregister(const RequestArgs& args) {
    auto host = BKP_TRY(args.string("host"));
    auto path = BKP_TRY(args.string("path"));
    auto purge = BKP_TRY(args.boolean_or("purge", false));
    auto done = BKP_TRY(registry_.unregister(host, path, purge ? Purge::kYes : Purge::kNo));
    json replicas = json::array();
    for (const auto& r : done.replicas) {
      replicas.push_back(json{{"name", r.replica},
                              {"state", drop_state_name(r.state)},
                              {"error", r.error.empty() ? json(nullptr) : json(r.error)}});
    }
    return json{{"ok", true},
                {"host", done.name},
                {"purged", done.purged},
                {"deleted", done.purged ? json(done.deleted_dir) : json(nullptr)},
                {"replicas", std::move(replicas)}};
  }

  Handled do_list() {
    auto views = BKP_TRY(registry_.list());
    json volumes = json::array();
    int64_t now = wall_ms();
    for (const auto& v : views) volumes.push_back(volume_json(v, now));
    return json{{"ok", true}, {"volumes", std::move(volumes)}};
  }

  // Every registered volume, or the one named by host and path (both or neither).
  Handled do_status(const RequestArgs& args) {
    std::vector<StatusView> views;
    if (args.has("host") || args.has("path")) {
      if (!args.has("host") || !args.has("path")) {
        return control_fail(Fault::kBadRequest,
                            "status takes host and path together, or neither for every volume");
      }
      auto host = BKP_TRY(args.string("host"));
      auto path = BKP_TRY(args.string("path"));
      views.push_back(BKP_TRY(registry_.status(host, path)));
    } else {
      views = registry_.status();
    }
    json volumes = json::array();
    int64_t now = wall_ms();
    for (const auto& v : views) {
      auto snaps = BKP_TRY(registry_.present_snapshots(v.volume.reg.host, v.volume.reg.path));
      std::optional<SnapshotRecord> last;
      if (!snaps.empty()) last = std::move(snaps.front());
      volumes.push_back(status_json(v, last, now));
    }
    return json{{"ok", true},
                {"volumes", std::move(volumes)},
                {"pending_replicas", pending_json()},
                {"replicators", replicators_json(registry_.hub())}};
  }

  Handled do_history(const RequestArgs& args) {
    auto host = BKP_TRY(args.string("host"));
    auto path = BKP_TRY(args.string("path"));
    auto limit = BKP_TRY(args.integer_or("limit", 0));
    if (limit < 0) return control_fail(Fault::kBadRequest, "limit must be 0 (all) or more");
    auto name = BKP_TRY(registry_.resolve(host, path, Known::kRegisteredOrKept));
    auto runs = registry_.catalog().runs(name, path, static_cast<size_t>(limit));
    if (!runs) return control_fail(Fault::kInternal, runs.error().message);
    json out = json::array();
    for (const auto& r : *runs) out.push_back(run_json(r));
    auto verifies = registry_.catalog().verify_runs(name, path, static_cast<size_t>(limit));
    if (!verifies) return control_fail(Fault::kInternal, verifies.error().message);
    json verify_out = json::array();
    for (const auto& v : *verifies) verify_out.push_back(verify_run_json(v));
    json response{{"ok", true}, {"host", name}, {"runs", std::move(out)},
                  {"verifies", std::move(verify_out)}};
    // A response is one frame: keep the newest runs that fit and say so.
    while (dump_json(response).size() > wire::kMaxPayload) {
      json& list = response["runs"];
      list.erase(list.begin() + static_cast<std::ptrdiff_t>(list.size() / 2), list.end());
      response["truncated"] = true;
    }
    return response;
  }

  // Runs on this session's thread until done (server/verify.h); the answer is the report.
  Handled do_verify(const RequestArgs& args) {
    auto host = BKP_TRY(args.string("host"));
    auto path = BKP_TRY(args.string("path"));
    VerifyOptions options{BKP_TRY(args.boolean_or("snapshots", false)),
                          BKP_TRY(args.boolean_or("replicas", false)),
                          BKP_TRY(args.boolean_or("read_data", false))};
    auto target = BKP_TRY(registry_.verify_target(host, path));
    return verify_json(verify_volume(target, registry_, options, stopping_));
  }

  Handled do_snapshots(const RequestArgs& args) {
    auto host = BKP_TRY(args.string("host"));
    auto path = BKP_TRY(args.string("path"));
    auto name = BKP_TRY(registry_.resolve(host, path, Known::kRegisteredOrKept));
    auto snaps = BKP_TRY(registry_.present_snapshots(name, path));
    json out = json::array();
    for (const auto& s : snaps) out.push_back(snapshot_json(s));
    return json{{"ok", true}, {"host", name}, {"snapshots", std::move(out)}};
  }

  // Waits for the run (it may take minutes): this connection answers nothing else meanwhile.
  Handled do_run(const RequestArgs& args) {
    auto host = BKP_TRY(args.string("host"));
    auto path = BKP_TRY(args.string("path"));
    auto run = BKP_TRY(registry_.run_now(host, path));
    return json{{"ok", true}, {"host", run.host}, {"run", run_json(run)}};
  }

  // Answers and streams itself; returns null on success so handle() sends nothing more.
  Handled do_restore(const RequestArgs& args, const json& request) {
    auto range = net::archive_range(request);
    if (!range) return control_fail(Fault::kBadRequest, range.error());
    auto given = BKP_TRY(args.string("host"));
    auto path = BKP_TRY(args.string("path"));
    auto wanted = BKP_TRY(args.string_or("snapshot", "latest"));
    if (wanted.size() > 4 && wanted.ends_with(".tgz")) wanted.resize(wanted.size() - 4);
    auto host = BKP_TRY(registry_.resolve(given, path, Known::kRegisteredOrKept));
    // A parallel restore asks for its parts one by one: they come from the archive this
    // connection already opened, without listing the catalog again.
    const bool same = open_ && wanted != "latest" && open_->host == host && open_->path == path &&
                      open_->shown.id == wanted;
    if (!same) {
      auto opened = BKP_TRY(open_snapshot(host, path, wanted));
      if (!opened) {
        if (wanted == "latest") {
          return control_fail(Fault::kNoSnapshot,
                              fmt::format("{}:{} has no snapshot yet", host, path));
        }
        return control_fail(Fault::kNoSnapshot,
                            fmt::format("{}:{} has no snapshot '{}'", host, path, wanted));
      }
      open_ = std::move(*opened);
      registry_.note_restore(static_cast<uint64_t>(open_->shown.bytes));  // once per archive
    }
    json extra = json::object();
    if (range->digests) extra["sources"] = sources_json(registry_.hub(), open_->shown.copies);
    if (auto streamed = stream(*open_->source, open_->shown, *range, extra); !streamed) {
      stream_error_ = streamed.error();
    }
    return json(nullptr);
  }

  // The snapshot `wanted` ("latest": the newest) of a volume, opened with its stored size;
  // nullopt when there is none.
  ControlResult<std::optional<OpenSnapshot>> open_snapshot(const std::string& host,
                                                           const std::string& path,
                                                           const std::string& wanted) {
    auto snaps = BKP_TRY(registry_.present_snapshots(host, path));
    auto store = registry_.hub().archives(host, path);
    for (const auto& s : snaps) {
      if (wanted != "latest" && s.id != wanted) continue;
      auto source = store->open(s.id, ArchivePart::kArchive);
      // Rotated away since the listing: the next older one is "latest" now.
      if (!source && source.error().code == ENOENT) continue;
      if (!source) return control_fail(Fault::kInternal, source.error().message);
      OpenSnapshot out{host, path, s, std::move(*source)};
      out.shown.bytes = static_cast<int64_t>(out.source->size());
      return out;
    }
    return std::nullopt;
  }

  // The response, exactly `bytes` bytes of Data, then {"ok":true,"done":true}.
  Result<void> stream(ByteSource& source, const SnapshotRecord& snap,
                      const net::ArchiveRange& range, json extra) {
    return channel_.stream(net::ArchiveStream{.source = &source,
                                              .bytes = static_cast<uint64_t>(snap.bytes),
                                              .id = snap.id,
                                              .snapshot = snapshot_json(snap),
                                              .part_size = snap.part_size,
                                              .digests = snap.digests,
                                              .range = range,
                                              .extra = std::move(extra)});
  }

  Result<void> respond(const json& response) { return channel_.respond(response); }

  net::ControlChannel channel_;
  Registry& registry_;
  PeerGate& gate_;
  const std::string& peer_;
  const std::atomic<bool>& stopping_;
  std::optional<Error> stream_error_;  // a restore that failed after its first response
  // The archive this connection last restored from, open: rotation may unlink it meanwhile, and
  // its parts are still the bytes its header promised.
  std::optional<OpenSnapshot> open_;
};

}  // namespace

void run_control_session(net::Conn& conn, const wire::Hello& hello, Registry& registry,
                         PeerGate& gate, const std::string& peer,
                         const std::atomic<bool>& stopping) {
  log::debug("control connection from {} ({})", peer, hello.name);
  if (auto sent = net::send_now(conn, wire::HelloOk{}); !sent) {
    log::info("control {}: {}", peer, sent.error().message);
    return;
  }
  ControlSession session(conn, registry, gate, peer, stopping);
  Error end = session.serve();
  if (stopping) {
    log::debug("control {}: closed (shutting down)", peer);
  } else if (end.code == ECONNRESET || end.code == EPIPE) {  // bkptool closed, even mid-stream
    log::debug("control {}: closed", peer);
  } else if (end.code == ETIMEDOUT) {
    log::info("control {}: idle for {} s, closing", peer, kControlIdleTimeoutMs / 1000);
  } else {
    log::error("control {}: {}", peer, end.message);
    net::send_error(conn, end.code, end.message);
  }
}

}  // namespace bkp::server
