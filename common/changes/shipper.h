// Shipping a Batch over a Conn: the half of DESIGN.md §2 that reads data late.
// (common/stream/sender.h decides which batch, from where, and what an ack means.)
//
// send_batch() sends the batch's operations in order, then for each file its dirty extents in
// chunks of at most kChunk bytes read from the tree at this moment (through the Conn's
// io_uring; a part of 4 MiB or more of a scanned file past the page cache, direct_reader.h; or,
// for a chunk the source keeps already encoded, DataSource::encoded, as kept),
// then one Attr by id with the file's mode, owner, times and source ctime as they
// were just before its data was read, and finally Commit{batch.number}.
//
// The source ctime in that Attr is a promise a later reconcile trusts (scan.h): "the receiver
// now holds this file's content as of that ctime". It is kept by three rules: stat first, read
// after (whatever changes the file after the stat also moves its ctime); send 0 instead while
// the log still holds changes of the file (a slice of a large file, or writes recorded since
// the batch was taken) or while a write of it is being performed (recorders bracket each write
// with ChangeLog::begin_write/end_write, fs/file_ops.cc), so no write can move the ctime
// without the log knowing. A file that can no longer be opened (deleted since) is skipped: a later
// operation in the stream already removed it downstream. Nothing is removed from any log here;
// stream::Sender drops the batch only when the receiver's Ack confirms it was applied durably.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "common/changes/change_log.h"
#include "common/net/conn.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::changes {

constexpr uint32_t kChunk = 1u << 20;

// Opens a regular file of the tree being shipped for reading.
class DataSource {
 public:
  virtual ~DataSource() = default;
  // ENOENT/ESTALE when the file is gone; any other error aborts the batch.
  virtual Result<UniqueFd> open_file(const FileRef& file) = 0;
  // The ctime the shipped content stands for (st: the open file's stat). Default: its own; a
  // mirror answers with its source's (0: unknown).
  virtual int64_t source_ctime(const FileRef& file, const struct stat& st) {
    (void)file;
    return wire::to_ns(st.st_ctim);
  }
  // The chunk of exactly length bytes at offset of the file, already encoded as a Write body,
  // if the source keeps one (backupd: as the node sent it, server/forward_cache.h); it is then
  // sent as it is instead of being read and compressed again. Default: none.
  virtual std::shared_ptr<const wire::EncodedWrite> encoded(const FileRef& file, uint64_t offset,
                                                            uint32_t length) {
    (void)file;
    (void)offset;
    (void)length;
    return nullptr;
  }
  // The bytes [offset, offset + length) of the file will be shipped soon: start reading them from
  // the disk now (advice only; nothing may fail). send_batch asks it for the files a little ahead
  // of the one it sends, when they came from a scan and are read buffered (under 4 MiB): a
  // baseline of many small cold files then reads them side by side instead of waiting for each
  // in turn. Default: opens the file with open_file() and asks the kernel to read the range
  // (POSIX_FADV_WILLNEED); the pages stay cached after the descriptor is closed. A source that
  // wraps another and whose open_file() does more than open (progress) passes this on to the
  // inner source instead.
  virtual void prefetch(const FileRef& file, uint64_t offset, uint64_t length);
  // Called after each Write frame of the file was queued (progress reporting); default: nothing.
  virtual void sent(const FileRef& file, uint64_t bytes) {
    (void)file;
    (void)bytes;
  }
};

struct ShipCounters {
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> data_bytes{0};  // raw extent bytes read and sent
  std::atomic<uint64_t> wire_bytes{0};  // bytes of frames sent
};

// Sends the batch from item `skip` on (items: each operation, then each file; see
// common/stream/sender.h), then its Commit. log: where the batch was taken from.
Result<void> send_batch(net::Conn& conn, const Batch& batch, uint64_t skip, DataSource& source,
                        const ChangeLog& log, ShipCounters& counters);

}  // namespace bkp::changes
