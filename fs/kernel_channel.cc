// Why backupfs brings its own transport (fuse_session_custom_io) although it keeps libfuse's
// loop and parsing: libfuse 3.14 predates FUSE_HANDLE_KILLPRIV_V2. Without it the kernel asks
// getxattr("security.capability") before writes and refreshes attributes (GETATTR) before a
// set-id-clearing chown: two round trips where one would do. With it the kernel sets SB_NOSEC
// and leaves the clearing to us, flagging each WRITE, truncating SETATTR and O_TRUNC OPEN/CREATE
// whose caller lacks CAP_FSETID — flags libfuse 3.14 drops before calling the operations.
//
// So this channel reads requests exactly as libfuse would (read(2) of the device), looks at the
// fixed headers of the few requests that matter and writes replies with writev(2), adding the
// KILLPRIV_V2 bit to the INIT reply when the kernel offered it. The note of a request lives in a
// thread_local: libfuse's multi-threaded loop (fuse_loop_mt.c, fuse_do_work) receives a request
// and processes it on the same worker thread before that thread reads again.
//
// The cost: a custom io without splice_receive makes libfuse offer no SPLICE_READ (we could not
// look at a request left in a pipe), so write data is copied once into the request buffer
// instead of moved through a pipe: one more memcpy per large write, nothing that shows against
// the round trip saved (bench/RESULTS.md, "KILLPRIV_V2"). Replies still splice (splice_send).
#include "fs/kernel_channel.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/log.h"

namespace bkp::fs {
namespace {

thread_local RequestNote t_note;

// The argument that follows the request header, if the request is long enough to hold it.
template <typename Arg>
bool read_arg(const void* buf, size_t len, Arg* arg) {
  if (len < sizeof(fuse_in_header) + sizeof(Arg)) return false;
  std::memcpy(arg, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof(Arg));
  return true;
}

}  // namespace

const RequestNote& KernelChannel::current() { return t_note; }

void KernelChannel::note_request(const void* buf, size_t len) {
  RequestNote note;
  if (len < sizeof(fuse_in_header)) {
    t_note = note;
    return;
  }
  fuse_in_header in;
  std::memcpy(&in, buf, sizeof(in));
  note.opcode = in.opcode;
  note.nodeid = in.nodeid;
  switch (in.opcode) {
    case FUSE_INIT: {
      // Only the first 4 words are there in every protocol version; flags is the 4th.
      uint32_t words[4];
      if (len >= sizeof(fuse_in_header) + sizeof(words)) {
        std::memcpy(words, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof(words));
        offered_v2_.store((words[3] & FUSE_HANDLE_KILLPRIV_V2) != 0, std::memory_order_release);
        init_unique_.store(in.unique, std::memory_order_release);
      }
      break;
    }
    case FUSE_WRITE: {
      fuse_write_in w;
      if (read_arg(buf, len, &w)) {
        note.kill_suidgid = (w.write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
      }
      break;
    }
    case FUSE_SETATTR: {
      fuse_setattr_in s;
      if (read_arg(buf, len, &s)) {
        note.setattr_valid = s.valid;
        note.kill_suidgid = (s.valid & FATTR_KILL_SUIDGID) != 0;
      }
      break;
    }
    case FUSE_OPEN: {
      fuse_open_in o;
      if (read_arg(buf, len, &o)) note.kill_suidgid = (o.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
      break;
    }
    case FUSE_CREATE: {
      fuse_create_in c;
      if (read_arg(buf, len, &c)) note.kill_suidgid = (c.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
      break;
    }
    default:
      break;
  }
  t_note = note;
}

ssize_t KernelChannel::read(int fd, void* buf, size_t len) {
  fd_.store(fd, std::memory_order_relaxed);
  ssize_t n = ::read(fd, buf, len);
  if (n > 0) note_request(buf, static_cast<size_t>(n));
  return n;
}

int KernelChannel::invalidate_attributes(uint64_t nodeid) {
  fuse_notify_inval_inode_out arg{.ino = nodeid, .off = -1, .len = 0};
  fuse_out_header out{.len = sizeof(fuse_out_header) + sizeof(arg),
                      .error = FUSE_NOTIFY_INVAL_INODE,
                      .unique = 0};
  iovec iov[2] = {{&out, sizeof(out)}, {&arg, sizeof(arg)}};
  return ::writev(fd_.load(std::memory_order_relaxed), iov, 2) < 0 ? errno : 0;
}

ssize_t KernelChannel::writev(int fd, iovec* iov, int count) {
  const uint64_t init = init_unique_.load(std::memory_order_acquire);
  if (init == 0 || count < 2 || iov[0].iov_len < sizeof(fuse_out_header)) {
    return ::writev(fd, iov, count);
  }
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof(out));
  // libfuse replies with the header alone in iov[0] and fuse_init_out (or a compat prefix of it
  // that still holds flags) in iov[1].
  constexpr size_t kFlagsEnd = offsetof(fuse_init_out, flags) + sizeof(uint32_t);
  if (out.unique != init || out.error != 0 || iov[1].iov_len < kFlagsEnd) {
    return ::writev(fd, iov, count);
  }
  init_unique_.store(0, std::memory_order_release);
  if (!offered_killpriv_v2()) return ::writev(fd, iov, count);
  std::vector<char> arg(static_cast<const char*>(iov[1].iov_base),
                        static_cast<const char*>(iov[1].iov_base) + iov[1].iov_len);
  uint32_t flags;
  std::memcpy(&flags, arg.data() + offsetof(fuse_init_out, flags), sizeof(flags));
  flags |= FUSE_HANDLE_KILLPRIV_V2;
  std::memcpy(arg.data() + offsetof(fuse_init_out, flags), &flags, sizeof(flags));
  std::vector<iovec> patched(iov, iov + count);
  patched[1] = iovec{arg.data(), arg.size()};
  ssize_t n = ::writev(fd, patched.data(), count);
  if (n >= 0) {
    negotiated_v2_.store(true, std::memory_order_release);
    log::info("FUSE_HANDLE_KILLPRIV_V2 negotiated: set-id bits and capabilities are killed here");
  }
  return n;
}

}  // namespace bkp::fs
