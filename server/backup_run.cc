// A scheduled run (see backup_run.h for the outcomes and the cut).
//
// Why a Cut rather than holding the volume mutex for the whole archive (as runs did until issue
// 12): the mirror is only changed by its node session, one frame at a time under that mutex, so
// holding it was the cheapest freeze, but it stopped that node's acks for the whole archive: a
// run of minutes made the node give up waiting and resend whole batches. The mutex is now held
// for the walk of the names only; the applier, told of every change by the Cut, keeps the old
// bytes the archive still needs. Replicas keep shipping as before: they read the mirror through
// ids/ without the mutex.
//
// Why the changed counts are settled only at the end rather than taken at the cut and put
// back on failure: putting back cannot survive a crash in the middle of an archive, and a run
// that never took them has nothing to put back. The volume counts what is applied after the
// cut apart meanwhile (Volume::begin_run_counts).
//
// The "changed?" test compares the volume's persistent change counter (incremented for every
// applied Op/Write, saved with each commit) with the counter stored in the catalog beside the
// newest snapshot. The counter never goes down, so equality proves nothing was applied since.
// The catalog is read before the mutex is taken (it only changes in runs, and a volume has one
// run at a time) to keep SQLite off the node's critical path.
#include "server/backup_run.h"

#include <fmt/format.h>

#include <chrono>
#include <mutex>

#include "common/log.h"
#include "server/cut.h"
#include "server/snapshot.h"

namespace bkp::server {
namespace {

constexpr auto kBatchWaitSlice = std::chrono::milliseconds(200);

std::string cancel_text(CancelReason reason) {
  if (reason == CancelReason::kUnregistered) return "cancelled (volume unregistered during the run)";
  return "interrupted (backupd stopped during the run)";
}

struct Outcome {
  RunStatus status = RunStatus::kFailed;
  std::optional<std::string> snapshot;
  int64_t snapshot_bytes = 0;
  std::optional<std::string> error;
  uint64_t changed_bytes = 0, changed_files = 0;
};

Outcome failed(std::string why, Outcome o = {}) {
  o.status = RunStatus::kFailed;
  o.error = std::move(why);
  return o;
}

// After the archive: rotate and record. The snapshot is already safe under its final name.
Outcome finish_written(Volume& v, Catalog& catalog, const RunSettings& settings,
                       const SnapshotFile& snap, int64_t counter, Outcome o) {
  int64_t now = wall_ms();
  auto added = catalog.add_snapshot(v.host(), v.path(),
                                    SnapshotRecord{snap.id, static_cast<int64_t>(snap.bytes), now,
                                                   static_cast<int64_t>(counter), std::nullopt,
                                                   static_cast<uint32_t>(kPartSize), snap.digests});
  o.snapshot = snap.id;
  o.snapshot_bytes = static_cast<int64_t>(snap.bytes);
  if (!added) {
    // The file stays; startup recovery adopts snapshot files the catalog does not know.
    return failed(fmt::format("snapshot {} written but not catalogued: {}", snap.name,
                              added.error().message), o);
  }
  auto rotated = rotate_archives(v.archives(), settings.keep);
  if (!rotated) {
    log::error("volume {}: rotating snapshots: {}", v.name(), rotated.error().message);
  } else if (!rotated->empty()) {
    if (auto m = catalog.mark_deleted(v.host(), v.path(), *rotated, now); !m) {
      log::error("volume {}: {}", v.name(), m.error().message);
    }
    for (const auto& id : *rotated) log::info("volume {}: rotated out snapshot {}.tgz", v.name(), id);
  }
  v.snapshot_epoch.fetch_add(1);
  o.status = RunStatus::kWritten;
  if (!snap.warnings.empty()) o.error = snap.warnings;
  return o;
}

// What was applied since the last successful run, read without taking it (v.mu held).
void read_counts(const Volume& v, Outcome& o) {
  o.changed_bytes = v.state.run_bytes;
  o.changed_files = v.state.run_files;
}

void save_counts(Volume& v) {
  if (auto saved = v.save_state(); !saved) {
    log::warn("volume {}: {}", v.name(), saved.error().message);
  }
}

// The run succeeded up to the cut: the next run counts from here (v.mu held, no cut running).
void take_counts(Volume& v) {
  v.take_run_counts();
  save_counts(v);
}

RunRecord make_record(const Volume& v, int64_t run_id, int64_t started_at, const Outcome& o) {
  RunRecord r;
  r.id = run_id;
  r.host = v.host();
  r.path = v.path();
  r.started_at = started_at;
  r.ended_at = wall_ms();
  r.status = o.status;
  r.snapshot = o.snapshot;
  r.snapshot_bytes = o.snapshot_bytes;
  r.duration_ms = std::max<int64_t>(0, r.ended_at - started_at);
  r.changed_bytes = static_cast<int64_t>(o.changed_bytes);
  r.changed_files = static_cast<int64_t>(o.changed_files);
  r.error = o.error;
  return r;
}

Outcome run(Volume& v, const Link& link, Catalog& catalog, const RunSettings& settings,
            const std::atomic<bool>& cancel, const std::atomic<CancelReason>& reason) {
  auto last_counter = catalog.last_snapshot_counter(v.host(), v.path());
  if (!last_counter) return failed(last_counter.error().message);

  std::unique_lock lock(v.mu);
  Outcome o;
  read_counts(v, o);
  if (!v.node_connected) return failed(link.unavailable_reason(), o);
  while (v.in_batch() && v.node_connected && !cancel) v.batch_done.wait_for(lock, kBatchWaitSlice);
  if (cancel) return failed(cancel_text(reason), o);
  if (!v.node_connected) {
    return failed(fmt::format("node disconnected in the middle of a batch ({})",
                              link.unavailable_reason()), o);
  }
  // At a batch boundary from here on, until the lock is released.
  read_counts(v, o);
  auto counter = static_cast<int64_t>(v.state.changes);
  bool changed = *last_counter ? **last_counter != counter : counter != 0;
  if (!changed) {
    take_counts(v);
    o.status = RunStatus::kUnchanged;
    return o;
  }
  std::string id = snapshot_id_for(wall_ms());
  auto t0 = std::chrono::steady_clock::now();
  const changes::Applier& applier = *v.applier;
  auto cut = Cut::take(applier.tree_fd(), applier.ids_fd(), label_entries(applier), v.cut_dir());
  if (!cut) return failed(cut.error().message, o);
  v.applier->set_observer(cut->get());
  v.begin_run_counts();
  lock.unlock();
  log::info("volume {}: snapshot {} cut at change {}: {} entries, {} files, in {} ms; ingest goes "
            "on while it is archived",
            v.name(), id, counter, (*cut)->entries(), (*cut)->files(),
            std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - t0)
                .count());

  auto snap = write_snapshot(**cut, v.archives(), id,
                             ArchiveOptions{.gzip_level = settings.gzip_level,
                                            .gzip_threads = settings.gzip_threads,
                                            .cancel = &cancel,
                                            .entry_delay = settings.entry_delay});
  (*cut)->close();
  lock.lock();
  v.applier->set_observer(nullptr);
  // Once the archive is safe under its final name the counts are its; even if cataloguing it
  // fails below, startup recovery adopts the file.
  v.end_run_counts(snap ? Volume::RunEnd::kSucceeded : Volume::RunEnd::kFailed);
  if (snap && !v.in_batch()) save_counts(v);  // else the batch's commit saves them
  lock.unlock();
  cut->reset();  // deletes what it kept, without the mutex
  if (!snap) {
    if (snap.error().code == ECANCELED && cancel) return failed(cancel_text(reason), o);
    return failed(snap.error().message, o);
  }
  return finish_written(v, catalog, settings, *snap, counter, o);
}

}  // namespace


std::string human_bytes(uint64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double v = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", v, kUnits[unit]);
}

std::string describe_run(const RunRecord& run) {
  switch (run.status) {
    case RunStatus::kWritten:
      return fmt::format("written {}.tgz {} in {:.1f} s{}", run.snapshot.value_or("?"),
                         human_bytes(static_cast<uint64_t>(run.snapshot_bytes)),
                         static_cast<double>(run.duration_ms) / 1000,
                         run.error ? " with warnings: " + *run.error : "");
    case RunStatus::kUnchanged:
      return "unchanged";
    case RunStatus::kFailed:
      return "failed: " + run.error.value_or("unknown error");
  }
  return "failed";
}

RunRecord perform_run(Volume& volume, const Link& link, Catalog& catalog,
                      const RunSettings& settings, const std::atomic<bool>& cancel,
                      const std::atomic<CancelReason>& cancel_reason, int64_t run_id,
                      int64_t started_at) {
  Outcome o = run(volume, link, catalog, settings, cancel, cancel_reason);
  return make_record(volume, run_id, started_at, o);
}

RunRecord failed_run(Volume& volume, int64_t started_at, std::string error) {
  Outcome o;
  {
    std::lock_guard lock(volume.mu);
    read_counts(volume, o);
  }
  return make_record(volume, 0, started_at, failed(std::move(error), o));
}

}  // namespace bkp::server
