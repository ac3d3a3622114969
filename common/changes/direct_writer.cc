// DirectWriter (see direct_writer.h): a small io_uring of O_DIRECT writes, each from its own
// aligned copy of the bytes.
#include "common/changes/direct_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace bkp::changes {

void DirectWriter::FreeAligned::operator()(uint8_t* p) const { std::free(p); }

std::unique_ptr<DirectWriter> DirectWriter::make() {
  std::unique_ptr<DirectWriter> w(new DirectWriter());
  if (io_uring_queue_init(kDepth, &w->ring_, 0) < 0) return nullptr;
  return w;
}

DirectWriter::~DirectWriter() {
  wait();
  io_uring_queue_exit(&ring_);
}

Result<void> DirectWriter::submit(int direct_fd, std::span<const uint8_t> data, uint64_t offset) {
  std::lock_guard lock(mu_);
  Slot* slot = nullptr;
  while (slot == nullptr) {
    for (auto& s : slots_) {
      if (!s.busy) {
        slot = &s;
        break;
      }
    }
    if (slot == nullptr) reap_one_locked();
  }
  if (slot->capacity < data.size()) {
    void* p = nullptr;
    if (posix_memalign(&p, kAlign, data.size()) != 0) return fail(ENOMEM, "direct write buffer");
    slot->buf.reset(static_cast<uint8_t*>(p));
    slot->capacity = data.size();
  }
  slot->fd = UniqueFd(fcntl(direct_fd, F_DUPFD_CLOEXEC, 0));
  if (!slot->fd) return fail_errno("direct write");
  std::memcpy(slot->buf.get(), data.data(), data.size());
  slot->size = data.size();
  slot->offset = offset;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  io_uring_prep_write(sqe, slot->fd.get(), slot->buf.get(), static_cast<unsigned>(slot->size),
                      offset);
  io_uring_sqe_set_data(sqe, slot);
  int rc = io_uring_submit(&ring_);
  if (rc < 0) {
    slot->fd.reset();
    return fail_neg(rc, "direct write: io_uring submit");
  }
  slot->busy = true;
  ++in_flight_;
  return {};
}

bool DirectWriter::reap_one_locked() {
  if (in_flight_ == 0) return false;
  io_uring_cqe* cqe = nullptr;
  int rc;
  do {
    rc = io_uring_wait_cqe(&ring_, &cqe);
  } while (rc == -EINTR);
  if (rc < 0) {
    // The ring itself failed: nothing more will complete. Drop what is in flight as failed.
    for (auto& s : slots_) {
      if (s.busy) finish_locked(s, rc);
    }
    return false;
  }
  auto* slot = static_cast<Slot*>(io_uring_cqe_get_data(cqe));
  int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  finish_locked(*slot, res);
  return true;
}

void DirectWriter::finish_locked(Slot& slot, int res) {
  size_t done = res > 0 ? static_cast<size_t>(res) : 0;
  // A short write (or one the ring asks to retry) goes on from where it stopped, still direct
  // while it stays aligned; past that, or on an error, the write failed.
  while (done < slot.size && done % kAlign == 0 && (res >= 0 || res == -EINTR || res == -EAGAIN)) {
    ssize_t n = pwrite(slot.fd.get(), slot.buf.get() + done, slot.size - done,
                       static_cast<off_t>(slot.offset + done));
    if (n < 0 && errno == EINTR) continue;
    res = n < 0 ? -errno : n == 0 ? -EIO : static_cast<int>(n);
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (done < slot.size && !failure_) {
    int e = res < 0 ? -res : EIO;
    failure_ = Error{e, "direct write at offset " + std::to_string(slot.offset) + ": " +
                            std::strerror(e)};
  }
  slot.fd.reset();
  slot.busy = false;
  --in_flight_;
}

void DirectWriter::wait() {
  std::lock_guard lock(mu_);
  while (reap_one_locked()) {
  }
}

Result<void> DirectWriter::settle() {
  wait();
  std::lock_guard lock(mu_);
  if (failure_) return tl::unexpected(*std::exchange(failure_, std::nullopt));
  return {};
}

}  // namespace bkp::changes
