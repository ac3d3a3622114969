// Framed connection over io_uring (see conn.h).
//
// Each blocking step is one submission: a send of the whole output buffer (resubmitted for
// the remainder after a short send), a recv of up to 256 KiB straight into the frame reader's
// buffer, or a file read. A recv with
// a deadline is linked to an IORING_OP_LINK_TIMEOUT, so the kernel cancels it for us and we
// never leave a request in flight that could complete into a buffer we no longer own.
#include "common/net/conn.h"

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "common/wire/messages.h"

namespace bkp::net {
namespace {
constexpr size_t kFlushAt = 1u << 20;
constexpr size_t kRecvBuf = 256u << 10;
constexpr size_t kTlsSlice = 256u << 10;
// send_parts sends a body this large from where it is; a smaller one costs less copied than
// sent on its own.
constexpr size_t kSendInPlaceFrom = 64u << 10;
constexpr uint64_t kOpTag = 1;
constexpr uint64_t kTimeoutTag = 2;

std::string seconds(int ms) { return fmt::format("{:g} s", ms / 1000.0); }
}  // namespace

int stall_ms() {
  static const int ms = [] {
    const char* env = std::getenv("BKP_TEST_STALL_MS");
    int v = env != nullptr ? std::atoi(env) : 0;
    return v > 0 ? v : 60000;
  }();
  return ms;
}

Result<std::unique_ptr<Conn>> Conn::open(UniqueFd socket) {
  std::unique_ptr<Conn> c(new Conn(std::move(socket)));
  int rc = io_uring_queue_init(8, &c->ring_, 0);
  if (rc < 0) return fail_neg(rc, "io_uring setup");
  c->ring_ok_ = true;
  return c;
}

Conn::~Conn() {
  if (ring_ok_) io_uring_queue_exit(&ring_);
}

// Submits the prepared SQE (tagged kOpTag), optionally followed by a linked timeout, and
// returns the operation's result (negative errno; -ECANCELED means the timeout fired).
Result<int> Conn::submit_and_wait(io_uring_sqe* sqe, int timeout_ms) {
  io_uring_sqe_set_data64(sqe, kOpTag);
  __kernel_timespec ts{};
  int expected = 1;
  if (timeout_ms >= 0) {
    sqe->flags |= IOSQE_IO_LINK;
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
    io_uring_sqe* t = io_uring_get_sqe(&ring_);
    io_uring_prep_link_timeout(t, &ts, 0);
    io_uring_sqe_set_data64(t, kTimeoutTag);
    expected = 2;
  }
  int rc = io_uring_submit(&ring_);
  if (rc < 0) return fail_neg(rc, "io_uring submit");
  int result = 0;
  for (int seen = 0; seen < expected;) {
    io_uring_cqe* cqe = nullptr;
    rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) return fail_neg(rc, "io_uring wait");
    if (io_uring_cqe_get_data64(cqe) == kOpTag) result = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    ++seen;
  }
  return result;
}

Result<void> Conn::send(wire::MsgType type, uint8_t flags, std::span<const uint8_t> payload) {
  return send_parts(type, flags, payload, {});
}

Result<std::span<uint8_t>> Conn::begin_frame(size_t max_payload) {
  if (next_seq_ > cut_after_) {
    (void)flush();
    ::shutdown(sock_.get(), SHUT_RDWR);
    return fail(ECONNRESET, "connection cut (test seam)");
  }
  frame_start_ = out_len_;
  size_t need = frame_start_ + wire::kHeaderSize + max_payload;
  if (out_.size() < need) out_.resize(need);  // grows only: no zeroing per frame
  return std::span<uint8_t>(out_.data() + frame_start_ + wire::kHeaderSize, max_payload);
}

Result<void> Conn::end_frame(wire::MsgType type, uint8_t flags, size_t payload_size) {
  seal(type, flags, payload_size, {});
  if (out_len_ >= kFlushAt) return flush();
  return {};
}

void Conn::seal(wire::MsgType type, uint8_t flags, size_t head_size, std::span<const uint8_t> body) {
  out_len_ = frame_start_ + wire::kHeaderSize + head_size;
  wire::seal_frame(type, flags, next_seq_++, out_.data() + frame_start_, head_size, body);
  bytes_sent_ += wire::kHeaderSize + head_size + body.size();
}

Result<void> Conn::send_parts(wire::MsgType type, uint8_t flags, std::span<const uint8_t> head,
                              std::span<const uint8_t> body) {
  if (body.size() < kSendInPlaceFrom) {  // copied and batched with the frames around it
    std::span<uint8_t> room = BKP_TRY(begin_frame(head.size() + body.size()));
    if (!head.empty()) std::memcpy(room.data(), head.data(), head.size());
    if (!body.empty()) std::memcpy(room.data() + head.size(), body.data(), body.size());
    return end_frame(type, flags, head.size() + body.size());
  }
  std::span<uint8_t> room = BKP_TRY(begin_frame(head.size()));
  if (!head.empty()) std::memcpy(room.data(), head.data(), head.size());
  seal(type, flags, head.size(), body);
  BKP_TRY_VOID(flush());
  return write_out(body);
}

Result<void> Conn::send_all(std::span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    io_uring_prep_send(sqe, sock_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    int res = BKP_TRY(submit_and_wait(sqe, stall_ms_));
    if (res == -ECANCELED || res == -ETIME) {
      return fail(ETIMEDOUT, "send: the peer took nothing for " + seconds(stall_ms_));
    }
    if (res == -EINTR || res == -EAGAIN) continue;
    if (res < 0) return fail_neg(res, "send");
    done += static_cast<size_t>(res);
  }
  return {};
}

Result<void> Conn::send_tls_output() {
  std::span<const uint8_t> out = tls_->output();
  if (out.empty()) return {};
  BKP_TRY_VOID(send_all(out));
  tls_->consume(out.size());
  return {};
}

Result<void> Conn::flush() {
  BKP_TRY_VOID(write_out({out_.data(), out_len_}));
  out_len_ = 0;
  return {};
}

Result<void> Conn::write_out(std::span<const uint8_t> bytes) {
  if (!tls_) return send_all(bytes);
  // Encrypted in slices, so the ciphertext waiting in memory stays small.
  for (size_t done = 0; done < bytes.size();) {
    size_t n = std::min(kTlsSlice, bytes.size() - done);
    BKP_TRY_VOID(tls_->encrypt(bytes.subspan(done, n)));
    BKP_TRY_VOID(send_tls_output());
    done += n;
  }
  return send_tls_output();  // e.g. a key update answered while reading
}

Result<size_t> Conn::recv_some(std::span<uint8_t> buf, int timeout_ms) {
  while (true) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    io_uring_prep_recv(sqe, sock_.get(), buf.data(), buf.size(), 0);
    int res = BKP_TRY(submit_and_wait(sqe, timeout_ms));
    if (res == -ECANCELED || res == -ETIME) return fail(ETIMEDOUT, "peer sent nothing in time");
    if (res == -EINTR || res == -EAGAIN) continue;
    if (res < 0) return fail_neg(res, "recv");
    if (res == 0) return fail(ECONNRESET, "peer closed the connection");
    return static_cast<size_t>(res);
  }
}

Result<wire::Frame> Conn::recv(int timeout_ms) {
  return wire::Frame::copy_of(BKP_TRY(recv_view(timeout_ms)));
}

Result<wire::FrameView> Conn::recv_view(int timeout_ms) {
  using std::chrono::milliseconds;
  BKP_TRY_VOID(flush());
  while (true) {
    auto frame = BKP_TRY(reader_.next());
    if (frame) {
      frame_waited_ = milliseconds(0);
      return std::move(*frame);
    }
    // Part of a frame (or of a TLS record) is here: the next bytes are due within stall_ms(),
    // and the whole frame within stall_ms() plus its size at kMinFrameRate, counting only the
    // time spent waiting here (not the caller's time between calls).
    const bool begun = reader_.buffered() > 0 || (tls_ && tls_->has_buffered());
    int wait = timeout_ms;
    enum class Bound { kCaller, kStall, kFrame } bound = Bound::kCaller;
    auto too_slow = [&] {
      return fail(ETIMEDOUT, fmt::format("the peer sent a frame of {} bytes slower than {} KiB/s",
                                         reader_.pending_size(), kMinFrameRate / 1024));
    };
    if (begun) {
      const milliseconds allowed = milliseconds(stall_ms_) +
                                   milliseconds(reader_.pending_size() * 1000 / kMinFrameRate);
      const int left = static_cast<int>((allowed - frame_waited_).count());
      if (left <= 0) return too_slow();
      if (timeout_ms < 0 || timeout_ms > std::min(stall_ms_, left)) {
        bound = left < stall_ms_ ? Bound::kFrame : Bound::kStall;
        wait = std::min(stall_ms_, left);
      }
    } else {
      frame_waited_ = milliseconds(0);
    }
    auto receive = [&](std::span<uint8_t> into) {
      const auto t0 = std::chrono::steady_clock::now();
      auto got = recv_some(into, wait);
      if (begun) {
        frame_waited_ +=
            std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0);
      }
      return got;
    };
    auto stalled = [&](const Error& e) -> Result<wire::FrameView> {
      if (e.code != ETIMEDOUT || bound == Bound::kCaller) return tl::unexpected(e);
      if (bound == Bound::kFrame) return too_slow();
      return fail(ETIMEDOUT, "the peer stopped in the middle of a frame for " + seconds(stall_ms_));
    };
    std::span<uint8_t> room = reader_.space(kRecvBuf);
    if (!tls_) {
      auto got = receive(room);
      reader_.filled(got ? *got : 0);
      if (!got) return stalled(got.error());
      bytes_received_ += *got;
      continue;
    }
    auto plain = tls_->decrypt(room);
    reader_.filled(plain ? *plain : 0);
    if (!plain) return tl::unexpected(plain.error());
    BKP_TRY_VOID(send_tls_output());
    if (*plain > 0) {
      bytes_received_ += *plain;
      continue;
    }
    cipher_in_.resize(kRecvBuf);
    auto got = receive(cipher_in_);
    if (!got) return stalled(got.error());
    BKP_TRY_VOID(tls_->feed({cipher_in_.data(), *got}));
  }
}

Result<void> Conn::refuse_plaintext() {
  static constexpr char kText[] =
      "this peer requires TLS (protocol version 4 or later); plaintext connections are refused";
  std::vector<uint8_t> payload;
  wire::encode(wire::ErrorMsg{EPROTO, kText}, payload);
  out_len_ = 0;
  BKP_TRY_VOID(send(wire::MsgType::kError, 0, payload));
  BKP_TRY_VOID(send_all({out_.data(), out_len_}));
  out_len_ = 0;
  return fail(EPROTO, "peer spoke plaintext, not TLS: refused");
}

Result<void> Conn::secure(const TlsConfig& config, TlsSide side, int timeout_ms) {
  tls_ = BKP_TRY(TlsSession::make(config, side));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool first = true;
  while (true) {
    auto done = tls_->handshake();
    // On failure too: OpenSSL's alert tells the peer why (e.g. that it sent no certificate).
    auto sent = send_tls_output();
    if (!done) return tl::unexpected(done.error());
    if (!sent) return tl::unexpected(sent.error());
    if (*done) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return fail(ETIMEDOUT, "TLS handshake did not finish in time");
    cipher_in_.resize(kRecvBuf);
    auto got = recv_some(cipher_in_, static_cast<int>(left.count()));
    if (!got) return tl::unexpected(got.error().wrap("TLS handshake"));
    // A TLS record starts with its content type (22: handshake, 21: alert); a frame starts
    // with its payload length, little-endian, so a plaintext Hello or Error never does.
    if (first && cipher_in_[0] != 22 && cipher_in_[0] != 21) {
      if (side == TlsSide::kServer) {
        tls_.reset();
        return refuse_plaintext();
      }
      return fail(EPROTO, "the peer answered in plaintext, not TLS: an older backupfs version "
                          "(before protocol 4), or not backupfs at all");
    }
    first = false;
    BKP_TRY_VOID(tls_->feed({cipher_in_.data(), *got}));
  }
  peer_id_ = tls_->peer_id();
  return {};
}

Result<bool> Conn::readable() {
  if (reader_.buffered() > 0 || (tls_ && tls_->has_buffered())) return true;
  pollfd p{sock_.get(), POLLIN, 0};
  int rc = poll(&p, 1, 0);
  if (rc < 0) return fail_errno("poll");
  return rc > 0;
}

Result<size_t> Conn::pread(int fd, uint64_t offset, std::span<uint8_t> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    io_uring_prep_read(sqe, fd, buf.data() + done, static_cast<unsigned>(buf.size() - done),
                       offset + done);
    int res = BKP_TRY(submit_and_wait(sqe, -1));
    if (res == -EINTR || res == -EAGAIN) continue;
    if (res < 0) return fail_neg(res, "read");
    if (res == 0) break;  // end of file: the file shrank since the extent was recorded
    done += static_cast<size_t>(res);
  }
  return done;
}

}  // namespace bkp::net
