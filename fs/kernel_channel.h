// KernelChannel: the /dev/fuse transport under libfuse's request parsing, for what libfuse 3.14
// cannot do itself: negotiate FUSE_HANDLE_KILLPRIV_V2 and pass on the kernel's kill flags, and
// take over a connection another worker served (replay INIT, have the kernel resend what the
// predecessor left unanswered, stop without leaving a request half served).
#pragma once

#include <fuse_lowlevel.h>
#include <linux/fuse.h>  // opcodes and the FATTR_ / *_KILL_SUIDGID flags of the kernel ABI
#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace bkp::fs {

// What the kernel asked of the request this thread is serving, beyond what libfuse passes on.
struct RequestNote {
  uint32_t opcode = 0;
  uint64_t nodeid = 0;
  uint64_t unique = 0;  // without the resend bit
  // The kernel sent this request again (FUSE_NOTIFY_RESEND after a takeover): a predecessor may
  // have carried it out already without answering.
  bool resent = false;
  // WRITE: FUSE_WRITE_KILL_SUIDGID; SETATTR: FATTR_KILL_SUIDGID; OPEN/CREATE:
  // FUSE_OPEN_KILL_SUIDGID. The kernel sets them only when the caller lacks CAP_FSETID.
  bool kill_suidgid = false;
  // SETATTR: the raw FATTR_* mask (libfuse keeps only the attribute bits).
  uint32_t setattr_valid = 0;

  // Whether this note is about the request (opcode, node) an operation is serving.
  bool is(uint32_t op, uint64_t node) const { return opcode == op && nodeid == node; }
};

class SessionStore;

class KernelChannel {
 public:
  // Where the INIT exchange is kept (takeover.h). With one already stored, the first read hands
  // libfuse that INIT instead of reading the device, its reply is not sent (the kernel took the
  // original), and the kernel is asked to resend the requests a predecessor left unanswered.
  void attach(SessionStore* session);
  // Stops reading requests and returns once every request read has been answered (true), or
  // after timeout (false; the successor's resend covers what is left). Threads blocked in
  // read(2) stay there.
  bool stop_reading(std::chrono::milliseconds timeout);
  // For requests whose effect the tree cannot show (RENAME_EXCHANGE): note that the request
  // being served was carried out (before replying), and ask whether a resent one was.
  void note_done();
  bool done_before() const;
  // Waits until INIT has been answered (or replayed); false after timeout.
  bool wait_initialised(std::chrono::milliseconds timeout);

  // Reads one request from the device and notes it (for INIT: whether the kernel offers
  // KILLPRIV_V2; for the rest: this thread's RequestNote). As read(2).
  ssize_t read(int fd, void* buf, size_t len);
  // Writes one reply; the INIT reply gets FUSE_HANDLE_KILLPRIV_V2 added when the kernel offered
  // it. As writev(2).
  ssize_t writev(int fd, iovec* iov, int count);
  // A reply went out by splice (libfuse's splice_send): one request fewer in flight.
  void count_reply();

  // The note of the request last read on the calling thread. libfuse's loop serves a request
  // on the thread that read it, before that thread reads the next one.
  static const RequestNote& current();

  // Tells the kernel that the attributes it caches for nodeid are stale (FUSE_NOTIFY_INVAL_INODE,
  // attributes only). For the replies that carry none: OPEN and WRITE after we changed the mode.
  // Safe while serving a request of nodeid (the kernel takes no inode lock for it). 0 or errno.
  int invalidate_attributes(uint64_t nodeid);

  // Inspect a request already read (read() calls it; exposed for tests).
  void note_request(const void* buf, size_t len);
  // Whether the kernel offered KILLPRIV_V2 in INIT (known from INIT's read until its reply).
  bool offered_killpriv_v2() const { return offered_v2_.load(std::memory_order_acquire); }
  // Whether KILLPRIV_V2 is in force: the INIT reply carrying it was written.
  bool killpriv_v2() const { return negotiated_v2_.load(std::memory_order_acquire); }

 private:
  // INIT of a takeover: the stored reply stands in for libfuse's (swallowed).
  ssize_t replayed_init_reply(int fd, const iovec* iov, int count);
  // The first INIT: stores request and reply for successors.
  void store_init(const iovec* iov, int count);
  // FUSE_NOTIFY_RESEND: the kernel queues again what a dead predecessor read and left unanswered.
  static void ask_resend(int fd);

  SessionStore* session_ = nullptr;
  bool replaying_ = false;        // a stored INIT stands for the kernel's
  bool resend_init_ = false;      // a predecessor took INIT with it: ask for it again
  std::string init_request_;      // the first INIT's bytes, until stored
  std::atomic<bool> replay_{false};   // hand libfuse the stored INIT on the next read
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool init_taken_ = false;       // GUARDED_BY(gate_mu_): a thread is serving INIT
  bool stopping_ = false;         // GUARDED_BY(gate_mu_)
  std::atomic<bool> stop_flag_{false};
  // INIT answered: others may read. Set under gate_mu_ (the waits' predicate), read without it
  // on the way to read(2).
  std::atomic<bool> open_{false};
  std::atomic<int64_t> in_flight_{0};  // requests read that expect a reply, minus replies
  std::atomic<int> fd_{-1};               // the device, as last read from
  std::atomic<uint64_t> init_unique_{0};  // unique of INIT while its reply is pending
  std::atomic<bool> offered_v2_{false};
  std::atomic<bool> negotiated_v2_{false};
};

}  // namespace bkp::fs
