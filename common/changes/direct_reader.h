// Reading a large cold file past the page cache (DESIGN.md §2: the shipper reads data late).
//
// A baseline reads every byte of the tree once. Read through the page cache, each of those bytes
// is copied from a freshly filled cache page into the frame, and the pages then push the
// application's own hot data out of memory: a backup that slows the application it protects.
// Read with O_DIRECT, the disk writes straight into this reader's buffers, which stay mapped
// and hot, and the cache is left as the application had it. The kernel writes dirty cached
// pages of the range back before a direct read, so a direct read returns what a buffered
// one would (a write racing the read is recorded and shipped again, as for buffered reads).
// Direct reads get no readahead from the kernel, so the reader keeps its own: while the caller
// sends one chunk, the next one is being read (an io_uring of its own, two buffers).
//
// Only for data a scan put in the log: live changes were just written and are still cached,
// and there a buffered read is a copy from memory. Filesystems that cannot read directly
// (tmpfs before 6.6, most FUSE filesystems) or ask for alignments larger than a page are read
// buffered, as before, through the same read(): callers have one loop either way.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/result.h"

namespace bkp::changes {

// Files (or parts) of at least this many bytes read whole are read past the page cache; smaller
// ones cost more in a disk round trip each than in the copy.
constexpr uint64_t kDirectMinBytes = 4u << 20;

class DirectReader {
 public:
  // capacity: the largest read() asked for.
  explicit DirectReader(size_t capacity);
  ~DirectReader();
  DirectReader(const DirectReader&) = delete;
  DirectReader& operator=(const DirectReader&) = delete;

  // Makes fd (a regular file opened for reading) the file read() reads, switched to direct
  // reads when `direct` is asked and its filesystem allows them. Returns whether it reads
  // directly; otherwise read() reads it buffered (the kernel reads ahead). Nothing fails.
  bool use(int fd, bool direct);

  // Reads up to want bytes of the file at offset (fewer only at end of file); directly, it then
  // starts reading the chunk after them, up to limit: read() of it finds it read or reading.
  // The bytes are valid until the next read() or use(); offset and want need no alignment.
  Result<std::span<const uint8_t>> read(uint64_t offset, size_t want, uint64_t limit);

 private:
  static constexpr size_t kMaxAlign = 4096;
  struct Free {
    void operator()(uint8_t* p) const;
  };
  struct Span {  // an aligned read covering [offset, offset + want)
    uint64_t offset = 0;
    size_t want = 0;
    uint64_t start = 0;
    size_t len = 0;
  };
  Span aligned(uint64_t offset, size_t want) const;
  uint8_t* buffer(int b);  // allocated at first use: a buffered file needs only one
  // Finishes buffer b's read of s synchronously from byte `done` on; returns the bytes asked.
  Result<std::span<const uint8_t>> finish(int b, const Span& s, size_t done);
  // Queues a read of len bytes at file offset start into buffer b from byte `at`; false (and
  // no ring from then on) if the ring refused it.
  bool submit_at(int b, uint64_t start, size_t at, size_t len);
  Result<int> wait();  // the read submitted last: its result (negative errno)
  void drop_ahead();   // waits for a read ahead nobody asked for, if one is in flight

  size_t capacity_;
  io_uring ring_{};
  bool ring_ok_ = false;
  std::unique_ptr<uint8_t, Free> bufs_[2];  // capacity_ + 2 * kMaxAlign bytes each, aligned
  int fd_ = -1;
  bool direct_ = false;
  size_t align_ = 0;
  int spare_ = 0;          // the buffer not holding what read() returned last
  bool in_flight_ = false;  // a read of ahead_ into bufs_[spare_]
  Span ahead_;
};

}  // namespace bkp::changes
