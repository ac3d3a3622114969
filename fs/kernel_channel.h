// KernelChannel: the /dev/fuse transport under libfuse's request parsing, for what libfuse 3.14
// cannot do itself: negotiate FUSE_HANDLE_KILLPRIV_V2 and pass on the kernel's kill flags.
#pragma once

#include <fuse_lowlevel.h>
#include <linux/fuse.h>  // opcodes and the FATTR_ / *_KILL_SUIDGID flags of the kernel ABI
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bkp::fs {

// What the kernel asked of the request this thread is serving, beyond what libfuse passes on.
struct RequestNote {
  uint32_t opcode = 0;
  uint64_t nodeid = 0;
  // WRITE: FUSE_WRITE_KILL_SUIDGID; SETATTR: FATTR_KILL_SUIDGID; OPEN/CREATE:
  // FUSE_OPEN_KILL_SUIDGID. The kernel sets them only when the caller lacks CAP_FSETID.
  bool kill_suidgid = false;
  // SETATTR: the raw FATTR_* mask (libfuse keeps only the attribute bits).
  uint32_t setattr_valid = 0;

  // Whether this note is about the request (opcode, node) an operation is serving.
  bool is(uint32_t op, uint64_t node) const { return opcode == op && nodeid == node; }
};

class KernelChannel {
 public:
  // Reads one request from the device and notes it (for INIT: whether the kernel offers
  // KILLPRIV_V2; for the rest: this thread's RequestNote). As read(2).
  ssize_t read(int fd, void* buf, size_t len);
  // Writes one reply; the INIT reply gets FUSE_HANDLE_KILLPRIV_V2 added when the kernel offered
  // it. As writev(2).
  ssize_t writev(int fd, iovec* iov, int count);

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
  std::atomic<int> fd_{-1};               // the device, as last read from
  std::atomic<uint64_t> init_unique_{0};  // unique of INIT while its reply is pending
  std::atomic<bool> offered_v2_{false};
  std::atomic<bool> negotiated_v2_{false};
};

}  // namespace bkp::fs
