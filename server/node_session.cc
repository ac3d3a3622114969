// A node session: HelloOk, then apply every frame to the mirror and fan it out to the replicas.
//
// The handshake tells the node where the mirror stands (the volume's stream::Receiver: the last
// batch committed for its instance and how many operations of the next one are applied, or
// "baseline" for an instance it does not know), so the node resumes exactly there. Frames are
// applied one at a time under the volume's mutex and each is recorded, in the same critical
// section, into every replica's log for this volume: that is what makes a replica's baseline
// scan (same mutex) a clean cut, and since no operation is ever applied twice, none is fanned
// out twice either. Commit syncs the mirror once (group commit), then `state`, then acks: an
// ack is a promise that the batch survives a crash of this machine. Volume::in_batch() (the
// receiver's) is raised by the first Op/Write after a commit and lowered by the commit, so a
// scheduled run can wait for a batch boundary and archive exactly what some commit left.
// Inside a batch the node must keep sending: once this session has sent an Op or a Write, a node
// that sends nothing for net::stall_ms() (60 s) before the batch's Commit is cut, so a run
// waiting for the batch boundary fails instead of waiting forever (the next session resumes the
// batch). Before its first Op/Write, after a Commit, and after a ManifestRequest or a
// DigestRequest (a node scanning or reading its tree to reconcile) a node may be silent as long
// as it likes; TCP keepalive notices one that vanished (net::tune_socket).
// NodeStatus frames may arrive at any point and only update the volume's lag sample, outside the
// volume mutex. A ManifestRequest (a node about to send a baseline) is answered with the
// mirror's manifest, under the mutex like any frame (common/stream/reconcile.h).
//
// The session does not care who opened the connection: backupd opens it to a registered node
// (server/link.cc) and hands it over once the node's Hello has arrived.
#include "server/node_session.h"

#include <fmt/format.h>

#include <chrono>
#include <optional>
#include <utility>

#include "common/changes/transfer_progress.h"
#include "common/log.h"
#include "common/net/messenger.h"
#include "common/stream/reconcile.h"
#include "server/peer.h"

namespace bkp::server {
namespace {

class NodeSession {
 public:
  NodeSession(net::Conn& conn, std::shared_ptr<Volume> volume)
      : conn_(conn), volume_(std::move(volume)), progress_(volume_->ingest) {}

  // The stream ended: an unfinished transfer shows as stopped.
  void interrupted() { progress_.interrupted(); }

  // Applies frames until the connection ends. Returns the error that ended it.
  Error serve() {
    uint64_t unaccounted = 0;  // bytes of NodeStatus frames, added to stats under the lock
    bool mid_batch = false;  // this session is sending a batch (the comment at the top)
    while (true) {
      auto frame = conn_.recv_view(mid_batch ? net::stall_ms() : -1);
      if (!frame && mid_batch && frame.error().code == ETIMEDOUT) {
        return Error{ETIMEDOUT, fmt::format("the node sent nothing for {:g} s in the middle of a batch",
                                            net::stall_ms() / 1000.0)};
      }
      if (!frame) return frame.error();
      uint64_t frame_bytes = wire::kHeaderSize + frame->payload.size();
      if (frame->type == wire::MsgType::kNodeStatus) {
        // Not under the volume mutex: a run archiving this volume must not delay the lag.
        auto status = wire::decode_node_status(frame->payload);
        if (!status) return status.error();
        volume_->set_node_status(*status, now_ms());
        progress_.status(*status);
        unaccounted += frame_bytes;
        continue;
      }
      std::optional<uint64_t> ack;
      {
        std::lock_guard lock(volume_->mu);
        volume_->stats.wire_bytes += frame_bytes + std::exchange(unaccounted, 0);
        auto r = handle(*frame, ack);
        if (!r) return r.error();
      }
      switch (frame->type) {
        case wire::MsgType::kOp:
        case wire::MsgType::kWrite: mid_batch = true; break;
        case wire::MsgType::kCommit:
        case wire::MsgType::kManifestRequest:
        case wire::MsgType::kDigestRequest: mid_batch = false; break;
        default: break;
      }
      if (ack) {
        volume_->batch_done.notify_all();
        auto r = net::send_now(conn_, wire::Ack{*ack});
        if (!r) return r.error();
      }
    }
  }

 private:
  static int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  // Applies one frame (volume mutex held). Sets ack to the batch of a commit to acknowledge.
  Result<void> handle(const wire::FrameView& frame, std::optional<uint64_t>& ack) {
    Volume& v = *volume_;
    switch (frame.type) {
      case wire::MsgType::kOp: {
        auto op = BKP_TRY(wire::decode_op(frame.payload));
        BKP_TRY_VOID(v.receiver->apply(op));
        progress_.op(op);
        v.fan_out(op);
        v.count_op(op);
        v.stats.ops += 1;
        return {};
      }
      case wire::MsgType::kWrite: {
        auto w = BKP_TRY(wire::decode_write(frame.flags, frame.payload));
        BKP_TRY_VOID(v.receiver->write(w));
        v.fan_out_write(w, frame.flags, frame.payload.subspan(wire::kWriteHeader));
        v.count_write(w.id, w.data.size());
        v.stats.data_bytes += w.data.size();
        progress_.applied(w.id, w.data.size());
        return {};
      }
      case wire::MsgType::kCommit: {
        auto c = BKP_TRY(wire::decode_commit(frame.payload));
        ack = BKP_TRY(v.commit(c));
        v.stats.batches += 1;
        if (auto s = v.save_stats(); !s) log::warn("volume {}: {}", v.name(), s.error().message);
        v.notify_sinks();
        progress_.committed();
        log::debug("volume {}: batch {} committed", v.name(), c.batch);
        return {};
      }
      case wire::MsgType::kManifestRequest:  // the node reconciles before its baseline
        BKP_TRY_VOID(wire::decode_manifest_request(frame.payload));
        return stream::send_manifest(conn_, *v.applier);
      case wire::MsgType::kDigestRequest:
        return stream::send_digests(conn_, *v.applier,
                                    BKP_TRY(wire::decode_digest_request(frame.payload)));
      case wire::MsgType::kPing:
        return {};
      default:
        return fail(EPROTO, fmt::format("unexpected {} frame on a node stream",
                                        wire::type_name(frame.type)));
    }
  }

  net::Conn& conn_;
  std::shared_ptr<Volume> volume_;
  changes::ReceiveProgress progress_;
};

}  // namespace

Error run_node_session(net::Conn& conn, const std::shared_ptr<Volume>& volume,
                       const wire::Hello& hello, uint64_t hello_bytes, const std::string& peer,
                       const std::atomic<bool>& stopping) {
  Volume& v = *volume;
  wire::HelloOk ok;
  {
    std::lock_guard lock(v.mu);
    if (v.node_connected) {
      Error e{EBUSY, fmt::format("volume {} already has a node session", v.name())};
      log::error("node {} for volume {}: {}", peer, v.name(), e.message);
      net::send_error(conn, e.code, e.message);
      return e;
    }
    v.node_connected = true;
    v.stats.wire_bytes += hello_bytes;
    ok.position = v.receiver->position(hello.instance);
  }
  const wire::Position& at = ok.position;
  log::info("node {} ({}) connected for volume {} (instance {:016x}, committed {}{}, {})", peer,
            hello.name, v.name(), hello.instance, at.committed,
            at.applied ? fmt::format(" + {} operations", at.applied) : "",
            at.need_baseline ? "baseline needed" : "resuming");

  if (at.need_baseline) v.ingest->begin("baseline");
  NodeSession session(conn, volume);
  Error end{};
  if (auto sent = net::send_now(conn, ok); !sent) {
    end = sent.error();
  } else {
    end = session.serve();
  }
  session.interrupted();
  {
    std::lock_guard lock(v.mu);
    v.node_connected = false;
  }
  v.batch_done.notify_all();  // a run waiting for this batch to end must learn it never will
  if (stopping) {
    log::info("node {} for volume {}: closed (link stopped: unregistered or shutting down)", peer,
              v.name());
    return Error{ECANCELED, "link stopped"};
  }
  if (end.code == ECONNRESET) {
    log::info("node {} for volume {} disconnected", peer, v.name());
  } else {
    log::error("node {} for volume {}: {}", peer, v.name(), end.message);
    net::send_error(conn, end.code, end.message);
  }
  return end;
}

}  // namespace bkp::server
