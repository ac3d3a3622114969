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
  Direction(int from, int to, std::chrono::milliseconds delay)
      : from_(from), to_(to), delay_(delay), reader_([this] { read_loop(); }),
        writer_([this] { write_loop(); }) {}
  ~Direction() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    reader_.join();
    writer_.join();
  }

 private:
  struct Chunk {
    Clock::time_point due;
    std::string bytes;  // empty: the end of the stream
  };

  void read_loop() {
    std::vector<char> buf(64 * 1024);
    while (true) {
      ssize_t n = ::read(from_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard lock(mu_);
      queue_.push_back(Chunk{Clock::now() + delay_, n > 0 ? std::string(buf.data(), n) : ""});
      cv_.notify_all();
      if (n <= 0 || stop_) return;
    }
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

  const int from_, to_;
  const std::chrono::milliseconds delay_;
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

}  // namespace

// One relayed connection: both sockets and both directions.
struct DelayRelay::Pump {
  Pump(UniqueFd c, UniqueFd s, std::chrono::milliseconds delay)
      : client(std::move(c)), server(std::move(s)),
        up(std::make_unique<Direction>(client.get(), server.get(), delay)),
        down(std::make_unique<Direction>(server.get(), client.get(), delay)) {}
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
      acceptor_([this] { accept_loop(); }) {}

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
    if (!server || ::connect(server.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      continue;  // the client sees its connection closed, as with a refused one
    }
    no_delay(client.get());
    no_delay(server.get());
    pumps_.push_back(std::make_unique<Pump>(std::move(client), std::move(server), delay_));
  }
}

}  // namespace bkp::testutil
