// SourceActivity: which files may have bytes on backupd that the source's own disk does not
// hold yet, so that a restart of the machine cannot leave the mirror different for good.
//
// backupfs ships what the application wrote as soon as it is in the page cache; the source's
// disk gets it when the kernel writes it back (tens of seconds later) or the application syncs.
// A restart of the machine in between loses those bytes on the source while the mirror keeps
// them, and the file's ctime may have reached the disk anyway (ext4 journals the inode apart
// from overwritten data blocks). The next reconcile trusts an equal ctime, so the mirror would
// keep bytes the source never had after the restart, until the file changed and was reconciled
// again; a restore would bring back bytes the application's own recovery never saw.
//
// So, like DRBD's activity log: before the data of a batch is read for shipping, the ids of its
// files are appended here and flushed (one fdatasync per batch, only for ids not listed yet);
// every settle (kSettleEvery, on a thread of its own) syncs the source filesystem and drops the
// ids whose reading ended before that sync began. A clean stop syncs the source and marks the
// record clean. A start that finds a record of another boot not marked clean (the machine
// restarted while this volume was served) makes its ids *suspect*: the first reconcile compares
// their content (their ctime counts as unknown, so they are compared by block digests or sent)
// instead of trusting it, and they stay suspect, in a file of their own, until that reconcile is
// acknowledged. The cost of a restart of the machine is then what changed in the last minutes,
// never the volume.
//
// Files: BASE (a 24-byte header {magic, boot id, clean} and the listed ids, 8 bytes each) and
// BASE.suspect (the suspect ids). Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/changes/change_log.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::fs {

class SourceActivity {
 public:
  static constexpr std::chrono::milliseconds kSettleEvery = std::chrono::minutes(2);

  // base: the record's path; root_fd: the source tree (its filesystem is what a settle syncs).
  // settle_every: how often the settler runs (0: never, the owner calls settle()).
  static Result<std::unique_ptr<SourceActivity>> open(
      std::string base, int root_fd, std::chrono::milliseconds settle_every = kSettleEvery);
  ~SourceActivity();  // stops the settler; the record is not marked clean (see close())
  SourceActivity(const SourceActivity&) = delete;
  SourceActivity& operator=(const SourceActivity&) = delete;

  // Whether the next reconcile must compare this file's content, and how many such files.
  bool suspect(uint64_t id) const;
  size_t suspects() const;
  // A reconcile that compared them was acknowledged.
  Result<void> clear_suspects();

  // The data of these files is about to be read for shipping: listed, flushed. On failure (a
  // full disk) the new ids are not listed and the next batch of them tries again.
  Result<void> reading(const changes::Batch& batch);
  // That reading ended (shipped or not).
  void read_done(const changes::Batch& batch);

  // Syncs the source and drops the ids whose reading ended before the sync began.
  Result<void> settle();
  // A clean stop: syncs the source, then marks the record clean (no id listed).
  Result<void> close();

  // Ids listed now (for tests).
  size_t listed() const;

 private:
  SourceActivity(std::string base, int root_fd) : base_(std::move(base)), root_fd_(root_fd) {}
  // Rewrites BASE with the listed ids (and `clean`), durably. mu_ held.
  Result<void> rewrite_locked(bool clean);
  void settler(std::chrono::milliseconds every);

  const std::string base_;
  const int root_fd_;
  uint64_t boot_ = 0;
  mutable std::mutex mu_;
  UniqueFd fd_;  // BASE, O_APPEND
  uint64_t size_ = 0;  // its length
  // id -> the settle epoch in which its last reading ended (kReading while one is under way).
  std::unordered_map<uint64_t, uint64_t> listed_;
  uint64_t epoch_ = 1;
  std::unordered_set<uint64_t> suspect_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread settler_;
};

}  // namespace bkp::fs
