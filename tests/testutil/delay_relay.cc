// DelayRelay (delay_relay.h): one reader and one writer thread per direction, a queue of
// (due time, bytes) between them.
#include "tests/testutil/delay_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <string>
#include <vector>

namespace bkp::testutil {

struct DelayRelay::Gate {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t limit = ~uint64_t{0};  // bytes a connection passes from hold_after() before it holds
  uint64_t epoch = 0;             // hold_after() calls: a direction sees a new one at its next read
  bool released = false;
  bool holding = false;  // some connection holds now
};

namespace {

using Clock = std::chrono::steady_clock;

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// One direction: bytes read from `from` are written to `to` delay later.
class Direction {
 public:
  // gate: hold after gate's limit (read when the direction starts); null: never hold.
  Direction(int from, int to, std::chrono::milliseconds delay,
            std::shared_ptr<DelayRelay::Gate> gate = nullptr)
      : from_(from), to_(to), delay_(delay), gate_(std::move(gate)),
        reader_([this] { read_loop(); }),
        writer_([this] { write_loop(); }) {}
  ~Direction() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (gate_) {
      std::lock_guard lock(gate_->mu);
      gate_->cv.notify_all();
    }
    reader_.join();
    writer_.join();
  }

 private:
  struct Chunk {
    Clock::time_point due;
    std::string bytes;  // empty: the end of the stream
  };

  // The hold is applied here, where bytes are taken from the target, not where they are passed
  // on: a held connection reads nothing more, so the target's sends back up and block as on a
  // stalled network. Holding only the writer let the reader drain the target into the queue,
  // and a whole transfer could leave the target (and reach the client at release()) while the
  // test believed it stopped N bytes in.
  void read_loop() {
    std::vector<char> buf(64 * 1024);
    while (true) {
      if (budget_ == 0 && !hold()) return;
      const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), budget_));
      ssize_t n = ::read(from_, buf.data(), want);
      if (n < 0 && errno == EINTR) continue;
      rebudget();  // a hold_after() while read() waited counts these bytes too
      size_t off = 0;
      if (n > 0 && static_cast<uint64_t>(n) > budget_) {
        off = static_cast<size_t>(budget_);
        push(std::string(buf.data(), off));
        budget_ = 0;
        if (!hold()) return;
      }
      if (n > 0) budget_ -= std::min<uint64_t>(budget_, static_cast<uint64_t>(n) - off);
      push(n > 0 ? std::string(buf.data() + off, static_cast<size_t>(n) - off) : "");
      if (n <= 0 || stopping()) return;
    }
  }

  void push(std::string bytes) {
    std::lock_guard lock(mu_);
    queue_.push_back(Chunk{Clock::now() + delay_, std::move(bytes)});
    cv_.notify_all();
  }

  void write_loop() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      Clock::time_point due = queue_.front().due;
      if (cv_.wait_until(lock, due, [&] { return stop_; })) return;
      Chunk chunk = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      if (chunk.bytes.empty()) {
        ::shutdown(to_, SHUT_WR);
        return;
      }
      size_t off = 0;
      while (off < chunk.bytes.size()) {
        ssize_t w = ::send(to_, chunk.bytes.data() + off, chunk.bytes.size() - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;  // the far side is gone; the reader ends on its own
        off += static_cast<size_t>(w);
      }
      lock.lock();
    }
  }

  // A new hold_after() since the last read: the budget counts from now.
  void rebudget() {
    if (!gate_) return;
    std::lock_guard lock(gate_->mu);
    if (gate_->epoch == seen_epoch_) return;
    seen_epoch_ = gate_->epoch;
    budget_ = gate_->released ? ~uint64_t{0} : gate_->limit;
  }

  // The budget is spent: waits for release(). False if the relay stops first.
  bool hold() {
    if (!gate_) return false;
    std::unique_lock lock(gate_->mu);
    gate_->holding = true;
    gate_->cv.notify_all();
    gate_->cv.wait(lock, [&] { return gate_->released || stopping(); });
    budget_ = ~uint64_t{0};
    return gate_->released;
  }

  bool stopping() {
    std::lock_guard lock(mu_);
    return stop_;
  }

  const int from_, to_;
  const std::chrono::milliseconds delay_;
  const std::shared_ptr<DelayRelay::Gate> gate_;
  uint64_t budget_ = ~uint64_t{0};  // reader only: bytes it may still take before holding
  uint64_t seen_epoch_ = 0;         // reader only: the Gate::epoch budget_ comes from
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;            // guarded by mu_
  std::deque<Chunk> queue_;      // guarded by mu_
  std::thread reader_, writer_;  // last: they use the members above
};

// No Nagle: a small frame is passed on when due, not held for the peer's delayed ack (which
// would add up to 40 ms to the delay).
void no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// A fixed, small receive buffer on the socket to the target (set before connect, so the window
// is agreed on it): autotuning could grow it to tcp_rmem's maximum (tens of MiB), which a held
// connection would let the target fill behind the hold. Unheld, the reader drains it at once.
constexpr int kTargetRcvBuf = 256 * 1024;

void small_receive_buffer(int fd) {
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kTargetRcvBuf, sizeof kTargetRcvBuf);
}

}  // namespace

// One relayed connection: both sockets and both directions.
struct DelayRelay::Pump {
  Pump(UniqueFd c, UniqueFd s, std::chrono::milliseconds delay, std::shared_ptr<Gate> gate)
      : client(std::move(c)), server(std::move(s)),
        up(std::make_unique<Direction>(client.get(), server.get(), delay)),
        down(std::make_unique<Direction>(server.get(), client.get(), delay, std::move(gate))) {}
  ~Pump() {
    // Unblocks the readers; the sockets close after the threads are joined.
    ::shutdown(client.get(), SHUT_RDWR);
    ::shutdown(server.get(), SHUT_RDWR);
    up.reset();
    down.reset();
  }
  UniqueFd client, server;
  std::unique_ptr<Direction> up, down;
};

Result<std::unique_ptr<DelayRelay>> DelayRelay::start(uint16_t target,
                                                      std::chrono::milliseconds delay) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("relay socket");
  sockaddr_in a = loopback(0);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd.get(), 16) != 0) {
    return fail_errno("relay listen");
  }
  socklen_t len = sizeof a;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return fail_errno("relay getsockname");
  }
  return std::unique_ptr<DelayRelay>(new DelayRelay(std::move(fd), ntohs(a.sin_port), target, delay));
}

DelayRelay::DelayRelay(UniqueFd listener, uint16_t port, uint16_t target,
                       std::chrono::milliseconds delay)
    : listener_(std::move(listener)), port_(port), target_(target), delay_(delay),
      gate_(std::make_shared<Gate>()), acceptor_([this] { accept_loop(); }) {}

void DelayRelay::hold_after(uint64_t bytes) {
  std::lock_guard lock(gate_->mu);
  gate_->limit = bytes;
  gate_->released = false;
  gate_->holding = false;
  ++gate_->epoch;
}

bool DelayRelay::wait_held(std::chrono::milliseconds timeout) {
  std::unique_lock lock(gate_->mu);
  return gate_->cv.wait_for(lock, timeout, [&] { return gate_->holding; });
}

void DelayRelay::release() {
  std::lock_guard lock(gate_->mu);
  gate_->released = true;
  gate_->cv.notify_all();
}

DelayRelay::~DelayRelay() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  ::shutdown(listener_.get(), SHUT_RDWR);  // wakes accept()
  acceptor_.join();
  std::lock_guard lock(mu_);
  pumps_.clear();
}

void DelayRelay::accept_loop() {
  while (true) {
    UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (!client) continue;
    UniqueFd server(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a = loopback(target_);
    if (server) small_receive_buffer(server.get());
    if (!server || ::connect(server.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      continue;  // the client sees its connection closed, as with a refused one
    }
    no_delay(client.get());
    no_delay(server.get());
    pumps_.push_back(
        std::make_unique<Pump>(std::move(client), std::move(server), delay_, gate_));
  }
}

}  // namespace bkp::testutil
