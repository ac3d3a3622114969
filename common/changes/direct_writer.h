// DirectWriter: the Applier's large writes, past the page cache (O_DIRECT) and a few in flight.
//
// Why: in a baseline a mirror or replica spends a third to a half of its CPU copying received
// bytes into newly allocated page-cache folios (perf, bench/RESULTS.md), and nothing on the
// receiving side reads those pages again soon. A direct write lets the device take the bytes
// from a reused aligned buffer instead; the one copy into that buffer is of bytes still in the
// CPU's cache. One direct write at a time would wait on the device for every chunk (measured:
// slower than buffered), so up to kDepth go through an io_uring while the stream goes on.
//
// Contract: submit() takes a copy of the bytes, so the caller's buffer is free at once. The
// file holds the bytes only once wait() or settle() returned: every reader of the tree must call
// wait() first (the Applier does, in each of its entry points). A failed write (ENOSPC, EIO) is
// kept and returned by the next settle(), so the batch it belongs to is never acknowledged. A
// short write is finished with an ordinary pwrite when it is reaped.
//
// Thread-safe: one mutex guards the ring and the slots, so a reader's wait() on another thread
// may reap what the applying thread submitted.
#pragma once

#include <liburing.h>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::changes {

class DirectWriter {
 public:
  static constexpr size_t kMin = 256u << 10;  // smaller writes stay buffered
  static constexpr size_t kAlign = 4096;      // offset, length and memory
  static constexpr size_t kDepth = 4;

  // nullptr when no io_uring can be set up (the caller writes buffered).
  static std::unique_ptr<DirectWriter> make();
  ~DirectWriter();
  DirectWriter(const DirectWriter&) = delete;
  DirectWriter& operator=(const DirectWriter&) = delete;

  // Whether a write of size bytes at offset can go direct.
  static bool eligible(uint64_t offset, size_t size) {
    return size >= kMin && offset % kAlign == 0 && size % kAlign == 0;
  }
  // Queues a copy of data for offset of direct_fd (opened with O_DIRECT; duplicated here, so the
  // caller may close it), waiting for a free slot first.
  Result<void> submit(int direct_fd, std::span<const uint8_t> data, uint64_t offset);
  // Waits until every queued write is in its file.
  void wait();
  // wait(), then the first failure since the last settle(), if any.
  Result<void> settle();

 private:
  struct FreeAligned {
    void operator()(uint8_t* p) const;
  };
  struct Slot {
    std::unique_ptr<uint8_t, FreeAligned> buf;
    size_t capacity = 0;
    size_t size = 0;
    uint64_t offset = 0;
    UniqueFd fd;
    bool busy = false;
  };

  DirectWriter() = default;
  // Reaps one completion, blocking for it (lock held). False when nothing is in flight.
  bool reap_one_locked();
  void finish_locked(Slot& slot, int res);

  std::mutex mu_;
  io_uring ring_{};
  std::array<Slot, kDepth> slots_;
  size_t in_flight_ = 0;
  std::optional<Error> failure_;
};

}  // namespace bkp::changes
