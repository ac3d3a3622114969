// Receiver (see receiver.h). The order of a commit is the whole durability argument: the tree is
// synced first, then `state` names the batch, then the caller acks. A crash before `state` is
// renamed leaves the old commit recorded and the batch unacknowledged, so the sender still has
// it; `position` then tells how much of it the tree holds.
#include "common/stream/receiver.h"

#include <fcntl.h>
#include <stdio.h>  // RENAME_EXCHANGE
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <utility>

#include <fmt/format.h>

#include "common/files.h"
#include "common/log.h"
#include "common/process.h"

namespace bkp::stream {
namespace {

struct PositionRecord {
  uint64_t instance = 0;
  uint64_t batch = 0;
  uint64_t applied = 0;
  uint64_t flags = 0;  // kSyncing | kWritten | kExchanging | kCommitted | kClosed
  // kExchanging: the inodes at the two names of the exchange about to be applied (since
  // 2026-12-02; a record of the first four fields alone is read with these zero).
  uint64_t exchange_path_ino = 0;
  uint64_t exchange_target_ino = 0;
  // The boot of the machine that wrote it (boot_id(); since 2026-12-02, absent before).
  uint64_t boot = 0;
};
constexpr ssize_t kFirstRecordSize = 4 * sizeof(uint64_t);

constexpr uint64_t kSyncing = 1;     // the applier is inside a baseline, or one is due
constexpr uint64_t kWritten = 2;     // Write frames of the batch reached the tree
constexpr uint64_t kExchanging = 4;  // Op frame `applied + 1` is a RENAME_EXCHANGE under way
constexpr uint64_t kCommitted = 8;   // all of `batch` applied; written just before the tree's sync
constexpr uint64_t kClosed = 16;     // written after syncing the tree, by a clean stop

// Whether `rec` (n bytes read) still tells what the tree holds. After a crash of the process it
// always does: the page cache kept the tree and the record alike. After a restart of the machine
// only what was flushed is left, so only a record that the tree was synced with counts: a clean
// stop's, or the commit's when `state` (synced after the tree) names that commit. Any other one
// may be older than what reached the disk of an unfinished batch (or newer: neither is flushed).
bool still_true(const PositionRecord& rec, ssize_t n, uint64_t boot, uint64_t instance,
                uint64_t committed) {
  if (n < static_cast<ssize_t>(sizeof rec) || rec.boot == 0 || boot == 0 || rec.boot == boot) {
    return true;
  }
  if ((rec.flags & kClosed) != 0) return true;
  return (rec.flags & kCommitted) != 0 && rec.instance == instance && rec.batch == committed;
}

bool is_exchange(const wire::Op& op) {
  return op.kind == wire::OpKind::kRename && (op.flags & RENAME_EXCHANGE) != 0;
}

constexpr const char* kReserved[] = {"instance", "committed", "syncing"};

Result<void> write_record(int fd, const PositionRecord& rec) {
  if (::pwrite(fd, &rec, sizeof rec, 0) != static_cast<ssize_t>(sizeof rec)) {
    return fail_errno("note the stream position");
  }
  return {};
}

// For a note that only a crash inside the batch would need: the batch goes on without it.
void warn_if_failed(const Result<void>& noted) {
  if (!noted) log::warn("{}", noted.error().message);
}

}  // namespace

Result<std::unique_ptr<Receiver>> Receiver::open(const std::string& dir,
                                                 changes::Applier& applier) {
  std::unique_ptr<Receiver> r(new Receiver(dir, applier));
  r->boot_ = boot_id();
  r->counters_ = BKP_TRY(read_key_values(dir + "/state"));
  r->instance_ = r->counters_["instance"];
  r->committed_ = r->counters_["committed"];
  bool syncing = r->counters_["syncing"] != 0;
  for (const char* key : kReserved) r->counters_.erase(key);

  std::string path = dir + "/position";
  r->position_fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!r->position_fd_) return fail_errno("open " + path);
  r->session_instance_ = r->instance_;
  r->session_committed_ = r->committed_;
  PositionRecord rec;
  ssize_t n = ::pread(r->position_fd_.get(), &rec, sizeof rec, 0);
  if (n >= kFirstRecordSize && !still_true(rec, n, r->boot_, r->instance_, r->committed_)) {
    // The tree may hold part of a batch after the last commit, and the source ctimes noted for
    // it may vouch for bytes that did not reach the disk: a baseline comparing every file's
    // content repairs it. Noted durably, so that a restart before that baseline asks again.
    log::warn("{}: the machine restarted while this copy held changes after its last commit, "
              "some of which may be lost: asking for a baseline that compares every file",
              dir);
    if (auto forgot = applier.forget_source_ctimes(); !forgot) {
      r->position_fd_.reset();  // no clean stop noted: the next open finds this record again
      return tl::unexpected(forgot.error().wrap(dir));
    }
    r->need_baseline_ = true;
    if (auto noted = r->note_change_coming(); !noted) {
      r->position_fd_.reset();
      return tl::unexpected(noted.error());
    }
    return r;
  }
  if (n >= kFirstRecordSize && rec.instance == r->instance_ && r->instance_ != 0 &&
      rec.batch == r->committed_ + 1) {
    r->applied_ = rec.applied;
    r->written_ = (rec.flags & kWritten) != 0;
    syncing = (rec.flags & kSyncing) != 0;
    if ((rec.flags & kExchanging) != 0 && n >= static_cast<ssize_t>(offsetof(PositionRecord, boot))) {
      r->exchanging_ = Exchanging{rec.applied, rec.exchange_path_ino, rec.exchange_target_ino};
    }
  } else if (n >= kFirstRecordSize && rec.instance != r->instance_ &&
             (rec.applied > 0 || (rec.flags & kWritten) != 0)) {
    syncing = true;  // another stream's unfinished batch is in the tree
  }
  r->need_baseline_ = syncing;
  r->at_commit_ = !syncing && r->applied_ == 0 && !r->written_;
  return r;
}

Receiver::~Receiver() {
  // A clean stop: the tree is made durable and `position` says so, so that a restart of the
  // machine before the next start still resumes exactly (a crash leaves this undone).
  if (!position_fd_) return;  // open() failed, or abandon()
  if (auto synced = applier_.commit(); !synced) {
    log::warn("{}: cannot sync the tree at stop: {}", dir_, synced.error().message);
    return;
  }
  // The record the last change left, as a crash would leave it (a hello since, of a stranger
  // say, is no change of the tree), marked closed by this boot.
  PositionRecord rec;
  (void)::pread(position_fd_.get(), &rec, sizeof rec, 0);
  rec.flags |= kClosed;
  rec.boot = boot_;
  if (auto noted = write_record(position_fd_.get(), rec); !noted) {
    log::warn("{}/position: at stop: {}", dir_, noted.error().message);
    return;
  }
  warn_if_failed(sync_position());
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
  if (!begun_durably_) BKP_TRY_VOID(note_change_coming());
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
      BKP_TRY_VOID(note_position(0, &now));
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
  warn_if_failed(note_position());
  return {};
}

Result<void> Receiver::write(const wire::Write& w) {
  if (baseline_due_) return fail(EPROTO, "a baseline was asked for: data before sync-begin");
  in_batch_ = true;
  at_commit_ = false;
  if (!written_ || !begun_durably_) {  // noted before the data lands (see note_change_coming)
    const bool before = std::exchange(written_, true);
    if (auto noted = note_change_coming(); !noted) {
      written_ = before;  // so that the next write notes it again
      return tl::unexpected(noted.error());
    }
  }
  return applier_.write(w);
}

Result<uint64_t> Receiver::commit(const wire::Commit& c) {
  if (baseline_due_) return fail(EPROTO, "a baseline was asked for: commit before sync-begin");
  if (c.batch != session_committed_ + 1) {
    return fail(EPROTO, fmt::format("commit of batch {} where batch {} was due", c.batch,
                                    session_committed_ + 1));
  }
  // Flushed by the tree's sync (still_true); without it, a restart of the machine finds the
  // batch's first note and asks for a baseline: slower, never wrong.
  warn_if_failed(note_position(kCommitted));
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
  begun_durably_ = false;
  return c.batch;
}

Result<void> Receiver::save() {
  std::map<std::string, uint64_t> values = counters_;
  values["instance"] = instance_;
  values["committed"] = committed_;
  values["syncing"] = applier_.syncing() ? 1 : 0;
  return write_file_atomic(dir_ + "/state", format_key_values(values), Durability::kSync);
}

Result<void> Receiver::note_position(uint64_t flags, const Exchanging* exchanging) {
  PositionRecord rec{session_instance_, session_committed_ + 1, applied_,
                     flags | (applier_.syncing() || need_baseline_ ? kSyncing : 0) |
                         (written_ ? kWritten : 0)};
  if (exchanging != nullptr) {
    rec.flags |= kExchanging;
    rec.exchange_path_ino = exchanging->path_ino;
    rec.exchange_target_ino = exchanging->target_ino;
  }
  rec.boot = boot_;
  if (auto noted = write_record(position_fd_.get(), rec); !noted) {
    return tl::unexpected(noted.error().wrap(dir_ + "/position"));
  }
  return {};
}

Result<void> Receiver::sync_position() {
  if (::fdatasync(position_fd_.get()) != 0) return fail_errno(dir_ + "/position: sync");
  return {};
}

Result<void> Receiver::note_change_coming() {
  // An exchange noted by the previous process stays noted until the operation it names is
  // applied (or found done). A change whose note cannot be made durable is not made: a restart
  // of the machine could otherwise find an older record that vouches for the tree.
  BKP_TRY_VOID(note_position(0, exchanging_ ? &*exchanging_ : nullptr));
  if (!begun_durably_) BKP_TRY_VOID(sync_position());
  begun_durably_ = true;
  return {};
}

}  // namespace bkp::stream
