// Sender: the sending end of one stream (a node's volume to backupd, or one volume of backupd's
// mirror to one replica). It owns what both hops share: numbering, the one batch in flight,
// bounded slices of the change log, exact resume after a reconnect, and the lag.
//
// Numbering is the receiver's: batch committed + 1 follows every Position. An *item* of a batch
// is each operation, then each file (its data and its closing Attr). The receiver counts the Op
// frames it applied of the batch in progress (Position.applied); each operation is one Op frame
// and each file that still exists ends with one, so skipping that many items never skips
// anything unapplied — at worst a file is sent again, which rewrites the same bytes. Operations,
// which are not idempotent (`mv x y; create x`), are never sent twice to a receiver that
// remembers them.
//
// The log is sliced with changes::Limits, so a long catch-up is many small batches and a break
// costs at most one of them.
//
// Thread-safety: one session thread drives a Sender; lag() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "common/changes/change_log.h"
#include "common/changes/shipper.h"
#include "common/net/conn.h"
#include "common/result.h"
#include "common/wire/messages.h"

namespace bkp::stream {

// Default batch bounds: small enough that a resend is cheap, large enough that one fsync per
// batch on the receiver stays negligible.
constexpr changes::Limits kBatchLimits{4096, 64u << 20};

// How long a sender may hold back a batch of data only, so that a trickle of small writes (a
// database's fsync'd pages) travels as one batch every `time` instead of one per write: each
// batch costs both ends a round trip and the receiver a sync. A batch with any operation in it,
// or with `bytes` or more of data, goes at once, so namespace work and bulk writes are never
// delayed; the lag grows by at most `time`.
struct Linger {
  std::chrono::nanoseconds time{0};
  uint64_t bytes = 0;
};

// What the receiver does not have yet: the log plus the batch in flight.
struct Lag {
  uint64_t ops = 0;
  uint64_t files = 0;
  uint64_t bytes = 0;
  int64_t oldest_ns = 0;  // CLOCK_REALTIME of the oldest change it lacks; 0 if none
};

// A new random, nonzero stream instance (Hello.instance, Select.instance): a receiver that has
// no record of it asks for a baseline.
uint64_t new_instance();

class Sender {
 public:
  Sender(changes::ChangeLog& log, changes::Limits limits = kBatchLimits)
      : log_(log), limits_(limits) {}

  enum class Resume { kContinue, kBaseline };
  // Takes the receiver's position after a (re)connect: drops a batch it already committed, or
  // notes how far into the batch in flight it got. kBaseline when it needs the whole tree (or
  // its position contradicts ours: it lost commits; or needs_reconcile()): the caller must then
  // rebuild the log from a scan (ChangeLog::replace) before next().
  Resume position(const wire::Position& p);
  // The log overflowed (ChangeLog::overflowed) and nothing is in flight: what it dropped only a
  // reconcile can send, before the next batch. position() says so too; a sender whose log can
  // overflow mid-session checks this before each next().
  bool needs_reconcile() const { return !inflight_ && log_.overflowed(); }
  // Before anything was sent: the receiver is known, from a record kept outside this Sender, to
  // have committed batch `committed` of this stream, so next() numbers from committed + 1. The
  // receiver's Position still decides: one that disagrees gets kBaseline from position().
  void resume_after(uint64_t committed) { next_number_ = committed + 1; }

  // The batch to send: the one in flight, else the next slice of the log (numbered). nullptr
  // when there is nothing to send.
  const changes::Batch* next();
  // How much longer next() should wait before it takes the log (0: take it now), by the linger
  // policy, for a clock reading now_ns (CLOCK_REALTIME, as Batch::since_ns). 0 with a batch in
  // flight, an empty log, any operation queued, or a clock that went back.
  std::chrono::nanoseconds linger_left(const Linger& linger, int64_t now_ns) const;
  // Sends the batch in flight from where the receiver stands, then its Commit.
  Result<void> send(net::Conn& conn, changes::DataSource& source, changes::ShipCounters& counters);
  // Waits for the Ack of the batch in flight and drops it.
  Result<void> await_ack(net::Conn& conn, int timeout_ms);

  bool in_flight() const { return inflight_.has_value(); }
  // The last batch the receiver committed as far as this Sender knows (its Position, then its
  // acks): the batch before the one in flight or due next.
  uint64_t committed() const { return (inflight_ ? inflight_->number : next_number_) - 1; }
  // Items of the batch in flight the receiver already has (0 unless resuming).
  uint64_t resume_at() const { return skip_; }
  Lag lag() const;
  // Lag as the NodeStatus frame carries it.
  wire::NodeStatus status(std::string current_file) const;

 private:
  void set_inflight(std::optional<changes::Batch> batch);

  changes::ChangeLog& log_;
  const changes::Limits limits_;
  std::optional<changes::Batch> inflight_;  // sent or about to be, not yet acknowledged
  uint64_t skip_ = 0;                       // items of inflight_ the receiver already has
  uint64_t next_number_ = 1;
  // Of inflight_, for lag() on other threads.
  std::atomic<uint64_t> inflight_ops_{0}, inflight_files_{0}, inflight_bytes_{0};
  std::atomic<int64_t> inflight_since_ns_{0};
};

}  // namespace bkp::stream
