// Receiver (see receiver.h). The order of a commit is the whole durability argument: the tree is
// synced first, then `state` names the batch, then the caller acks. A crash before `state` is
// renamed leaves the old commit recorded and the batch unacknowledged, so the sender still has
// it; `position` then tells how much of it the tree holds.
#include "common/stream/receiver.h"

#include <fcntl.h>
#include <stdio.h>  // RENAME_EXCHANGE
#include <unistd.h>

#include <cstdlib>
#include <utility>

#include <fmt/format.h>

#include "common/files.h"
#include "common/log.h"

namespace bkp::stream {
namespace {

struct PositionRecord {
  uint64_t instance = 0;
  uint64_t batch = 0;
  uint64_t applied = 0;
  uint64_t flags = 0;  // kSyncing | kWritten | kExchanging
  // kExchanging: the inodes at the two names of the exchange about to be applied (since
  // 2026-12-02; a record of the first four fields alone is read with these zero).
  uint64_t exchange_path_ino = 0;
  uint64_t exchange_target_ino = 0;
};
constexpr ssize_t kFirstRecordSize = 4 * sizeof(uint64_t);

constexpr uint64_t kSyncing = 1;     // the applier is inside a baseline
constexpr uint64_t kWritten = 2;     // Write frames of the batch reached the tree
constexpr uint64_t kExchanging = 4;  // Op frame `applied + 1` is a RENAME_EXCHANGE under way

bool is_exchange(const wire::Op& op) {
  return op.kind == wire::OpKind::kRename && (op.flags & RENAME_EXCHANGE) != 0;
}

constexpr const char* kReserved[] = {"instance", "committed", "syncing"};

}  // namespace

Result<std::unique_ptr<Receiver>> Receiver::open(const std::string& dir,
                                                 changes::Applier& applier) {
  std::unique_ptr<Receiver> r(new Receiver(dir, applier));
  r->counters_ = BKP_TRY(read_key_values(dir + "/state"));
  r->instance_ = r->counters_["instance"];
  r->committed_ = r->counters_["committed"];
  bool syncing = r->counters_["syncing"] != 0;
  for (const char* key : kReserved) r->counters_.erase(key);

  std::string path = dir + "/position";
  r->position_fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!r->position_fd_) return fail_errno("open " + path);
  PositionRecord rec;
  ssize_t n = ::pread(r->position_fd_.get(), &rec, sizeof rec, 0);
  if (n >= kFirstRecordSize && rec.instance == r->instance_ && r->instance_ != 0 &&
      rec.batch == r->committed_ + 1) {
    r->applied_ = rec.applied;
    r->written_ = (rec.flags & kWritten) != 0;
    syncing = (rec.flags & kSyncing) != 0;
    if ((rec.flags & kExchanging) != 0 && n == static_cast<ssize_t>(sizeof rec)) {
      r->exchanging_ = Exchanging{rec.applied, rec.exchange_path_ino, rec.exchange_target_ino};
    }
  } else if (n >= kFirstRecordSize && rec.instance != r->instance_ &&
             (rec.applied > 0 || (rec.flags & kWritten) != 0)) {
    syncing = true;  // another stream's unfinished batch is in the tree
  }
  r->need_baseline_ = syncing;
  r->at_commit_ = !syncing && r->applied_ == 0 && !r->written_;
  r->session_instance_ = r->instance_;
  r->session_committed_ = r->committed_;
  return r;
}

wire::Position Receiver::position(uint64_t instance) {
  if (instance == 0 || instance != instance_ || need_baseline_) exchanging_.reset();
  if (instance == 0 || instance != instance_) {
    session_instance_ = instance;
    session_committed_ = 0;
    applied_ = 0;
    written_ = false;
    baseline_due_ = true;
    return wire::Position{0, 1, 0};
  }
  // Another stream applied part of a batch since our last commit: the tree is not ours any more.
  if (session_instance_ != instance_ && in_batch_) need_baseline_ = true;
  session_instance_ = instance_;
  session_committed_ = committed_;
  baseline_due_ = need_baseline_;
  if (need_baseline_) {
    applied_ = 0;
    written_ = false;
    return wire::Position{committed_, 1, 0};
  }
  return wire::Position{committed_, 0, applied_};
}

Result<void> Receiver::apply(const wire::Op& op) {
  if (baseline_due_ && op.kind != wire::OpKind::kSyncBegin) {
    return fail(EPROTO, fmt::format("a baseline was asked for: {} before sync-begin",
                                    wire::op_name(op.kind)));
  }
  in_batch_ = true;
  at_commit_ = false;
  // An exchange is the one operation that does not tolerate its own earlier effect (applied
  // again, it swaps the names back): its two inodes are noted before it, so that after a crash
  // between the swap and noting it, the resent exchange is found done.
  const std::optional<Exchanging> before_crash = std::exchange(exchanging_, std::nullopt);
  if (is_exchange(op)) {
    const Exchanging now{applied_, applier_.inode_at(op.path), applier_.inode_at(op.target)};
    if (before_crash && before_crash->applied == applied_ && now.path_ino != 0 &&
        now.path_ino == before_crash->target_ino && now.target_ino == before_crash->path_ino) {
      log::info("{}: the exchange of {} and {} was applied before a restart: not again", dir_,
                op.path, op.target);
    } else {
      note_position(&now);
      BKP_TRY_VOID(applier_.apply(op));
      // Test seam: BKP_TEST_DIE_AFTER_EXCHANGE=1 ends the process between the swap and noting it.
      if (const char* die = std::getenv("BKP_TEST_DIE_AFTER_EXCHANGE"); die && *die == '1') {
        ::_exit(86);
      }
    }
  } else {
    BKP_TRY_VOID(applier_.apply(op));
  }
  if (op.kind == wire::OpKind::kSyncBegin) need_baseline_ = baseline_due_ = false;
  ++applied_;
  note_position();
  return {};
}

Result<void> Receiver::write(const wire::Write& w) {
  if (baseline_due_) return fail(EPROTO, "a baseline was asked for: data before sync-begin");
  in_batch_ = true;
  at_commit_ = false;
  if (!written_) {  // noted before the data lands: a crash in between only costs at_commit()
    written_ = true;
    note_position();
  }
  return applier_.write(w);
}

Result<uint64_t> Receiver::commit(const wire::Commit& c) {
  if (baseline_due_) return fail(EPROTO, "a baseline was asked for: commit before sync-begin");
  if (c.batch != session_committed_ + 1) {
    return fail(EPROTO, fmt::format("commit of batch {} where batch {} was due", c.batch,
                                    session_committed_ + 1));
  }
  BKP_TRY_VOID(applier_.commit());
  // Recorded only once `state` says so: a receiver that cannot save (disk full) must not tell a
  // reconnecting sender that the batch is committed.
  uint64_t old_instance = instance_, old_committed = committed_;
  instance_ = session_instance_;
  committed_ = c.batch;
  if (auto saved = save(); !saved) {
    instance_ = old_instance;
    committed_ = old_committed;
    return tl::unexpected(saved.error());
  }
  session_committed_ = c.batch;
  applied_ = 0;
  written_ = false;
  in_batch_ = false;
  return c.batch;
}

Result<void> Receiver::save() {
  std::map<std::string, uint64_t> values = counters_;
  values["instance"] = instance_;
  values["committed"] = committed_;
  values["syncing"] = applier_.syncing() ? 1 : 0;
  return write_file_atomic(dir_ + "/state", format_key_values(values), Durability::kSync);
}

void Receiver::note_position(const Exchanging* exchanging) {
  PositionRecord rec{session_instance_, session_committed_ + 1, applied_,
                     (applier_.syncing() ? kSyncing : 0) | (written_ ? kWritten : 0)};
  if (exchanging != nullptr) {
    rec.flags |= kExchanging;
    rec.exchange_path_ino = exchanging->path_ino;
    rec.exchange_target_ino = exchanging->target_ino;
  }
  if (::pwrite(position_fd_.get(), &rec, sizeof rec, 0) != static_cast<ssize_t>(sizeof rec)) {
    // Only a crash inside this batch would need it; the batch itself is still applied.
    log::warn("{}/position: cannot note the stream position: {}", dir_, std::strerror(errno));
  }
}

}  // namespace bkp::stream
