// DirectReader (see direct_reader.h).
#include "common/changes/direct_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace bkp::changes {

void DirectReader::Free::operator()(uint8_t* p) const { std::free(p); }

DirectReader::DirectReader(size_t capacity) : capacity_(capacity) {}

DirectReader::~DirectReader() {
  drop_ahead();  // the kernel may still be writing into a buffer
  if (ring_ok_) io_uring_queue_exit(&ring_);
}

bool DirectReader::use(int fd, bool direct) {
  drop_ahead();
  fd_ = fd;
  direct_ = false;
  align_ = 1;
  struct statx stx{};
  if (!direct || statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0 ||
      !(stx.stx_mask & STATX_DIOALIGN) || stx.stx_dio_offset_align == 0 ||
      stx.stx_dio_offset_align > kMaxAlign || stx.stx_dio_mem_align > kMaxAlign) {
    return false;
  }
  if (!ring_ok_) {
    if (io_uring_queue_init(2, &ring_, 0) < 0) return false;
    ring_ok_ = true;
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) return false;
  direct_ = true;
  align_ = std::max<size_t>(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
  return true;
}

DirectReader::Span DirectReader::aligned(uint64_t offset, size_t want) const {
  Span s{offset, std::min(want, capacity_), offset / align_ * align_, 0};
  uint64_t end = (offset + s.want + align_ - 1) / align_ * align_;
  s.len = static_cast<size_t>(end - s.start);
  return s;
}

uint8_t* DirectReader::buffer(int b) {
  if (!bufs_[b]) {
    void* p = std::aligned_alloc(kMaxAlign, capacity_ + 2 * kMaxAlign);
    if (p == nullptr) throw std::bad_alloc();
    bufs_[b].reset(static_cast<uint8_t*>(p));
  }
  return bufs_[b].get();
}

bool DirectReader::submit_at(int b, uint64_t start, size_t at, size_t len) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  io_uring_prep_read(sqe, fd_, buffer(b) + at, static_cast<unsigned>(len), start);
  if (io_uring_submit(&ring_) == 1) return true;
  // Nothing may stay queued, to be submitted later into a buffer in use.
  io_uring_queue_exit(&ring_);
  ring_ok_ = false;
  return false;
}

Result<int> DirectReader::wait() {
  io_uring_cqe* cqe = nullptr;
  int rc;
  while ((rc = io_uring_wait_cqe(&ring_, &cqe)) == -EINTR) {
  }
  if (rc < 0) return fail_neg(rc, "io_uring wait");
  int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  return res;
}

Result<std::span<const uint8_t>> DirectReader::finish(int b, const Span& s, size_t done) {
  uint8_t* buf = buffer(b);
  // Every read but the last ends aligned, so the next one starts aligned; one that ends
  // unaligned (or reads nothing) ended at end of file (a buffered file's alignment is 1).
  // Direct reads go through the ring when there is one: the
  // file's lock is then held only while the read is submitted, not until the disk answers, so
  // the application's writes to the file do not wait for it.
  while (done < s.len && done % align_ == 0) {
    ssize_t n;
    if (direct_ && ring_ok_ && submit_at(b, s.start + done, done, s.len - done)) {
      n = BKP_TRY(wait());
      if (n < 0) return fail_neg(static_cast<int>(n), "read");
    } else {
      n = ::pread(fd_, buf + done, s.len - done, static_cast<off_t>(s.start + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno("read");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  size_t skip = static_cast<size_t>(s.offset - s.start);
  size_t got = done > skip ? std::min(done - skip, s.want) : 0;
  return std::span<const uint8_t>(buf + skip, got);
}

void DirectReader::drop_ahead() {
  if (!in_flight_) return;
  in_flight_ = false;
  (void)wait();
}

Result<std::span<const uint8_t>> DirectReader::read(uint64_t offset, size_t want, uint64_t limit) {
  Span s = aligned(offset, want);
  Result<std::span<const uint8_t>> data;
  if (in_flight_ && ahead_.offset == s.offset && ahead_.want == s.want) {
    in_flight_ = false;
    int res = BKP_TRY(wait());
    if (res < 0) return fail_neg(res, "direct read");
    data = finish(spare_, s, static_cast<size_t>(res));
    spare_ ^= 1;
  } else {
    drop_ahead();
    data = finish(spare_ ^ 1, s, 0);
  }
  if (!data) return data;
  uint64_t next = offset + data->size();
  if (direct_ && ring_ok_ && data->size() == s.want && next < limit) {
    ahead_ = aligned(next, static_cast<size_t>(std::min<uint64_t>(limit - next, capacity_)));
    in_flight_ = submit_at(spare_, ahead_.start, 0, ahead_.len);
  }
  return data;
}

}  // namespace bkp::changes
