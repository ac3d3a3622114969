// Sender (see sender.h): the decisions a reconnect forces, in one place.
//
// After a Position the batch in flight is in one of three states: the receiver committed it
// (its ack was lost: drop it), it is the receiver's next batch (resume at `applied`), or the
// receiver is behind what it acknowledged (it lost durable state: only a baseline repairs
// that). With nothing in flight, the receiver must stand exactly where our numbering does.
#include "common/stream/sender.h"

#include <fmt/format.h>

#include <chrono>

#include "common/log.h"
#include "common/random.h"
#include "common/net/messenger.h"

namespace bkp::stream {

uint64_t new_instance() { return random_nonzero(); }

Sender::Resume Sender::position(const wire::Position& p) {
  if (p.need_baseline) {
    set_inflight(std::nullopt);
    next_number_ = p.committed + 1;
    return Resume::kBaseline;
  }
  if (inflight_) {
    if (inflight_->number <= p.committed) {
      log::debug("batch {} was committed before the reconnect", inflight_->number);
      set_inflight(std::nullopt);
    } else if (inflight_->number == p.committed + 1) {
      skip_ = p.applied;
      return Resume::kContinue;
    }
  }
  if (!inflight_ && next_number_ == p.committed + 1 && p.applied == 0) {
    return needs_reconcile() ? Resume::kBaseline : Resume::kContinue;
  }
  log::warn("receiver stands at batch {} (+{} operations) where we stand at {}: sending a baseline",
            p.committed, p.applied, inflight_ ? inflight_->number : next_number_ - 1);
  set_inflight(std::nullopt);
  next_number_ = p.committed + 1;
  return Resume::kBaseline;
}

const changes::Batch* Sender::next() {
  if (!inflight_) {
    changes::Batch batch = log_.take(limits_);
    if (batch.empty()) return nullptr;
    batch.number = next_number_++;
    if (batch.since_ns == 0) batch.since_ns = wire::realtime_ns();
    set_inflight(std::move(batch));
  }
  return &*inflight_;
}

std::chrono::nanoseconds Sender::linger_left(const Linger& linger, int64_t now_ns) const {
  using std::chrono::nanoseconds;
  const int64_t since = log_.since_ns();
  if (inflight_ || since == 0 || now_ns < since) return nanoseconds(0);
  const changes::LogStats s = log_.stats();
  if (s.ops > 0 || s.dirty_bytes >= linger.bytes || log_.overflowed()) return nanoseconds(0);
  const nanoseconds age(now_ns - since);
  return age >= linger.time ? nanoseconds(0) : linger.time - age;
}

Result<void> Sender::send(net::Conn& conn, changes::DataSource& source,
                          changes::ShipCounters& counters) {
  if (!inflight_) return fail(EINVAL, "internal error: no batch in flight");
  return changes::send_batch(conn, *inflight_, skip_, source, log_, counters);
}

Result<void> Sender::await_ack(net::Conn& conn, int timeout_ms) {
  if (!inflight_) return fail(EINVAL, "internal error: no batch in flight");
  auto ack = BKP_TRY(net::expect<wire::Ack>(conn, timeout_ms));
  if (ack.batch != inflight_->number) {
    return fail(EPROTO, fmt::format("ack for batch {} while waiting for {}", ack.batch,
                                    inflight_->number));
  }
  set_inflight(std::nullopt);
  return {};
}

void Sender::set_inflight(std::optional<changes::Batch> batch) {
  inflight_ = std::move(batch);
  skip_ = 0;
  inflight_ops_ = inflight_ ? inflight_->ops.size() : 0;
  inflight_files_ = inflight_ ? inflight_->files.size() : 0;
  inflight_bytes_ = inflight_ ? inflight_->dirty_bytes() : 0;
  inflight_since_ns_ = inflight_ ? inflight_->since_ns : 0;
}

Lag Sender::lag() const {
  changes::LogStats s = log_.stats();
  Lag lag;
  lag.ops = s.ops + inflight_ops_;
  lag.files = s.files + inflight_files_;
  lag.bytes = s.dirty_bytes + inflight_bytes_;
  int64_t a = inflight_since_ns_, b = log_.since_ns();
  lag.oldest_ns = a == 0 ? b : b == 0 ? a : std::min(a, b);
  return lag;
}

wire::NodeStatus Sender::status(std::string current_file) const {
  Lag l = lag();
  wire::NodeStatus s;
  s.pending_ops = l.ops;
  s.pending_bytes = l.bytes;
  s.pending_files = l.files;
  s.oldest_ns = l.oldest_ns;
  s.current_file = std::move(current_file);
  return s;
}

}  // namespace bkp::stream
