// Feeding a progress::Meter from either end of a change stream.
//
// The sender (backupfs to backupd, backupd to a replica) knows exactly what is pending: its log
// plus the part of the batch in flight not yet sent. It counts ops and files of the batch as
// pending until the ack, so an episode reaches 100% only when the receiver has it durably.
//
// The receiver (backupd from a node, the replicator from backupd) learns what is pending from
// the sender's NodeStatus, which counts the whole unacknowledged batch; the bytes applied since
// the batch began are subtracted from it, so the percentage moves while one large batch (a
// baseline) is applied. Either end names the file moving now from the batch's own Create and
// Link ops (path and id), so a file is named without any lookup; a file only modified in the
// batch carries no path there, and the sender's NodeStatus name stands in for it.
//
// Not thread-safe: each object is used by the one thread that runs its stream; the Meter it
// feeds is what other threads read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/changes/change_log.h"
#include "common/changes/shipper.h"
#include "common/progress.h"
#include "common/wire/messages.h"

namespace bkp::changes {

// id -> path of the files a stream created or linked, learnt from its ops across batches, so a
// file written in a later batch is still named. Forgotten at every rename or removal (a path
// might then be stale; names are for people and must not lie) and bounded, so a huge baseline
// cannot grow it without limit (past the bound some files are simply not named).
class StreamNames {
 public:
  void add(const wire::Op& op);
  // "" when the id is not known.
  const std::string& name(uint64_t id) const;

 private:
  std::unordered_map<uint64_t, std::string> names_;
};

class SendProgress {
 public:
  SendProgress(std::shared_ptr<progress::Meter> meter, const ChangeLog& log)
      : meter_(std::move(meter)), log_(log) {}

  // The batch is about to be sent (or sent again): all of it is pending.
  void batch(const Batch& b, std::string phase);
  // A file of the batch starts moving; name "" looks it up in the batch's ops.
  void file(const FileRef& ref, const std::string& name);
  void sent(uint64_t bytes);
  // The batch was acknowledged.
  void acked();
  // The peer went away with the batch unacknowledged.
  void interrupted();

 private:
  void update();

  std::shared_ptr<progress::Meter> meter_;
  const ChangeLog& log_;
  StreamNames names_;
  uint64_t moved_ = 0;
  uint64_t batch_bytes_ = 0, batch_sent_ = 0, batch_ops_ = 0, batch_files_ = 0;
  uint64_t files_started_ = 0;
  bool in_batch_ = false;
};

// A DataSource that reports what another one opens and what is sent from it.
class ProgressSource : public DataSource {
 public:
  ProgressSource(DataSource& inner, SendProgress& progress) : inner_(inner), progress_(progress) {}
  Result<UniqueFd> open_file(const FileRef& file) override;
  int64_t source_ctime(const FileRef& file, const struct stat& st) override {
    return inner_.source_ctime(file, st);
  }
  std::shared_ptr<const wire::EncodedWrite> encoded(const FileRef& file, uint64_t offset,
                                                    uint32_t length) override {
    return inner_.encoded(file, offset, length);
  }
  void prefetch(const FileRef& file, uint64_t offset, uint64_t length) override {
    inner_.prefetch(file, offset, length);
  }
  void sent(const FileRef& file, uint64_t bytes) override;

 private:
  DataSource& inner_;
  SendProgress& progress_;
};

class ReceiveProgress {
 public:
  explicit ReceiveProgress(std::shared_ptr<progress::Meter> meter) : meter_(std::move(meter)) {}

  // The sender's latest NodeStatus.
  void status(const wire::NodeStatus& s);
  void op(const wire::Op& op);
  void applied(uint64_t id, uint64_t bytes);
  // The batch was made durable and acknowledged.
  void committed();
  // The stream broke.
  void interrupted();

 private:
  void update();

  std::shared_ptr<progress::Meter> meter_;
  StreamNames names_;
  uint64_t moved_ = 0;
  // Applied since the batch began: Write bytes, ops, files (Writes come grouped by file).
  uint64_t batch_bytes_ = 0, batch_ops_ = 0, batch_files_ = 0;
  uint64_t last_id_ = 0;
  // The sender's last status: everything unacknowledged then, the whole batch included.
  uint64_t status_bytes_ = 0, status_ops_ = 0, status_files_ = 0;
};

}  // namespace bkp::changes
