// One scheduled run of one volume: decide, cut, archive, rotate, and say what happened.
//
// A run ends in exactly one of three outcomes (DESIGN.md §4, invariant 6):
//   failed     the node link is down (the reason is the link's last error), the run was
//              cancelled (backupd stopping, volume unregistered), or archiving/cataloguing failed;
//   unchanged  the volume's change counter equals the one of the last snapshot written: nothing
//              was applied since, no file is written;
//   written    a new snapshot holds the mirror exactly as one commit left it.
//
// The cut: the run takes the volume's mutex, waits (on Volume::batch_done) until no batch is
// half applied, takes a Cut (server/cut.h: a walk of the mirror's names, and the Cut set as the
// applier's observer) and lets the mutex go: the node session applies its next frame at once,
// and the Cut keeps by copy-before-write whatever the archive still needs. The archive is
// written from the Cut by write_snapshot into the volume's ArchiveStore (visible only once
// complete), then the store is rotated to the newest `keep` snapshots and the catalog marks the
// rotated ones deleted. The Cut's journal line ("volume V: snapshot ID cut at change N ...") tells when the
// cut was taken.
//
// Changed counts: a run reports the bytes and files applied since the last run that succeeded
// (written or unchanged), as they were at the cut. A run that succeeds leaves the next one what
// was applied after its cut; a failed run hands everything on, and so does a run cut short by a
// crash: the volume's `state` file still holds it all.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/clock.h"
#include "server/catalog.h"
#include "server/link.h"
#include "server/volume.h"

namespace bkp::server {

struct RunSettings {
  int gzip_level = 1;
  unsigned gzip_threads = 0;  // 0: one per online CPU
  size_t keep = 10;
  // Test seam: BACKUPD_TEST_ARCHIVE_DELAY_MS, a pause before each archived entry (snapshot.h).
  std::chrono::milliseconds entry_delay{0};
  // What the run's record notes about the volume's copies (by Registration::key()), e.g. that
  // it is under-replicated (Registry::replication_note); null or nullopt: nothing.
  std::function<std::optional<std::string>(const std::string& key)> replication_note;
  // Whether this backupd still serves the volume (LeaseKeeper::serves, with a shared catalog):
  // a run is not started for a volume whose lease may have passed to another server. Null:
  // always.
  std::function<bool(const std::string& key)> serving;
};

// Why a run was cancelled, for its error text.
enum class CancelReason { kNone, kStopping, kUnregistered };

// Performs the run and returns its record (id, started_at and ended_at filled from the
// arguments and the clock; the caller writes it to the catalog). cancel is checked while
// waiting for a batch boundary and while archiving; cancel_reason says why it was set.
RunRecord perform_run(Volume& volume, const Link& link, Catalog& catalog,
                      const RunSettings& settings, const std::atomic<bool>& cancel,
                      const std::atomic<CancelReason>& cancel_reason, int64_t run_id,
                      int64_t started_at);

// The journal line of a finished run, without the "run " prefix's volume:
// The record of a run that failed before it could start (its catalog row could not be
// inserted): id 0, the volume's changed counts so far, ended now.
RunRecord failed_run(Volume& volume, int64_t started_at, std::string error);

// "written 20261126T010203.123Z.tgz 12.3 MiB in 0.8 s", "unchanged", "failed: reason".
std::string describe_run(const RunRecord& run);

// "512 B", "1.5 KiB", "12.3 MiB", "2.0 GiB".
std::string human_bytes(uint64_t bytes);

using bkp::wall_ms;  // common/clock.h

}  // namespace bkp::server
