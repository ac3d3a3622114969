// send_batch (see shipper.h).
//
// The order on the wire is the contract receivers rely on: all operations first (they create,
// move and remove the names data will land in), then data by file id, then each file's
// attributes (after the data, because writing data changes mtime on the receiver; taken before
// the data is read, see shipper.h), then the Commit that asks for durability. Extent bytes are
// read here, through the connection's io_uring (large scanned files through a DirectReader's),
// at the moment they are shipped: a range rewritten since it was recorded ships the newest
// bytes once.
#include "common/changes/shipper.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "common/changes/direct_reader.h"
#include "common/log.h"

namespace bkp::changes {
namespace {

// Large parts of scanned files are read past the page cache (direct_reader.h); smaller ones are
// read ahead side by side instead (Prefetcher).
bool reads_direct(const FileChange& change) {
  return change.from_scan && change.extents.total_bytes() >= kDirectMinBytes;
}

Result<void> send_file(net::Conn& conn, const FileChange& change, DataSource& source,
                       const ChangeLog& log, uint8_t* buf, DirectReader& direct_reader,
                       std::vector<uint8_t>& payload, ShipCounters& counters) {
  auto fd = source.open_file(change.ref);
  if (!fd) {
    if (fd.error().code == ENOENT || fd.error().code == ESTALE) return {};  // removed since
    return tl::unexpected(fd.error());
  }
  struct stat st{};
  if (fstat(fd->get(), &st) != 0) return fail_errno("stat of file being shipped");
  wire::Op attr = wire::attr_from_stat("", change.ref.id, st);
  attr.ctime_ns = log.pending(change.ref.id) ? 0 : source.source_ctime(change.ref, st);
  bool direct = reads_direct(change) && direct_reader.use(fd->get(), true);
  // One encoder per shipping thread (every stream has its own), so its adaptive skipping
  // follows that stream's data.
  thread_local wire::WriteEncoder encoder;
  for (const auto& [start, end] : change.extents.ranges()) {
    for (uint64_t off = start; off < end;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, end - off));
      size_t got = want;
      uint8_t head[wire::kWriteHeader];
      if (auto kept = source.encoded(change.ref, off, static_cast<uint32_t>(want))) {
        wire::encode_write_head(change.ref.id, off, *kept, head);
        BKP_TRY_VOID(conn.send_parts(wire::MsgType::kWrite, kept->flags, head, kept->body));
      } else if (direct && encoder.raw_next(want)) {
        // Sent from the reader's buffer, not copied into the frame first.
        std::span<const uint8_t> data = BKP_TRY(direct_reader.read(off, want, end));
        got = data.size();
        encoder.raw_head(change.ref.id, off, got, head);
        BKP_TRY_VOID(conn.send_parts(wire::MsgType::kWrite, 0, head, data));
      } else {
        auto room = BKP_TRY(conn.begin_frame(wire::kWriteHeader + want));
        std::span<const uint8_t> data;
        if (direct) {
          data = BKP_TRY(direct_reader.read(off, want, end));
        } else {
          // Raw chunks are read straight into the frame; one that may compress is read aside
          // and compressed into it.
          uint8_t* dst = encoder.raw_next(want) ? room.data() + wire::kWriteHeader : buf;
          data = {dst, BKP_TRY(conn.pread(fd->get(), off, std::span<uint8_t>(dst, want)))};
        }
        got = data.size();
        uint8_t flags = 0;
        size_t size = encoder.encode_into(change.ref.id, off, data, room, flags);
        BKP_TRY_VOID(conn.end_frame(wire::MsgType::kWrite, flags, size));
      }
      if (got == 0) break;  // the file shrank; its truncate is later in the stream
      counters.data_bytes += got;
      source.sent(change.ref, got);
      off += got;
      if (got < want) break;
    }
  }
  payload.clear();
  wire::encode(attr, payload);
  return conn.send(wire::MsgType::kOp, 0, payload);
}

// Asks the source to prefetch the data of the scanned files after the one being sent, up to
// kPrefetchFiles files and kPrefetchBytes bytes ahead of it. Live changes are not prefetched:
// their bytes were just written and are still in the page cache.
class Prefetcher {
 public:
  static constexpr size_t kPrefetchFiles = 64;
  static constexpr uint64_t kPrefetchBytes = 8u << 20;

  Prefetcher(const Batch& batch, DataSource& source) : batch_(batch), source_(source) {}

  // File i is about to be sent.
  void before(size_t i) {
    if (next_ <= i) {
      next_ = i + 1;
      ahead_bytes_ = 0;
    } else {
      ahead_bytes_ -= std::min(ahead_bytes_, asked_[i % kPrefetchFiles]);
    }
    while (next_ < batch_.files.size() && next_ - i <= kPrefetchFiles &&
           ahead_bytes_ < kPrefetchBytes) {
      const FileChange& f = batch_.files[next_];
      uint64_t asked = 0;
      if (f.from_scan && !reads_direct(f)) {
        for (const auto& [start, end] : f.extents.ranges()) {
          uint64_t length = std::min(end - start, kPrefetchBytes - ahead_bytes_ - asked);
          if (length == 0) break;
          source_.prefetch(f.ref, start, length);
          asked += length;
        }
      }
      asked_[next_ % kPrefetchFiles] = asked;
      ahead_bytes_ += asked;
      ++next_;
    }
  }

 private:
  const Batch& batch_;
  DataSource& source_;
  size_t next_ = 0;           // the first file not asked for yet
  uint64_t ahead_bytes_ = 0;  // asked for, of the files after the one being sent
  uint64_t asked_[kPrefetchFiles] = {};
};

}  // namespace

void DataSource::prefetch(const FileRef& file, uint64_t offset, uint64_t length) {
  if (auto fd = open_file(file)) {
    (void)posix_fadvise(fd->get(), static_cast<off_t>(offset), static_cast<off_t>(length),
                        POSIX_FADV_WILLNEED);
  }
}

Result<void> send_batch(net::Conn& conn, const Batch& batch, uint64_t skip, DataSource& source,
                        const ChangeLog& log, ShipCounters& counters) {
  uint64_t sent_before = conn.bytes_sent();
  std::vector<uint8_t> payload;
  size_t first_op = static_cast<size_t>(std::min<uint64_t>(skip, batch.ops.size()));
  for (size_t i = first_op; i < batch.ops.size(); ++i) {
    payload.clear();
    wire::encode(batch.ops[i], payload);
    BKP_TRY_VOID(conn.send(wire::MsgType::kOp, 0, payload));
  }
  counters.ops += batch.ops.size() - first_op;
  size_t first_file = static_cast<size_t>(
      std::min<uint64_t>(skip - first_op, batch.files.size()));
  // Not zeroed: only what a read puts in it is used. (A vector's zeroing of 1 MiB per batch was
  // 3% of backupfs's CPU during an untar, whose batches hold a few small files each.)
  std::unique_ptr<uint8_t[]> buf;
  if (first_file < batch.files.size()) buf = std::make_unique_for_overwrite<uint8_t[]>(kChunk);
  DirectReader direct_reader(kChunk);
  Prefetcher prefetcher(batch, source);
  for (size_t i = first_file; i < batch.files.size(); ++i) {
    prefetcher.before(i);
    BKP_TRY_VOID(send_file(conn, batch.files[i], source, log, buf.get(), direct_reader, payload,
                           counters));
  }
  payload.clear();
  wire::encode(wire::Commit{batch.number}, payload);
  BKP_TRY_VOID(conn.send(wire::MsgType::kCommit, 0, payload));
  BKP_TRY_VOID(conn.flush());
  counters.batches += 1;
  counters.wire_bytes += conn.bytes_sent() - sent_before;
  return {};
}

}  // namespace bkp::changes
