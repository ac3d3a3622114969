// A replica session: the second hop, with the same stream::Sender the nodes use.
//
// The session walks its replica's streams round robin. For each that has something to send it
// sends Select{host, path, instance}, takes the replica's Position (which may drop a batch it
// already committed, resume one it got part of, or ask for a baseline: the stream's log is then
// replaced by a scan of the mirror reconciled with the replica's manifest), ships the batch with
// each chunk as the node sent it where the volume's ForwardCache still holds it (compressed once,
// on the node), else read from the mirror's ids/ links and encoded here, and waits for the ack.
// Only then is the batch dropped; on any failure it stays in flight and the next session resumes
// it where the replica stands, so nothing unacknowledged is lost and a replica that was away only costs the ranges its logs coalesced meanwhile. Node
// sessions never wait for this thread: they only append to the logs. When nothing is pending the
// session sleeps at most kReplicaIdleWaitMs (a commit on any of its volumes wakes it at once) and
// checks that the replica is still there, so a replicator that died while idle frees its name
// for its successor promptly. Each pass over a stream with nothing to send lets the Hub save
// where the replica stands (Hub::note_current), so a restarted backupd can resume the stream;
// doing it on every idle pass rather than after an ack means a record skipped because a
// snapshot run held the volume is written once the run ends. Between batches the session asks
// the replicator for its Usage every few seconds (what it holds, its room left) and times the
// answer: the round trip placement weighs (placement.h).
//
// Before each pass the session sends the replica's pending drops (server/drops.h), one Drop at a
// time, each answered by Dropped: done ones are forgotten, failed ones stay queued and are not
// sent again on this connection (the replica's error is logged and shown by `status`), so a tree
// the replica cannot delete never stops the other streams. A drop is only ever queued for a
// volume the Hub no longer streams to the replica, and drops go first at every pass, so a stream
// of the same volume made later (registered again) reaches the replica only after the drop.
// After a drop the replica has no volume selected, so every stream is selected again.
//
// A verify asks for the replica's manifest of a volume through the replica's ManifestAsks; the
// session answers between batches (the stream to this replica pauses while the replicator
// walks its tree, as for a reconcile, and resumes where it stood).
#include "server/replica_session.h"

#include <fmt/format.h>

#include <chrono>
#include <set>

#include "common/changes/shipper.h"
#include "common/changes/transfer_progress.h"
#include "common/changes/scan.h"
#include "common/log.h"
#include "common/net/messenger.h"
#include "common/stream/reconcile.h"
#include "common/path.h"
#include "common/progress.h"
#include "server/peer.h"
#include "server/snapshot_copies.h"

namespace bkp::server {
namespace {

constexpr auto kUsageEvery = std::chrono::seconds(10);
constexpr auto kUsageRetry = std::chrono::milliseconds(200);

class ReplicaSession {
 public:
  ReplicaSession(net::Conn& conn, Hub& hub, DropQueue& drops, Replica& replica,
                 const std::atomic<bool>& stopping)
      : conn_(conn), hub_(hub), drops_(drops), replica_(replica), stopping_(stopping) {}

  void ship_snapshots(Catalog& catalog, size_t keep) {
    snapshots_.emplace(conn_, catalog, replica_, keep);
  }

  // Ships until the connection fails or stopping is set. Returns the error that ended it.
  Error serve() {
    while (!stopping_) {
      if (auto dropped = send_drops(); !dropped) return dropped.error();
      if (auto asked = ask_usage(); !asked) return asked.error();
      if (auto answered = answer_asks(); !answered) return answered.error();
      auto shipped = ship_next();
      if (!shipped) return shipped.error();
      // A slice of a snapshot copy after each batch, so neither starves the other.
      auto sliced = snapshots_ ? snapshots_->step(replica_.streams()) : Result<bool>(false);
      if (!sliced) return sliced.error().wrap("snapshot copy");
      if (*shipped || *sliced) continue;
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
      if (!s.sender.in_flight() && s.log_empty() && selected_.contains(s.instance)) {
        hub_.note_current(s);
        continue;
      }
      next_ = index + 1;
      auto shipped = ship(s);
      if (!shipped) {
        s.progress->interrupted();
        return tl::unexpected(shipped.error().wrap(s.volume->name()));
      }
      if (*shipped) return true;
    }
    return false;
  }

  // Selects the stream and takes the replica's position (every stream is selected at least once
  // per connection, so a replica that lost a tree is noticed even if nothing changes), then
  // ships its next batch. False if it had nothing to send.
  Result<bool> ship(ReplicaStream& s) {
    Volume& v = *s.volume;
    BKP_TRY_VOID(net::send(conn_, wire::Select{v.host(), v.path(), s.instance}));
    auto at = BKP_TRY(net::expect<wire::Position>(conn_, kReplicaAckTimeoutMs));
    MirrorSource mirror(*v.applier, v.forward);  // safe without the volume mutex
    // Also when the stream's log overflowed while the replica was away (Sender::needs_reconcile).
    if (s.sender.position(at) == stream::Sender::Resume::kBaseline) {
      // Not while a node's baseline is half applied to the mirror (Hub::rebaseline): select this
      // stream again after it (a commit wakes this session).
      std::optional<uint64_t> kept;
      if (!hub_.mirror_syncing(s)) {
        // The mirror is walked into the caches while the replicator walks its tree.
        auto have = BKP_TRY([&] {
          changes::TreeWarmer warm(v.applier->tree_fd());
          return stream::fetch_manifest(conn_, kReplicaAckTimeoutMs);
        }());
        kept = BKP_TRY(hub_.rebaseline(s, have));
      }
      if (!kept) {
        selected_.erase(s.instance);
        return false;
      }
      auto narrowed = BKP_TRY(stream::narrow_by_digests(conn_, s.log, mirror, kReplicaAckTimeoutMs));
      changes::LogStats left = s.log.stats();
      log::info("reconcile of {} for replica {}: {} operations ({} entries already there), {} "
                "files, {} bytes ({} files verified by block digests, {} bytes already there)",
                v.name(), replica_.name(), left.ops, *kept, left.files, left.dirty_bytes,
                narrowed.files, narrowed.kept_bytes);
    }
    selected_.insert(s.instance);
    const changes::Batch* batch = s.sender.next();
    if (batch == nullptr) return false;
    BKP_TRY_VOID(net::send(conn_, s.sender.status("")));
    s.progress->batch(*batch, s.baseline ? "baseline" : "");
    changes::ProgressSource source(mirror, *s.progress);
    uint64_t bytes_before = counters_.data_bytes;
    // await_ack drops the batch: what the log line tells of it is taken before.
    const uint64_t number = batch->number, ops = batch->ops.size(), files = batch->files.size();
    BKP_TRY_VOID(s.sender.send(conn_, source, counters_));
    BKP_TRY_VOID(s.sender.await_ack(conn_, kReplicaAckTimeoutMs));
    log::debug("replica {}: volume {} batch {} acked ({} operations, {} files, {} data bytes)",
               replica_.name(), v.name(), number, ops, files, counters_.data_bytes - bytes_before);
    if (s.log_empty()) {
      s.baseline = false;
      // Caught up: a status with nothing pending ends the replica's progress episode now. It
      // counts a batch's files by their data, so a file the batch only renamed or chmodded would
      // stay "1 file left" until the next batch.
      BKP_TRY_VOID(net::send_now(conn_, s.sender.status("")));
    }
    s.progress->acked();
    replica_.clear_error();
    return true;
  }

  // Between batches, every kUsageEvery (kUsageRetry until the replicator has counted what it
  // holds): asks for its Usage, and times the round trip, for placement (placement.h).
  Result<void> ask_usage() {
    auto now = std::chrono::steady_clock::now();
    if (now < next_usage_) return {};
    BKP_TRY_VOID(net::send_now(conn_, wire::UsageRequest{}));
    auto usage = BKP_TRY(net::expect<wire::Usage>(conn_, kReplicaAckTimeoutMs));
    auto end = std::chrono::steady_clock::now();
    const double rtt_ms = std::chrono::duration<double, std::milli>(end - now).count();
    if (replica_.note_usage(usage, rtt_ms, conn_.peer_id())) {
      log::info("replica {} holds {} and has room for {} more (round trip {:.1f} ms)",
                replica_.name(), progress::format_bytes(static_cast<double>(usage.stored_bytes)),
                progress::format_bytes(static_cast<double>(usage.free_bytes)), rtt_ms);
      hub_.replica_events().notify();
    }
    next_usage_ = end + (usage.measured ? kUsageEvery : kUsageRetry);
    return {};
  }

  // Between batches: each verify's ask for this replica's manifest of a volume, or for its
  // snapshot inventory (manifest_asks.h). An ask for a quiet stream waits while the stream has something to send
  // (a batch ships first), at most ManifestAsks::kQuietWait. Select first: the replicator
  // answers for the selected volume; the Position it gives is not taken, the stream's next
  // batch selects again and takes it. Asks this pass cannot answer (it fails half way) are
  // answered with ECONNRESET as they are dropped (ManifestAsk).
  Result<void> answer_asks() {
    std::vector<std::shared_ptr<ManifestAsk>> later;
    for (auto& ask : replica_.asks().take()) {
      std::shared_ptr<ReplicaStream> stream;
      for (auto& s : replica_.streams()) {
        if (s->volume->name() == ask->volume) stream = s;
      }
      if (!stream) {
        ask->answer(fail(ENOENT, fmt::format("replica {} holds no copy of {}", replica_.name(),
                                             ask->volume)));
        continue;
      }
      // Not current either: a stream whose position this connection has not taken yet.
      const bool busy = stream->sender.in_flight() || !stream->log_empty() ||
                        !selected_.contains(stream->instance);
      if (ask->when_current && busy &&
          std::chrono::steady_clock::now() - ask->posted < ManifestAsks::kQuietWait) {
        later.push_back(std::move(ask));
        continue;
      }
      Volume& v = *stream->volume;
      if (ask->snapshots) {
        BKP_TRY_VOID(net::send_now(conn_, wire::SnapshotInventoryRequest{v.host(), v.path()}));
        auto held = BKP_TRY(net::expect<wire::SnapshotInventory>(conn_, kReplicaAckTimeoutMs));
        if (held.host != v.host() || held.path != v.path()) {
          return fail(EPROTO, fmt::format("the replica listed the snapshots of {}:{} for {}",
                                          held.host, held.path, v.name()));
        }
        ask->answer(AskedManifest{{}, true, std::move(held.ids)});
        continue;
      }
      BKP_TRY_VOID(net::send(conn_, wire::Select{v.host(), v.path(), stream->instance}));
      BKP_TRY(net::expect<wire::Position>(conn_, kReplicaAckTimeoutMs));
      auto manifest = stream::fetch_manifest(conn_, kReplicaVerifyTimeoutMs,
                                             ask->flags | wire::kManifestVerify);
      if (!manifest) {  // the connection is in an unknown state: end the session
        ask->answer(tl::unexpected(manifest.error()));
        return tl::unexpected(manifest.error().wrap("verify"));
      }
      ask->answer(AskedManifest{std::move(*manifest), !busy});
    }
    replica_.asks().put_back(std::move(later));
    return {};
  }

  // Sends each pending drop not refused on this connection and takes its answer.
  Result<void> send_drops() {
    for (const PendingDrop& d : drops_.pending(replica_.name())) {
      const std::string volume = d.host + ":" + d.path;
      const bool purge = d.purge == Purge::kYes;
      if (refused_.contains({volume, purge})) continue;
      BKP_TRY_VOID(net::send_now(conn_, wire::Drop{d.host, d.path, uint8_t{purge}}));
      auto answer = BKP_TRY(net::expect<wire::Dropped>(conn_, kReplicaDropTimeoutMs));
      if (answer.host != d.host || answer.path != d.path) {
        return fail(EPROTO, fmt::format("the replica answered a Drop of {} for {}:{}", volume,
                                        answer.host, answer.path));
      }
      selected_.clear();
      if (answer.code != 0) {
        Error e{static_cast<int>(answer.code),
                fmt::format("could not {} its copy of {}: {}", purge ? "delete" : "close", volume,
                            answer.text)};
        log::error("replica {}: {}", replica_.name(), e.message);
        replica_.record_error(e);
        drops_.failed(replica_.name(), d, answer.text);
        refused_.insert({volume, purge});
        continue;
      }
      BKP_TRY_VOID(drops_.done(replica_.name(), d).map_error(
          [&](Error e) { return e.wrap("forget the drop of " + volume); }));
      log::info("replica {} {} its copy of {}", replica_.name(), purge ? "deleted" : "closed",
                volume);
    }
    return {};
  }

  // While idle the replica should send nothing; anything readable is either its close or a
  // protocol error (pings are tolerated, a few per check: a flood of them must not keep the
  // session here).
  Result<void> check_alive() {
    for (int pings = 0; pings < 16 && BKP_TRY(conn_.readable()); ++pings) {
      auto frame = BKP_TRY(conn_.recv_view(1000));
      if (frame.type == wire::MsgType::kPing) continue;
      return tl::unexpected(net::unexpected_frame(frame, "nothing (idle)"));
    }
    return {};
  }

  net::Conn& conn_;
  Hub& hub_;
  DropQueue& drops_;
  Replica& replica_;
  const std::atomic<bool>& stopping_;
  changes::ShipCounters counters_;
  size_t next_ = 0;  // round-robin position among the streams
  std::set<uint64_t> selected_;  // instances of the streams whose position this connection took
  std::chrono::steady_clock::time_point next_usage_{};  // the first request goes at once
  std::set<std::pair<std::string, bool>> refused_;  // drops (volume, purge) the replica refused
  std::optional<SnapshotShipper> snapshots_;
};

}  // namespace

void run_replica_session(net::Conn& conn, const wire::Hello& hello, Hub& hub,
                         const ReplicaDuties& duties, const std::string& peer,
                         const std::atomic<bool>& stopping) {
  DropQueue& drops = duties.drops;
  auto reject = [&](const Error& e) {
    log::error("replica {} ({}): {}", peer, hello.name, e.message);
    net::send_error(conn, e.code, e.message);
  };
  if (auto ok = validate_host(hello.name); !ok) {
    return reject(ok.error().wrap("replica name"));
  }
  // Before it is attached: from now on every drop is queued for it too.
  if (auto noted = drops.note_replica(hello.name); !noted) {
    return reject(noted.error().wrap("remember replica " + hello.name));
  }
  auto replica = hub.attach_replica(hello.name);
  if (!replica) return reject(replica.error());
  Replica& r = **replica;
  log::info("replica {} connected from {} (instance {:016x})", r.name(), peer, hello.instance);

  ReplicaSession session(conn, hub, drops, r, stopping);
  session.ship_snapshots(duties.catalog, duties.keep_snapshots);
  Error end{};
  if (auto sent = net::send_now(conn, wire::HelloOk{}); !sent) {
    end = sent.error();
  } else {
    end = session.serve();
  }
  hub.detach_replica(r);
  r.asks().fail_all(Error{ECONNRESET, fmt::format("replica {} disconnected", r.name())});
  if (stopping) {
    log::info("replica {} ({}): closed (shutting down)", r.name(), peer);
  } else if (end.code == ECONNRESET || end.code == EPIPE) {
    log::info("replica {} ({}) disconnected", r.name(), peer);
  } else {
    log::error("replica {} ({}): {}", r.name(), peer, end.message);
    r.record_error(end);
    net::send_error(conn, end.code, end.message);
  }
}

}  // namespace bkp::server
