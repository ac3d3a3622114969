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
#include "replicator/session.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/files.h"
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
  Session(net::Conn& conn, const Holdings& holdings)
      : conn_(conn), trees_(holdings.trees), usage_(holdings.usage),
        snapshots_(holdings.snapshots),
        restore_address_(advertised(conn, holdings.restore_service)) {}

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
  Result<void> handle(const wire::FrameView& frame, uint64_t& acked) {
    switch (frame.type) {
      case wire::MsgType::kSelect: {
        auto sel = BKP_TRY(wire::decode_select(frame.payload));
        BKP_TRY_VOID(validate_host(sel.host));
        BKP_TRY_VOID(validate_volume_path(sel.path));
        volume_ = sel.host + ":" + sel.path;
        current_ = BKP_TRY(trees_.open(sel.host, sel.path));
        BKP_TRY_VOID(net::send(conn_, current_->receiver->position(sel.instance)));
        return conn_.flush();
      }
      case wire::MsgType::kNodeStatus: {  // what this replica still lacks of the volume
        auto status = BKP_TRY(wire::decode_node_status(frame.payload));
        BKP_TRY(selected())->progress.status(status);
        return {};
      }
      case wire::MsgType::kOp: {
        auto op = BKP_TRY(wire::decode_op(frame.payload));
        Tree* tree = BKP_TRY(selected());
        BKP_TRY_VOID(tree->receiver->apply(op));
        tree->progress.op(op);
        tree->counters->op();
        return {};
      }
      case wire::MsgType::kWrite: {
        auto w = BKP_TRY(wire::decode_write(frame.flags, frame.payload));
        Tree* tree = BKP_TRY(selected());
        BKP_TRY_VOID(tree->receiver->write(w));
        tree->progress.applied(w.id, w.data.size());
        tree->counters->write(w.data.size());
        return {};
      }
      case wire::MsgType::kCommit: {
        auto c = BKP_TRY(wire::decode_commit(frame.payload));
        Tree* tree = BKP_TRY(selected());
        uint64_t batch = BKP_TRY(tree->receiver->commit(c));
        tree->progress.committed();
        tree->counters->committed(batch, wall_ms());
        BKP_TRY_VOID(net::send(conn_, wire::Ack{batch}));
        BKP_TRY_VOID(conn_.flush());
        log::debug("volume {}: batch {} committed", volume_, c.batch);
        ++acked;
        return {};
      }
      case wire::MsgType::kManifestRequest: {  // backupd reconciles before a baseline
        auto request = BKP_TRY(wire::decode_manifest_request(frame.payload));
        Tree* tree = BKP_TRY(selected());
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
        return stream::send_digests(conn_, *BKP_TRY(selected())->applier, request);
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
        snapshots_.begin(begin);
        return {};
      }
      case wire::MsgType::kSnapshotData:
        return snapshots_.data(BKP_TRY(wire::decode_snapshot_data(frame.payload)));
      case wire::MsgType::kSnapshotEnd: {
        BKP_TRY_VOID(wire::decode_snapshot_end(frame.payload));
        auto stored = BKP_TRY(snapshots_.end());
        if (stored.code == 0) {
          log::info("snapshot {} stored", stored.id);
          usage_.refresh();
        } else {
          log::error("snapshot {} not stored: {}", stored.id, stored.text);
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
        current_ = nullptr;  // backupd selects again before any data
        volume_.clear();
        snapshots_.forget(drop.host, drop.path);  // a transfer kept for the volume is void
        wire::Dropped answer{drop.host, drop.path, 0, ""};
        if (auto dropped = trees_.drop(drop); !dropped) {
          log::error("volume {}:{}: {}", drop.host, drop.path, dropped.error().message);
          const Error& e = dropped.error();
          answer.code = static_cast<uint32_t>(e.code != 0 ? e.code : EIO);
          answer.text = e.message.substr(0, wire::kMaxText);
        } else {
          log::info("volume {}:{} dropped{}", drop.host, drop.path,
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

  Result<Tree*> selected() {
    if (current_ == nullptr) return fail(EPROTO, "data before any select");
    return current_;
  }

  net::Conn& conn_;
  Trees& trees_;
  UsageMeter& usage_;
  SnapshotStore& snapshots_;
  const std::string restore_address_;  // "" when no restore service listens
  Tree* current_ = nullptr;  // owned by trees_
  std::string volume_;                   // "host:/path" of current_
};

}  // namespace

Result<Tree*> Trees::open(const std::string& host, const std::string& path) {
  std::string key = host + ":" + path;
  auto it = trees_.find(key);
  if (it != trees_.end()) return it->second.get();
  // One directory per volume, its path escaped, so nested volumes (/srv and /srv/app) never
  // share a directory: a tree a peer writes can hold no other volume's tree.
  std::string tree = fmt::format("{}/{}", host, escape_path(path));
  std::string ids = fmt::format(".ids/{}/{}", host, escape_path(path));
  std::string state = fmt::format("{}/.state/{}/{}", root_, host, escape_path(path));
  auto open_error = [&](Error e) { return e.wrap("open replica of " + key); };
  struct stat st{};
  bool fresh = ::lstat((root_ + "/" + tree).c_str(), &st) != 0;
  auto applier = changes::Applier::open(root_, tree, ids);
  if (!applier) return tl::unexpected(open_error(applier.error()));
  BKP_TRY_VOID(make_dirs(state).map_error(open_error));
  if (fresh) {  // a position for a tree that is not there would vouch for nothing: start over
    for (const char* f : {"/state", "/position"}) {
      if (::unlink((state + f).c_str()) != 0 && errno != ENOENT) {
        return tl::unexpected(open_error(Error{errno, "reset " + state + f}));
      }
    }
  }
  auto receiver = stream::Receiver::open(state, **applier);
  if (!receiver) return tl::unexpected(receiver.error().wrap("open replica of " + key));
  log::info("volume {} -> {}/{}", key, root_, tree);
  auto meter = std::make_shared<progress::Meter>(key);
  if (display_) display_->add(meter);
  TreeCounters& counters = monitor_.tree(host, path);
  // `state` is rewritten at each commit only: its mtime is when the last batch became durable.
  const bool has_commit =
      (*receiver)->instance() != 0 && ::stat((state + "/state").c_str(), &st) == 0;
  counters.opened((*receiver)->committed(), has_commit ? wire::to_ns(st.st_mtim) / 1'000'000 : 0);
  auto entry = std::make_unique<Tree>(Tree{std::move(*applier), std::move(*receiver), meter,
                                           changes::ReceiveProgress(meter), &counters});
  return trees_.emplace(key, std::move(entry)).first->second.get();
}

Result<void> Trees::drop(const wire::Drop& drop) {
  trees_.erase(drop.host + ":" + drop.path);  // closes its descriptors
  if (drop.purge == 0) return {};
  UniqueFd root(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno("open " + root_);
  for (const char* base : {".state", ".ids", ".snapshots", ""}) {
    BKP_TRY_VOID(remove_beneath(root.get(), base, drop.host, drop.path));
  }
  return {};
}

Result<void> Trees::remove_beneath(int root_fd, const std::string& base, const std::string& host,
                                   const std::string& path) {
  const std::string host_rel = base.empty() ? host : base + "/" + host;
  auto parent = open_dir_beneath(root_fd, base, nullptr, Missing::kFail);
  auto host_dir = parent ? open_dir_beneath(parent->get(), host, nullptr, Missing::kFail)
                         : Result<UniqueFd>(tl::unexpected(parent.error()));
  if (!host_dir) {
    if (host_dir.error().code == ENOENT) return {};  // nothing of this host there
    return tl::unexpected(host_dir.error().wrap(root_));
  }
  BKP_TRY_VOID(remove_tree_at(host_dir->get(), escape_path(path),
                              fmt::format("{}/{}/{}", root_, host_rel, escape_path(path))));
  host_dir->reset();
  // The host's last volume here: its directory goes too (another volume keeps it: ENOTEMPTY).
  (void)::unlinkat(parent->get(), host.c_str(), AT_REMOVEDIR);
  return {};
}

void Trees::interrupt_all() {
  for (auto& [key, tree] : trees_) tree->progress.interrupted();
}

SessionEnd run_session(net::Conn& conn, const std::string& name, uint64_t instance,
                       const Holdings& holdings) {
  SessionEnd end;
  if (auto hs = handshake(conn, name, instance); !hs) {
    end.error = hs.error();
    return end;
  }
  end.welcomed = true;
  holdings.monitor.session_started();
  Session session(conn, holdings);
  end.error = session.serve(end.acked);
  holdings.monitor.session_ended();
  // A snapshot transfer cut here is kept: the next session may go on with it (snapshot_store.h).
  holdings.trees.interrupt_all();
  return end;
}

}  // namespace bkp::replicator
