// The node session thread: connect, say Hello, ship batches, wait for their acks, reconnect.
//
// At most one batch is in flight. It is taken from the log (or built by a baseline scan), given
// the next number of our own strictly increasing sequence, sent with send_batch and dropped only
// when await_ack confirms backupd applied it durably; after any failure it is kept and sent again
// on the next connection, unless backupd answers the new Hello with committed >= its number
// (already applied) or asks for a baseline (which replaces it and the log). While a batch is in
// flight the log keeps coalescing, so the next batch carries everything since.
//
// Failures are logged once per outage at warn (repeats at debug) and retried with exponential
// backoff from 100 ms to 5 s. The application is never involved: FUSE only records.
#include "fs/node_session.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include "common/changes/scan.h"
#include "common/log.h"
#include "common/wire/messages.h"
#include "fs/file_handle.h"

namespace bkp::fs {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kConnectTimeoutMs = 3000;
constexpr int kHelloTimeoutMs = 10000;
constexpr int kAckTimeoutMs = 30000;
constexpr auto kIdleWait = 50ms;
constexpr auto kMinBackoff = 100ms;
constexpr auto kMaxBackoff = 5000ms;

long long ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

Error frame_error(const wire::Frame& f, const char* context) {
  if (f.type == wire::MsgType::kError) {
    auto e = wire::decode_error(f.payload);
    if (e) return Error{static_cast<int>(e->code), std::string(context) + ": server: " + e->text};
  }
  return Error{EPROTO, std::string(context) + ": unexpected " + wire::type_name(f.type) + " frame"};
}

}  // namespace

NodeSession::NodeSession(SessionOptions options, changes::ChangeLog& log, int root_fd)
    : options_(std::move(options)), log_(log), root_fd_(root_fd) {}

NodeSession::~NodeSession() {
  if (thread_.joinable()) drain(0ms);
}

void NodeSession::start() {
  // Termination signals must reach the FUSE loop, not this thread.
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaddset(&block, sig);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  thread_ = std::thread([this] { main(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

bool NodeSession::drain(std::chrono::milliseconds grace) {
  draining_.store(true);
  log_.wake();
  std::unique_lock lock(mu_);
  cv_.notify_all();
  if (!cv_.wait_for(lock, grace, [this] { return done_; })) {
    stop_.store(true);
    if (conn_fd_ >= 0) ::shutdown(conn_fd_, SHUT_RDWR);
    cv_.notify_all();
  }
  lock.unlock();
  log_.wake();
  if (thread_.joinable()) thread_.join();
  return drained_;
}

void NodeSession::set_conn_fd(int fd) {
  std::lock_guard lock(mu_);
  conn_fd_ = fd;
}

void NodeSession::sleep_backoff() {
  std::unique_lock lock(mu_);
  // Drain wakes us early only when there is nothing left to ship.
  cv_.wait_for(lock, backoff_,
               [this] { return stopping() || (draining_.load() && !inflight_ && log_empty()); });
  backoff_ = std::min(backoff_ * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kMaxBackoff));
}

bool NodeSession::log_empty() const {
  auto s = log_.stats();
  return s.ops == 0 && s.files == 0;
}

Result<UniqueFd> NodeSession::connect_socket() {
  return net::tcp_connect(options_.server, kConnectTimeoutMs);
}

void NodeSession::main() {
  const std::string where = options_.server.host + ":" + std::to_string(options_.server.port);
  while (!stopping()) {
    if (draining_.load() && !inflight_ && log_empty()) {
      drained_ = true;
      break;
    }
    Result<void> result;
    if (auto sock = connect_socket(); !sock) {
      result = tl::unexpected(sock.error());
    } else if (auto conn = net::Conn::open(std::move(*sock)); !conn) {
      result = tl::unexpected(conn.error());
    } else {
      set_conn_fd((*conn)->fd());
      result = run_session(**conn);
      set_conn_fd(-1);
    }
    if (result) {
      drained_ = true;
      break;
    }
    if (stopping()) break;
    if (!outage_logged_) {
      log::warn("server {}: {}; retrying (keeping {} ops and {} files recorded)", where,
                result.error().message, log_.stats().ops, log_.stats().files);
      outage_logged_ = true;
    } else {
      log::debug("server {}: {}", where, result.error().message);
    }
    sleep_backoff();
  }
  std::lock_guard lock(mu_);
  done_ = true;
  cv_.notify_all();
}

Result<void> NodeSession::run_session(net::Conn& conn) {
  wire::Hello hello;
  hello.role = wire::Role::kNode;
  hello.name = options_.host;
  hello.path = options_.path;
  hello.instance = options_.instance;
  std::vector<uint8_t> payload;
  wire::encode(hello, payload);
  BKP_TRY_VOID(conn.send(wire::MsgType::kHello, 0, payload));
  BKP_TRY_VOID(conn.flush());
  wire::Frame frame = BKP_TRY(conn.recv(kHelloTimeoutMs));
  if (frame.type != wire::MsgType::kHelloOk) return tl::unexpected(frame_error(frame, "hello"));
  wire::HelloOk ok = BKP_TRY(wire::decode_hello_ok(frame.payload));
  log::info("connected to {}:{} as {}:{} (committed {}{})", options_.server.host,
            options_.server.port, options_.host, options_.path, ok.committed,
            ok.need_baseline ? ", baseline requested" : "");
  outage_logged_ = false;
  backoff_ = std::chrono::duration_cast<std::chrono::milliseconds>(kMinBackoff);

  if (ok.need_baseline) {
    inflight_.reset();
    inflight_ = BKP_TRY(take_baseline());
  } else if (inflight_ && ok.committed >= inflight_->number) {
    log::debug("batch {} was applied before the reconnect", inflight_->number);
    inflight_.reset();
  }
  while (!stopping()) {
    if (!inflight_) {
      changes::Batch batch = log_.take();
      if (batch.empty()) {
        if (draining_.load()) return {};
        if (!log_.wait(kIdleWait)) BKP_TRY_VOID(check_idle(conn));
        continue;
      }
      batch.number = next_number_++;
      inflight_ = std::move(batch);
    }
    BKP_TRY_VOID(ship(conn, *inflight_));
    inflight_.reset();
  }
  return fail(ECANCELED, "stopped");
}

Result<void> NodeSession::ship(net::Conn& conn, changes::Batch& batch) {
  auto t0 = Clock::now();
  uint64_t sent_before = conn.bytes_sent();
  HandleSource source(root_fd_);
  BKP_TRY_VOID(changes::send_batch(conn, batch, source, counters_));
  BKP_TRY_VOID(changes::await_ack(conn, batch.number, kAckTimeoutMs));
  log::debug("batch {} acknowledged: {} ops, {} files, {} wire bytes, {} ms", batch.number,
             batch.ops.size(), batch.files.size(), conn.bytes_sent() - sent_before, ms_since(t0));
  return {};
}

// Between batches: notice a peer that closed or complained, without waiting.
Result<void> NodeSession::check_idle(net::Conn& conn) {
  if (!BKP_TRY(conn.readable())) return {};
  wire::Frame frame = BKP_TRY(conn.recv(1000));
  if (frame.type == wire::MsgType::kPing) return {};
  return tl::unexpected(frame_error(frame, "idle"));
}

Result<changes::Batch> NodeSession::take_baseline() {
  auto t0 = Clock::now();
  UniqueFd dir(::openat(root_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return fail_errno("baseline: open root");
  Result<changes::Batch> batch;
  {
    std::unique_lock ns(log_.namespace_lock());
    log_.clear();
    batch = changes::scan_tree(dir.get(), make_identify());
  }
  if (!batch) return tl::unexpected(batch.error().wrap("baseline"));
  batch->number = next_number_++;
  log::info("baseline: {} ops, {} files, {} bytes of data, scanned in {} ms", batch->ops.size(),
            batch->files.size(), batch->dirty_bytes(), ms_since(t0));
  return batch;
}

}  // namespace bkp::fs
