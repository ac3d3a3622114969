// Conn: one framed connection. All socket I/O and the shipper's file reads go through this
// connection's own io_uring, one operation at a time: a read, a send or a recv is submitted and
// waited for (sends are batched up to 1 MiB, so a chunk read overlaps nothing yet; keeping reads
// and sends in flight together is future work, measured in bench/RESULTS.md).
//
// Without TLS bytes are copied once in user space at most: file data is read straight into the
// send buffer behind its frame header (begin_frame/end_frame), or sent from the buffer it
// already sits in (send_parts: a chunk read past the page cache, a chunk kept as a node sent
// it), and received bytes land straight in the frame reader's buffer. With TLS, encryption
// reads those buffers into OpenSSL's output BIO (sent from there) and decryption writes
// straight into the frame reader's buffer; the received ciphertext is copied once into
// OpenSSL's input BIO.
//
// secure() turns the connection into a TLS 1.3 session (common/net/tls.h) before the first
// frame: from then on flush() encrypts what is queued and recv() decrypts what arrives, the
// sockets I/O staying on the ring.
//
// Not thread-safe: one thread owns a Conn. Sends are buffered and flushed when the buffer
// passes 1 MiB, on flush(), and before any recv().
//
// A live peer that stops taking part cannot hold a thread forever: a send that makes no progress
// for stall_ms() (the peer reads nothing) fails, and so does a receive that waits that long for
// the rest of a frame it has begun, whatever timeout the caller gave, or that has waited longer
// than stall_ms() plus the frame's size at kMinFrameRate for all of it (a peer trickling a byte
// now and then; only time spent waiting in recv counts, not the caller's between calls). All
// fail with ETIMEDOUT, and the connection is then unusable (part of a frame may have gone). A
// peer that is idle between frames is the caller's business (recv's timeout).
#pragma once

#include <liburing.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/net/tls.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "common/wire/frame.h"

namespace bkp::net {

// How long a peer may take nothing we send, or stop in the middle of a frame it sends: 60 s.
// Test seam: BKP_TEST_STALL_MS=N makes it N ms for the whole process.
int stall_ms();
// The slowest a frame may arrive once begun, beyond stall_ms(): 16 KiB/s (a 4 MiB frame may take
// 60 s + 256 s; any link a backup can use is far faster).
constexpr uint64_t kMinFrameRate = 16 * 1024;

class Conn {
 public:
  // Takes the connected socket. Fails if an io_uring cannot be set up.
  static Result<std::unique_ptr<Conn>> open(UniqueFd socket);
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // TLS handshake as side, bounded by timeout_ms in total. Afterwards peer_id() is the peer's
  // identity; the caller decides whether it is one it accepts. A server that receives a
  // plaintext frame instead of a ClientHello answers it with a plaintext Error frame saying
  // that TLS is required, and fails with EPROTO.
  Result<void> secure(const TlsConfig& config, TlsSide side, int timeout_ms);
  bool secured() const { return tls_ != nullptr; }
  const std::string& peer_id() const { return peer_id_; }

  // Queues one frame with the next sequence number; flushes if the buffer is large.
  Result<void> send(wire::MsgType type, uint8_t flags, std::span<const uint8_t> payload);
  // The same, with the payload written in place (no copy): begin_frame() returns room for up to
  // max_payload bytes in the send buffer, valid until end_frame() queues the frame with the
  // first payload_size of them. Only pread() may be called in between.
  Result<std::span<uint8_t>> begin_frame(size_t max_payload);
  Result<void> end_frame(wire::MsgType type, uint8_t flags, size_t payload_size);
  // A frame whose payload is head followed by body. A body of 64 KiB or more is sent (or
  // encrypted) from where it is rather than copied into the send buffer: what is queued goes
  // first, then the frame. For bulk data that already sits in a buffer of its own (a chunk read
  // past the page cache, a chunk kept as a node sent it).
  Result<void> send_parts(wire::MsgType type, uint8_t flags, std::span<const uint8_t> head,
                          std::span<const uint8_t> body);
  Result<void> flush();
  // Waits up to timeout_ms (-1: forever) for one frame, and at most stall_ms() for the rest of
  // one that has begun. ETIMEDOUT on timeout, ECONNRESET when the peer closed, EPROTO on a
  // malformed frame. A received kError frame is returned as a frame, not as an error: the
  // caller decides.
  Result<wire::Frame> recv(int timeout_ms);
  // The same without copying the payload out of the receive buffer: the view is valid until
  // the next recv or recv_view (sends do not touch it). The receive paths apply data from there.
  Result<wire::FrameView> recv_view(int timeout_ms);
  // True if a frame (or part of one) is already readable without blocking.
  Result<bool> readable();

  // Reads up to buf.size() bytes of fd at offset through the ring. Returns bytes read (0 at
  // EOF). Short reads are returned as they are.
  Result<size_t> pread(int fd, uint64_t offset, std::span<uint8_t> buf);

  // Fault seam for tests: once `frames` frames were queued on this connection, the next send
  // delivers what is queued, shuts the socket down and fails with ECONNRESET, as a cut link
  // would after frame `frames`.
  void cut_after(uint64_t frames) { cut_after_ = frames; }
  // For tests: this connection's stall limit instead of stall_ms().
  void set_stall_ms(int ms) { stall_ms_ = ms; }

  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  int fd() const { return sock_.get(); }

 private:
  Conn(UniqueFd sock) : sock_(std::move(sock)) {}
  Result<int> submit_and_wait(io_uring_sqe* sqe_setup_done, int timeout_ms);
  Result<void> send_all(std::span<const uint8_t> bytes);
  // Closes the frame begun in the send buffer: its payload is head_size bytes there, then body.
  void seal(wire::MsgType type, uint8_t flags, size_t head_size, std::span<const uint8_t> body);
  // Sends bytes, encrypted when the connection is secured.
  Result<void> write_out(std::span<const uint8_t> bytes);
  // One recv from the socket into buf: bytes received, or ETIMEDOUT / ECONNRESET / the error.
  Result<size_t> recv_some(std::span<uint8_t> buf, int timeout_ms);
  Result<void> send_tls_output();
  Result<void> refuse_plaintext();

  UniqueFd sock_;
  io_uring ring_{};
  bool ring_ok_ = false;
  std::vector<uint8_t> out_;  // [0, out_len_) is queued; beyond is room for the next frame
  size_t out_len_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t cut_after_ = UINT64_MAX;
  int stall_ms_ = stall_ms();
  wire::FrameReader reader_;
  // Time spent in recv waiting for the rest of the frame being received (0 between frames).
  std::chrono::milliseconds frame_waited_{0};
  size_t frame_start_ = 0;  // of the frame begun in out_ (begin_frame)
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
  std::unique_ptr<TlsSession> tls_;
  std::vector<uint8_t> cipher_in_;  // ciphertext received, before it is fed to tls_
  std::string peer_id_;
};

}  // namespace bkp::net
