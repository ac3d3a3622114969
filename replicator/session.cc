// The replicator's side of a replica stream.
//
// backupd ships one batch at a time: Select{host, path, instance} names the volume (answered with
// the volume's Position, so backupd resumes exactly where this tree stands), then operations and
// data for it, then Commit{n}. Each frame is applied as it arrives (nothing is queued, so memory
// stays bounded by one frame) by the volume's stream::Receiver; Commit makes the tree durable
// with one sync and is then acknowledged, which is what allows backupd to forget the batch. A
// ManifestRequest after a Position that asked for a baseline is answered with what this tree
// holds, so backupd sends only what differs (common/stream/reconcile.h); one flagged
// kManifestVerify, between batches, is a verify's (server/verify.h) and starts nothing. A
// UsageRequest, between batches, is answered with what this replicator holds and may still
// take (usage.h); the snapshot frames keep copies of the volume's archives (snapshot_store.h). Any
// failure ends the session without an ack: backupd keeps the batch and, after the reconnect,
// sends only what the Position says this tree lacks.
//
// Between batches backupd may send Drop{host, path, purge}: the volume is no longer this
// replica's (unregistered, or its copy placed elsewhere). The tree is closed (no descriptor of
// it stays open) and, with purge, deleted; the answer is Dropped, carrying the error when the
// deletion failed, so one tree that cannot be deleted does not stop the other volumes' streams.
//
// The replicator runs one session per backupd it follows, at once, over the same trees
// (trees.h): each frame is applied under its tree's hold, and a tree another server's session
// selected since fails this session's next frame of it with ESTALE, which ends this session (the
// volume moved; backupd then reconnects for its other volumes).
#include "replicator/session.h"

#include <atomic>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/net/messenger.h"
#include "common/net/socket.h"
#include "common/stream/reconcile.h"
#include "common/path.h"

namespace bkp::replicator {
namespace {

Result<void> handshake(net::Conn& conn, const std::string& name, uint64_t instance) {
  wire::Hello hello;
  hello.role = wire::Role::kReplica;
  hello.name = name;
  hello.instance = instance;
  BKP_TRY_VOID(net::send(conn, hello));
  auto ok = net::expect<wire::HelloOk>(conn, kHelloOkTimeoutMs);
  if (!ok) return tl::unexpected(ok.error().wrap("server answered the hello"));
  if (ok->version != wire::kVersion) {
    return fail(EPROTONOSUPPORT, fmt::format("server speaks protocol version {}", ok->version));
  }
  return {};
}

class Session {
 public:
  Session(net::Conn& conn, const std::string& server, const Holdings& holdings)
      : conn_(conn), server_(server), id_(next_id()), trees_(holdings.trees),
        usage_(holdings.usage), snapshots_(holdings.snapshots), intake_(holdings.snapshots),
        restore_address_(advertised(conn, holdings.restore_service)) {}
  // The trees this session held are nobody's now; a snapshot transfer in progress is kept.
  ~Session() { trees_.release(id_); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Applies frames until the connection fails. Returns the error that ended it.
  Error serve(uint64_t& acked) {
    while (true) {
      auto frame = conn_.recv_view(-1);
      if (!frame) return frame.error();
      auto r = handle(*frame, acked);
      if (!r) {
        Error e = volume_.empty() ? r.error() : r.error().wrap("volume " + volume_);
        (void)net::send_error(conn_, e.code, e.message);  // closing anyway
        return e;
      }
    }
  }

 private:
  // Sessions are told apart by number (Trees records which one holds each tree).
  static uint64_t next_id() {
    static std::atomic<uint64_t> last{0};
    return ++last;
  }

  Result<void> handle(const wire::FrameView& frame, uint64_t& acked) {
    switch (frame.type) {
      case wire::MsgType::kSelect: {
        auto sel = BKP_TRY(wire::decode_select(frame.payload));
        BKP_TRY_VOID(validate_host(sel.host));
        BKP_TRY_VOID(validate_volume_path(sel.path));
        volume_ = sel.host + ":" + sel.path;
        selected_ = BKP_TRY(trees_.select(sel.host, sel.path, id_, server_));
        wire::Position position = BKP_TRY(held())->receiver->position(sel.instance);
        BKP_TRY_VOID(net::send(conn_, position));
        return conn_.flush();
      }
      case wire::MsgType::kNodeStatus: {  // what this replica still lacks of the volume
        auto status = BKP_TRY(wire::decode_node_status(frame.payload));
        BKP_TRY(held())->progress.status(status);
        return {};
      }
      case wire::MsgType::kOp: {
        auto op = BKP_TRY(wire::decode_op(frame.payload));
        auto tree = BKP_TRY(held());
        BKP_TRY_VOID(tree->receiver->apply(op));
        tree->progress.op(op);
        tree->counters->op();
        return {};
      }
      case wire::MsgType::kWrite: {
        auto w = BKP_TRY(wire::decode_write(frame.flags, frame.payload));
        auto tree = BKP_TRY(held());
        BKP_TRY_VOID(tree->receiver->write(w));
        tree->progress.applied(w.id, w.data.size());
        tree->counters->write(w.data.size());
        return {};
      }
      case wire::MsgType::kCommit: {
        auto c = BKP_TRY(wire::decode_commit(frame.payload));
        uint64_t batch = 0;
        {
          auto tree = BKP_TRY(held());
          batch = BKP_TRY(tree->receiver->commit(c));
          tree->progress.committed();
          tree->counters->committed(batch, wall_ms());
        }
        BKP_TRY_VOID(net::send(conn_, wire::Ack{batch}));
        BKP_TRY_VOID(conn_.flush());
        log::debug("volume {}: batch {} from {} committed", volume_, c.batch, server_);
        ++acked;
        return {};
      }
      // The two answers that read the tree are sent under its hold: a Select of the tree by
      // another session waits for them.
      case wire::MsgType::kManifestRequest: {  // backupd reconciles before a baseline
        auto request = BKP_TRY(wire::decode_manifest_request(frame.payload));
        auto tree = BKP_TRY(held());
        if (request.flags & wire::kManifestVerify) {  // or verifies (server/verify.h)
          return stream::send_tree_manifest(conn_, tree->applier->tree_fd(), request.flags,
                                            &tree->applier->placeholders());
        }
        tree->meter->begin("baseline");  // not at open: a tree that returns only catches up
        tree->counters->reconcile();
        return stream::send_manifest(conn_, *tree->applier);
      }
      case wire::MsgType::kDigestRequest: {
        auto request = BKP_TRY(wire::decode_digest_request(frame.payload));
        return stream::send_digests(conn_, *BKP_TRY(held())->applier, request);
      }
      case wire::MsgType::kSnapshotInventoryRequest: {  // snapshot copies (snapshot_store.h)
        auto req = BKP_TRY(wire::decode_snapshot_inventory_request(frame.payload));
        BKP_TRY_VOID(validate_host(req.host));
        BKP_TRY_VOID(validate_volume_path(req.path));
        return net::send_now(conn_, BKP_TRY(snapshots_.inventory(req.host, req.path)));
      }
      case wire::MsgType::kSnapshotBegin: {
        auto begin = BKP_TRY(wire::decode_snapshot_begin(frame.payload));
        BKP_TRY_VOID(validate_host(begin.host));
        BKP_TRY_VOID(validate_volume_path(begin.path));
        intake_.begin(begin);
        return {};
      }
      case wire::MsgType::kSnapshotData:
        return intake_.data(BKP_TRY(wire::decode_snapshot_data(frame.payload)));
      case wire::MsgType::kSnapshotEnd: {
        BKP_TRY_VOID(wire::decode_snapshot_end(frame.payload));
        auto stored = BKP_TRY(intake_.end());
        if (stored.code == 0) {
          log::info("snapshot {} from {} stored", stored.id, server_);
          usage_.refresh();
        } else {
          log::error("snapshot {} from {} not stored: {}", stored.id, server_, stored.text);
        }
        return net::send_now(conn_, stored);
      }
      case wire::MsgType::kUsageRequest: {  // for placement (usage.h)
        BKP_TRY_VOID(wire::decode_usage_request(frame.payload));
        wire::Usage usage = usage_.current();
        usage.restore_address = restore_address_;
        return net::send_now(conn_, usage);
      }
      case wire::MsgType::kDrop: {
        auto drop = BKP_TRY(wire::decode_drop(frame.payload));
        BKP_TRY_VOID(validate_host(drop.host));
        BKP_TRY_VOID(validate_volume_path(drop.path));
        selected_ = nullptr;  // backupd selects again before any data
        volume_.clear();
        intake_.forget(drop.host, drop.path);  // a transfer kept for the volume is void
        wire::Dropped answer{drop.host, drop.path, 0, ""};
        if (auto dropped = trees_.drop(drop); !dropped) {
          log::error("volume {}:{} (dropped by {}): {}", drop.host, drop.path, server_,
                     dropped.error().message);
          const Error& e = dropped.error();
          answer.code = static_cast<uint32_t>(e.code != 0 ? e.code : EIO);
          answer.text = e.message.substr(0, wire::kMaxText);
        } else {
          log::info("volume {}:{} dropped by {}{}", drop.host, drop.path, server_,
                    drop.purge ? ": its copy is deleted" : " (its copy stays on disk)");
          if (drop.purge) usage_.refresh();
        }
        return net::send_now(conn_, answer);
      }
      case wire::MsgType::kPing:
        return {};
      default:  // the server's Error, or a frame a replica never receives
        return tl::unexpected(net::unexpected_frame(frame, "a stream frame"));
    }
  }

  // The restore service's address as bkptool can reach it: a wildcard listen address (0.0.0.0,
  // ::) becomes the address this host has on the connection to backupd.
  static std::string advertised(net::Conn& conn, const std::optional<net::HostPort>& service) {
    if (!service) return "";
    net::HostPort where = *service;
    if (where.host.empty() || where.host == "0.0.0.0" || where.host == "::") {
      where.host = net::local_host(conn.fd());
    }
    return net::format_host_port(where);
  }

  // The selected tree, held for one frame.
  Result<Trees::Use> held() {
    if (selected_ == nullptr) return fail(EPROTO, "data before any select");
    return trees_.use(selected_, id_);
  }

  net::Conn& conn_;
  const std::string& server_;
  const uint64_t id_;
  Trees& trees_;
  UsageMeter& usage_;
  SnapshotStore& snapshots_;
  SnapshotStore::Intake intake_;
  const std::string restore_address_;  // "" when no restore service listens
  Trees::Selected selected_ = nullptr;
  std::string volume_;  // "host:/path" of selected_
};

}  // namespace

SessionEnd run_session(net::Conn& conn, const std::string& server, const std::string& name,
                       uint64_t instance, const Holdings& holdings) {
  SessionEnd end;
  if (auto hs = handshake(conn, name, instance); !hs) {
    end.error = hs.error();
    return end;
  }
  end.welcomed = true;
  holdings.monitor.session_started(server);
  {
    // Its end releases the trees (shown stopped) and keeps a snapshot transfer cut here: the
    // next session, with any server, may go on with it (snapshot_store.h).
    Session session(conn, server, holdings);
    end.error = session.serve(end.acked);
  }
  holdings.monitor.session_ended(server);
  return end;
}

}  // namespace bkp::replicator
