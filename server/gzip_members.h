// GzipMembers: gzip on several cores, for snapshot archives (issue 12, item 4).
//
// The stream is cut into blocks of a fixed size and each block is compressed as a gzip member of
// its own (RFC 1952: a gzip file is a series of members, and every reader decompresses them one
// after the other into one stream: gzip, GNU tar, bsdtar, libarchive, Python). Blocks are
// independent, so a small pool of threads compresses them side by side, while the thread that
// writes the stream hands finished members to the sink in stream order. The output depends only
// on the input, the level and the block size, never on the number of threads or their timing.
//
// Memory is bounded: at most two blocks per thread are in flight (filling, queued, compressing
// or compressed but not yet written), each with its input and its output buffer, all allocated
// by the constructor. When they are all taken, write() waits for the oldest member and writes it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "common/result.h"

namespace bkp::server {

struct GzipMembersOptions {
  int level = 1;                   // zlib level, 1..9
  size_t block = size_t{1} << 20;  // input bytes per member (the last one may be shorter)
  unsigned threads = 0;            // compressing threads; 0: one per online CPU
  int nice = 0;                    // added to the caller's nice value for those threads
};

// Takes the compressed stream, member by member in order. Called on the thread that calls
// GzipMembers::write() or finish(), never two calls at once.
using ByteSink = std::function<Result<void>(std::span<const char>)>;

// Tells an incompressible block (random or already compressed bytes: media, archives, most of
// a database's pages) from one worth deflating, by deflating its first 64 KiB at level 1: if
// they shrink by less than 3%, the block is stored (a copy and a CRC) instead of deflated for
// nothing; for compressible data the probe costs ~6% of level 1's work. Blocks under 256 KiB
// are never called incompressible. The answer depends only on the bytes. One per thread.
class IncompressibleProbe {
 public:
  IncompressibleProbe();
  ~IncompressibleProbe();
  IncompressibleProbe(const IncompressibleProbe&) = delete;
  IncompressibleProbe& operator=(const IncompressibleProbe&) = delete;
  bool operator()(std::span<const char> block);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Not thread-safe: one thread writes the stream (write(), then finish()); the compressing
// threads are internal.
class GzipMembers {
 public:
  // Starts the threads. options.level is clamped to 1..9, block and threads to at least 1.
  GzipMembers(ByteSink sink, const GzipMembersOptions& options);
  // Stops the threads promptly (each finishes at most the block it is compressing); whatever
  // finish() did not hand to the sink is dropped.
  ~GzipMembers();
  GzipMembers(const GzipMembers&) = delete;
  GzipMembers& operator=(const GzipMembers&) = delete;

  // Appends bytes to the stream; may hand finished members to the sink. The first error of the
  // sink or of zlib is returned, and every later call returns it again.
  Result<void> write(std::span<const char> bytes);

  // Compresses what is left and hands every member still pending to the sink; the output is
  // then a complete gzip file. An empty stream gives one empty member (a valid gzip file of no
  // bytes). Call once; nothing may be written after.
  Result<void> finish();

  // The first error of the sink or of zlib, if there was one.
  const std::optional<Error>& error() const { return error_; }

 private:
  enum class State { kFree, kQueued, kDone };
  struct Slot {
    std::vector<char> in;
    size_t in_len = 0;
    std::vector<char> out;
    size_t out_len = 0;
    // Guarded by mu_. Says who owns the buffers: kFree the writer (filling in), kQueued the
    // queue and then the compressing thread that took it, kDone the writer (writing out).
    State state = State::kFree;
    std::optional<Error> error;  // zlib's, set by the thread that compressed the slot
  };

  // The slot of the block being filled: free once filled_ > 0 (write() makes room first).
  Slot& filling() { return slots_[submitted_ % slots_.size()]; }
  void submit();                 // queues the slot being filled
  Result<void> write_oldest();   // waits for the oldest member in flight and writes it
  Result<void> write_done();     // writes the members already compressed, in order
  Result<void> write_slot(Slot& slot);
  Result<void> keep(Result<void> r);  // notes the first error in error_; returns r
  void compress_loop(int nice);  // a compressing thread

  ByteSink sink_;
  int level_;
  size_t block_;
  std::optional<Error> error_;  // the first error, returned by every call after it
  size_t filled_ = 0;           // bytes in filling(), the block being filled (the writer's)
  uint64_t submitted_ = 0;      // blocks queued so far (the writer's)
  uint64_t written_ = 0;        // members handed to the sink (the writer's)

  std::mutex mu_;  // a leaf: guards the slots' state, queue_ and stop_; never held for zlib or the sink
  std::condition_variable queued_;  // a slot was queued, or stop_
  std::condition_variable done_;    // a slot was compressed
  std::deque<size_t> queue_;        // slots waiting for a thread, oldest first
  bool stop_ = false;
  std::vector<Slot> slots_;  // a ring: block n is in slots_[n % size]
  std::vector<std::thread> threads_;
};

}  // namespace bkp::server
