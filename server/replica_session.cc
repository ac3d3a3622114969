// A replica session: the second hop, with the same shipper the nodes use.
//
// The session walks its replica's streams round robin. For each it ships the pending batch (the
// baseline first, then whatever the log had coalesced when the previous batch was acked) as
// Select{host, path}, send_batch() reading data from the mirror's ids/ links, and waits for the
// ack. Only then is the batch dropped; on any failure it stays pending and is sent again when the
// replica reconnects, so nothing unacknowledged is lost and a replica that was away only costs
// the ranges its logs coalesced meanwhile. Node sessions never wait for this thread: they only
// append to the logs. When nothing is pending the session sleeps at most kReplicaIdleWaitMs
// (a commit on any of its volumes wakes it at once) and checks that the replica is still there,
// so a replicator that died while idle frees its name for its successor promptly.
#include "server/replica_session.h"

#include <fmt/format.h>

#include "common/changes/shipper.h"
#include "common/changes/transfer_progress.h"
#include "common/log.h"
#include "common/path.h"
#include "server/peer.h"

namespace bkp::server {
namespace {

class ReplicaSession {
 public:
  ReplicaSession(net::Conn& conn, Replica& replica, const std::atomic<bool>& stopping)
      : conn_(conn), replica_(replica), stopping_(stopping) {}

  // Ships until the connection fails or stopping is set. Returns the error that ended it.
  Error serve() {
    while (!stopping_) {
      auto shipped = ship_next();
      if (!shipped) return shipped.error();
      if (*shipped) continue;
      if (auto alive = check_alive(); !alive) return alive.error();
      replica_.notifier()->wait(std::chrono::milliseconds(kReplicaIdleWaitMs));
    }
    return Error{ECANCELED, "shutting down"};
  }

 private:
  // Ships one batch of the next stream (round robin) that has one. False if none had any.
  Result<bool> ship_next() {
    auto streams = replica_.streams();
    for (size_t i = 0; i < streams.size(); ++i) {
      size_t index = (next_ + i) % streams.size();
      ReplicaStream& s = *streams[index];
      if (!s.pending && s.log.wait(std::chrono::milliseconds(0))) {
        int64_t since = s.log_since_ns.exchange(0);
        s.set_pending(s.log.take(), since);
      }
      if (!s.pending || s.pending->empty()) {
        s.clear_pending();
        continue;
      }
      next_ = index + 1;
      if (auto shipped = ship(s); !shipped) {
        s.progress->interrupted();
        return tl::unexpected(shipped.error().wrap(s.volume->name()));
      }
      s.clear_pending();
      s.progress->acked();
      return true;
    }
    return false;
  }

  Result<void> ship(ReplicaStream& s) {
    const changes::Batch& batch = *s.pending;
    Volume& v = *s.volume;
    std::vector<uint8_t> payload;
    wire::encode(wire::Select{v.host(), v.path()}, payload);
    BKP_TRY_VOID(conn_.send(wire::MsgType::kSelect, 0, payload));
    BKP_TRY_VOID(send_status(s));
    s.progress->batch(batch, s.baseline ? "baseline" : "");
    changes::ApplierSource mirror(*v.applier);  // open_id() is safe without the volume mutex
    changes::ProgressSource source(mirror, *s.progress);
    uint64_t bytes_before = counters_.data_bytes;
    BKP_TRY_VOID(changes::send_batch(conn_, batch, source, counters_));
    BKP_TRY_VOID(changes::await_ack(conn_, batch.number, kReplicaAckTimeoutMs));
    log::debug("replica {}: volume {} batch {} acked ({} operations, {} files, {} data bytes)",
               replica_.name(), v.name(), batch.number, batch.ops.size(), batch.files.size(),
               counters_.data_bytes - bytes_before);
    return {};
  }

  // What the replica still lacks of the selected volume, the pending batch included, so the
  // replicator can show its progress (the same frame a node sends backupd).
  Result<void> send_status(ReplicaStream& s) {
    ReplicaLag lag = s.lag();
    wire::NodeStatus status;
    status.pending_ops = lag.pending_ops;
    status.pending_files = lag.pending_files;
    status.pending_bytes = lag.pending_bytes;
    status.oldest_ns = lag.oldest_ns;
    std::vector<uint8_t> payload;
    wire::encode(status, payload);
    return conn_.send(wire::MsgType::kNodeStatus, 0, payload);
  }

  // While idle the replica should send nothing; anything readable is either its close or a
  // protocol error (pings are tolerated).
  Result<void> check_alive() {
    while (BKP_TRY(conn_.readable())) {
      auto frame = BKP_TRY(conn_.recv(1000));
      if (frame.type == wire::MsgType::kPing) continue;
      if (frame.type == wire::MsgType::kError) {
        auto err = BKP_TRY(wire::decode_error(frame.payload));
        return fail(err.code ? static_cast<int>(err.code) : EIO, "replica reported: " + err.text);
      }
      return fail(EPROTO, fmt::format("unexpected {} frame from an idle replica",
                                      wire::type_name(frame.type)));
    }
    return {};
  }

  net::Conn& conn_;
  Replica& replica_;
  const std::atomic<bool>& stopping_;
  changes::ShipCounters counters_;
  size_t next_ = 0;  // round-robin position among the streams
};

}  // namespace

void run_replica_session(net::Conn& conn, const wire::Hello& hello, Hub& hub,
                         const std::string& peer, const std::atomic<bool>& stopping) {
  auto reject = [&](const Error& e) {
    log::error("replica {} ({}): {}", peer, hello.name, e.message);
    send_error(conn, e.code, e.message);
  };
  if (auto ok = validate_host(hello.name); !ok) {
    return reject(ok.error().wrap("replica name"));
  }
  auto replica = hub.attach_replica(hello.name, hello.instance);
  if (!replica) return reject(replica.error());
  Replica& r = **replica;
  log::info("replica {} connected from {} (instance {:016x})", r.name(), peer, hello.instance);

  ReplicaSession session(conn, r, stopping);
  Error end{};
  if (auto sent = send_msg(conn, wire::MsgType::kHelloOk, wire::HelloOk{}); !sent) {
    end = sent.error();
  } else {
    end = session.serve();
  }
  hub.detach_replica(r);
  if (stopping) {
    log::info("replica {} ({}): closed (shutting down)", r.name(), peer);
  } else if (end.code == ECONNRESET || end.code == EPIPE) {
    log::info("replica {} ({}) disconnected", r.name(), peer);
  } else {
    log::error("replica {} ({}): {}", r.name(), peer, end.message);
    send_error(conn, end.code, end.message);
  }
}

}  // namespace bkp::server
