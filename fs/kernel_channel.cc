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
//
// Takeover (keeper.h): the first worker keeps the INIT request and its reply in the session
// store. A successor hands libfuse that request as its first read (libfuse will not serve
// anything before INIT), swallows libfuse's reply, and writes FUSE_NOTIFY_RESEND so the kernel
// re-queues every request the predecessor read and never answered; resent ones carry bit 63 of
// the unique, which the note passes on (namespace_ops.cc answers them idempotently). A graceful
// stop closes the gate to further reads and waits until replies caught up with the requests
// read, counted here (replies by splice are counted by the caller); a thread that was inside
// read(2) and gets a request after that keeps it unserved, for the next worker.
#include "fs/kernel_channel.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/log.h"
#include "fs/fs.h"
#include "fs/takeover.h"

namespace bkp::fs {
namespace {

thread_local RequestNote t_note;

// Newer than Debian's linux/fuse.h (7.38): FUSE_NOTIFY_RESEND (7.40, kernel 6.9) and the bit
// the kernel sets in the unique of a resent request.
constexpr int32_t kNotifyResend = 7;
constexpr uint64_t kUniqueResend = uint64_t{1} << 63;

// Requests the kernel expects no reply to.
bool expects_reply(uint32_t opcode) {
  return opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET && opcode != FUSE_INTERRUPT;
}

std::string flatten(const iovec* iov, int count) {
  std::string bytes;
  for (int i = 0; i < count; ++i) {
    bytes.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  }
  return bytes;
}

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
  note.resent = (in.unique & kUniqueResend) != 0;
  note.unique = in.unique & ~kUniqueResend;
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

void KernelChannel::attach(SessionStore* session) {
  session_ = session;
  replaying_ = session != nullptr && !session->init_reply().empty();
  replay_.store(replaying_);
  // A predecessor that died after reading INIT and before keeping it: the kernel holds INIT
  // as read and unanswered, and sends nothing else until it is answered. Resent, it is ours.
  resend_init_ = session != nullptr && !replaying_ && session->generation() > 1;
}

void KernelChannel::ask_resend(int fd) {
  fuse_out_header resend{.len = sizeof(fuse_out_header), .error = kNotifyResend, .unique = 0};
  if (::write(fd, &resend, sizeof(resend)) < 0) {
    log::warn("FUSE_NOTIFY_RESEND failed ({}): requests the previous worker read and left "
              "unanswered stay waiting", std::strerror(errno));
  }
}

ssize_t KernelChannel::read(int fd, void* buf, size_t len) {
  fd_.store(fd, std::memory_order_relaxed);
  // Once INIT is answered and until a stop, the gate is open: no lock on the way to read(2).
  if (!open_.load(std::memory_order_acquire) || stop_flag_.load()) {
    std::unique_lock lock(gate_mu_);
    if (replay_.exchange(false)) {
      init_taken_ = true;
      const std::string& init = session_->init_request();
      if (len < init.size()) {
        errno = EINVAL;
        return -1;
      }
      std::memcpy(buf, init.data(), init.size());
      note_request(buf, init.size());
      in_flight_.fetch_add(1);
      return static_cast<ssize_t>(init.size());
    }
    // Only INIT's reader reads before INIT is answered: libfuse fails anything else until then.
    if (!init_taken_) {
      init_taken_ = true;
      if (resend_init_) ask_resend(fd);
    } else {
      gate_cv_.wait(lock, [&] { return open_.load() && !stopping_; });
    }
  }
  // The kernel copies a request into our buffer with get_user_pages, whose slow path (pages not
  // yet present) gives up when the reader has a pending SIGKILL, and the kernel then ends the
  // request with EIO instead of leaving it to be resent: a worker killed while reading into a
  // fresh buffer would fail the application's call. Touched once, the buffer's pages stay
  // present and the copy takes the fast path, which does not look at signals.
  thread_local const void* t_faulted = nullptr;
  thread_local size_t t_faulted_len = 0;
  if (buf != t_faulted || len > t_faulted_len) {
    std::memset(buf, 0, len);
    t_faulted = buf;
    t_faulted_len = len;
  }
  ssize_t n = ::read(fd, buf, len);
  if (n > 0) {
    note_request(buf, static_cast<size_t>(n));
    const bool reply = expects_reply(t_note.opcode);
    if (reply) in_flight_.fetch_add(1);
    // Read after a stop began (this thread was already inside read(2)): not served here, so
    // nothing is recorded after the stop; the next worker has the kernel resend it. (Counted
    // first, then the flag: stop_reading sets the flag, then waits for the count.)
    if (stop_flag_.load()) {
      if (reply) count_reply();
      std::unique_lock lock(gate_mu_);
      gate_cv_.wait(lock, [] { return false; });
    }
    if (t_note.opcode == FUSE_INIT) {
      init_request_.assign(static_cast<const char*>(buf), n);
      Fs::die_after_if_asked("@init");  // the tests' way to lose INIT with a worker
    }
  }
  return n;
}

void KernelChannel::count_reply() {
  in_flight_.fetch_sub(1);
  if (stop_flag_.load(std::memory_order_relaxed)) {
    std::lock_guard lock(gate_mu_);
    gate_cv_.notify_all();
  }
}

void KernelChannel::note_done() {
  if (session_ != nullptr) session_->note_done(t_note.unique);
}

bool KernelChannel::done_before() const {
  return session_ != nullptr && t_note.resent && session_->was_done(t_note.unique);
}

bool KernelChannel::wait_initialised(std::chrono::milliseconds timeout) {
  std::unique_lock lock(gate_mu_);
  return gate_cv_.wait_for(lock, timeout, [&] { return open_.load(); });
}

bool KernelChannel::stop_reading(std::chrono::milliseconds timeout) {
  std::unique_lock lock(gate_mu_);
  stopping_ = true;
  stop_flag_.store(true);
  if (!gate_cv_.wait_for(lock, timeout, [&] { return in_flight_.load() <= 0; })) {
    log::warn("{} requests still unanswered after {} ms; the next worker has them resent",
              in_flight_.load(), timeout.count());
    return false;
  }
  return true;
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
  fuse_out_header out{};
  if (count >= 1 && iov[0].iov_len >= sizeof(out)) std::memcpy(&out, iov[0].iov_base, sizeof(out));
  const uint64_t init = init_unique_.load(std::memory_order_acquire);
  if (init == 0 || out.unique != init) {
    ssize_t n = ::writev(fd, iov, count);
    if (out.unique != 0) count_reply();  // answered, or interrupted: libfuse never retries
    return n;
  }
  init_unique_.store(0, std::memory_order_release);
  ssize_t n;
  if (replaying_) {
    n = replayed_init_reply(fd, iov, count);
  } else {
    // libfuse replies with the header alone in iov[0] and fuse_init_out (or a compat prefix of
    // it that still holds flags) in iov[1].
    constexpr size_t kFlagsEnd = offsetof(fuse_init_out, flags) + sizeof(uint32_t);
    std::vector<iovec> patched(iov, iov + count);
    std::vector<char> arg;
    const bool add_v2 =
        offered_killpriv_v2() && out.error == 0 && count >= 2 && iov[1].iov_len >= kFlagsEnd;
    if (add_v2) {
      arg.assign(static_cast<const char*>(iov[1].iov_base),
                 static_cast<const char*>(iov[1].iov_base) + iov[1].iov_len);
      uint32_t flags;
      std::memcpy(&flags, arg.data() + offsetof(fuse_init_out, flags), sizeof(flags));
      flags |= FUSE_HANDLE_KILLPRIV_V2;
      std::memcpy(arg.data() + offsetof(fuse_init_out, flags), &flags, sizeof(flags));
      patched[1] = iovec{arg.data(), arg.size()};
    }
    n = ::writev(fd, patched.data(), count);
    if (n >= 0 && add_v2) {
      negotiated_v2_.store(true, std::memory_order_release);
      log::info("FUSE_HANDLE_KILLPRIV_V2 negotiated: set-id bits and capabilities are killed here");
    }
    if (n >= 0 && out.error == 0) store_init(patched.data(), count);
  }
  count_reply();
  std::lock_guard lock(gate_mu_);
  open_.store(true, std::memory_order_release);
  gate_cv_.notify_all();
  return n;
}

void KernelChannel::store_init(const iovec* iov, int count) {
  if (session_ == nullptr) return;
  if (auto r = session_->store_init(init_request_, flatten(iov, count)); !r) {
    log::warn("cannot keep the INIT exchange for a successor ({}): a restart would unmount",
              r.error().message);
  }
}

// The kernel took the first worker's INIT reply and will not read another: libfuse's is
// swallowed, its flags compared with what is in force, and the kernel asked to resend.
ssize_t KernelChannel::replayed_init_reply(int fd, const iovec* iov, int count) {
  const std::string mine = flatten(iov, count);
  const std::string& stored = session_->init_reply();
  // Ours as the first worker sent it: with the KILLPRIV_V2 bit this channel adds.
  std::string sent = mine;
  constexpr size_t kFlagsAt = sizeof(fuse_out_header) + offsetof(fuse_init_out, flags);
  if (sent.size() >= kFlagsAt + 4 && offered_killpriv_v2()) {
    uint32_t flags;
    std::memcpy(&flags, sent.data() + kFlagsAt, sizeof(flags));
    flags |= FUSE_HANDLE_KILLPRIV_V2;
    std::memcpy(sent.data() + kFlagsAt, &flags, sizeof(flags));
  }
  if (sent.size() != stored.size() ||
      sent.compare(sizeof(fuse_out_header), std::string::npos, stored, sizeof(fuse_out_header),
                   std::string::npos) != 0) {
    log::warn("this backupfs would negotiate FUSE differently from the one that mounted; the "
              "kernel keeps the first negotiation until the next mount");
  }
  if (stored.size() >= kFlagsAt + 4) {
    uint32_t flags;
    std::memcpy(&flags, stored.data() + kFlagsAt, sizeof(flags));
    negotiated_v2_.store((flags & FUSE_HANDLE_KILLPRIV_V2) != 0, std::memory_order_release);
  }
  ask_resend(fd);
  return static_cast<ssize_t>(mine.size());
}

}  // namespace bkp::fs
