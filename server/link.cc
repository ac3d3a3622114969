// Registered links (see link.h): backupd dials the node, attaches, and runs the node session.
//
// Why backupd connects rather than the node: the operator registers a volume in one place
// (bkptool register on the backup server) instead of configuring every node, and backupd
// decides which volumes it accepts. The attach step exists so that a node answers only for the
// path it serves: a registration that names the wrong port or path fails at once with the
// node's own explanation, before anything is stored.
//
// How: one thread per link loops connect -> Attach -> Hello -> run_node_session. The session is
// exactly the one a node-initiated connection used to get; only who dialled differs. Each
// distinct error of an outage is reported once (at warn; at error for another node answering at
// the address, which needs the operator) so that a node down for a day costs one log line, not
// one per retry, and the last one is kept for `list` and for the failed runs of the scheduler.
// A session that ended because backupd's own disk is full waits until space is freed there
// (common/full_disk.h), or kFullDiskRecheck, instead of having the node resend its batch into
// the full disk on every retry.
#include "server/link.h"

#include <sys/socket.h>

#include <fmt/format.h>

#include <string_view>

#include "common/full_disk.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/net/messenger.h"
#include "common/net/socket.h"
#include "server/node_session.h"
#include "server/peer.h"

namespace bkp::server {
namespace {

using namespace std::chrono_literals;
constexpr auto kMinBackoff = 100ms;
constexpr auto kMaxBackoff = 30000ms;
constexpr auto kFastRetries = 5000ms;  // of an outage, retried every kMinBackoff
constexpr auto kFullDiskRecheck = 60000ms;

// "connect to H:P: Connection refused" -> "connect: Connection refused".
std::string connect_reason(const std::string& message) {
  constexpr std::string_view kPrefix = "connect to ";
  size_t sep = message.find(": ");
  if (message.rfind(kPrefix, 0) == 0 && sep != std::string::npos) {
    return "connect: " + message.substr(sep + 2);
  }
  return message;
}

Result<wire::Hello> await_hello(net::Conn& conn, const Registration& reg,
                                const std::string& address) {
  // decode_hello has checked magic and version; an Error frame arrives as its own errno.
  auto hello = net::expect<wire::Hello>(conn, kAttachTimeoutMs);
  if (!hello) {
    const Error& e = hello.error();
    switch (e.code) {
      case ETIMEDOUT:
        return fail(ETIMEDOUT, fmt::format("node {} did not answer Attach within {} s", address,
                                           kAttachTimeoutMs / 1000));
      case ENOENT:
        return fail(ENOENT, fmt::format("node {} serves another path ({})", address, e.message));
      case EBUSY:
        return fail(EBUSY, fmt::format("node {} is busy (attached to another backupd): {}",
                                       address, e.message));
      case EACCES:
        return fail(EACCES, fmt::format("node {} refused this backupd: {}", address, e.message));
      default:
        return tl::unexpected(e.wrap("node " + address));
    }
  }
  if (hello->role != wire::Role::kNode) {
    return fail(EPROTO, fmt::format("node {} answered with role {}, not a node", address,
                                    static_cast<int>(hello->role)));
  }
  if (hello->path != reg.path) {
    return fail(ENOENT, fmt::format("node {} serves another path: {}, not {}", address,
                                    hello->path, reg.path));
  }
  if (!reg.host.empty() && hello->name != reg.host) {
    return fail(EPERM, fmt::format("node {} calls itself {}, not {}: another node answers at the "
                                   "address of volume {} now, so it is not attached (unregister "
                                   "{} and register the address again to back that node up)",
                                   address, hello->name, reg.host, reg.key(), reg.key()));
  }
  return std::move(*hello);
}

}  // namespace

std::string node_address(const std::string& address, uint16_t port) {
  return net::format_host_port(net::HostPort{address, port});
}

Result<AttachedNode> attach_node(const Registration& reg, const Dialer& dialer,
                                 const std::function<void(int)>& on_socket,
                                 wire::AttachPurpose purpose) {
  std::string address = node_address(reg.address, reg.port);
  auto sock = net::tcp_connect(net::HostPort{reg.address, reg.port}, kConnectTimeoutMs);
  if (!sock) {
    return fail(ECONNREFUSED, fmt::format("node {} unreachable: {}", address,
                                          connect_reason(sock.error().message)));
  }
  int fd = sock->get();
  auto conn = net::Conn::open(std::move(*sock));
  if (!conn) return tl::unexpected(conn.error().wrap("node " + address));
  AttachedNode out;
  out.conn = std::move(*conn);
  // Declared after `out`, so on failure it withdraws the socket before the Conn closes it.
  struct Withdraw {
    const std::function<void(int)>& fn;
    bool armed = true;
    ~Withdraw() {
      if (armed && fn) fn(-1);
    }
  } withdraw{on_socket};
  if (on_socket) on_socket(fd);
  if (dialer.tls) {
    if (auto secured = out.conn->secure(*dialer.tls, net::TlsSide::kClient, kAttachTimeoutMs);
        !secured) {
      return tl::unexpected(secured.error().wrap("node " + address));
    }
    out.node_id = out.conn->peer_id();
    if (!reg.node_id.empty() && out.node_id != reg.node_id) {
      return fail(EACCES, fmt::format("node {} presents identity {}, not {} (pinned for this "
                                      "volume): another machine answers at that address, or the "
                                      "node's identity was replaced; if that is intended, "
                                      "unregister and register again with --node-id {}",
                                      address, out.node_id, reg.node_id, out.node_id));
    }
  }
  wire::Attach attach;
  attach.path = reg.path;
  attach.server_id = dialer.server_id;
  attach.purpose = purpose;
  if (auto sent = net::send_now(*out.conn, attach); !sent) {
    // A node that refuses backupd's identity may have closed before reading the Attach; the
    // Error it sent first says why.
    auto refused = await_hello(*out.conn, reg, address);
    if (!refused && refused.error().code == EACCES) return tl::unexpected(refused.error());
    return tl::unexpected(sent.error().wrap("node " + address + ": send Attach"));
  }
  uint64_t before = out.conn->bytes_received();
  auto hello = await_hello(*out.conn, reg, address);
  if (!hello) {
    if (hello.error().code == EPERM) net::send_error(*out.conn, EPERM, hello.error().message);
    return tl::unexpected(hello.error());
  }
  out.hello = std::move(*hello);
  out.hello_bytes = out.conn->bytes_received() - before;
  withdraw.armed = false;
  return out;
}

Link::Link(Registration reg, std::shared_ptr<Volume> volume, Dialer dialer, Pin pin)
    : reg_(std::move(reg)), volume_(std::move(volume)), dialer_(std::move(dialer)),
      pin_(std::move(pin)), node_id_(reg_.node_id), address_(node_address(reg_.address, reg_.port)),
      backoff_(kMinBackoff, kMaxBackoff, kFastRetries) {}

Link::~Link() { stop(); }

void Link::start(std::optional<AttachedNode> first) {
  if (first) {
    std::lock_guard lock(mu_);
    status_.connected = true;  // attached already; the session starts at once
  }
  thread_ = std::thread([this, first = std::move(first)]() mutable { main(std::move(first)); });
}

void Link::stop() {
  stopping_ = true;
  {
    std::lock_guard lock(mu_);
    if (socket_ >= 0) ::shutdown(socket_, SHUT_RDWR);
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

LinkStatus Link::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

std::string Link::unavailable_reason() const {
  std::lock_guard lock(mu_);
  if (status_.last_error) return *status_.last_error;
  return fmt::format("node {} not connected yet", address_);
}

void Link::set_socket(int fd) {
  std::lock_guard lock(mu_);
  socket_ = fd;
  if (fd >= 0 && stopping_) ::shutdown(fd, SHUT_RDWR);  // stop() ran while we were connecting
}

void Link::main(std::optional<AttachedNode> first) {
  while (!stopping_) {
    if (first) {
      AttachedNode node = std::move(*first);
      first.reset();
      set_socket(node.conn->fd());
      serve(std::move(node));
      continue;
    }
    Registration reg = reg_;
    reg.node_id = node_id_;
    auto node = attach_node(reg, dialer_, [this](int fd) { set_socket(fd); });
    if (!node) {
      set_socket(-1);
      if (stopping_) break;
      note_failure(node.error());
      sleep_backoff();
      continue;
    }
    if (node_id_.empty() && !node->node_id.empty()) {
      node_id_ = node->node_id;
      log::info("volume {}: node {} presents identity {}; pinned from now on", volume_->name(),
                address_, node_id_);
      if (pin_) pin_(node_id_);
    }
    serve(std::move(*node));
  }
  set_socket(-1);
}

void Link::serve(AttachedNode node) {
  uint64_t committed_before = batches_committed();
  int64_t failures = 0;
  {
    std::lock_guard lock(mu_);
    failures = status_.failures;
    status_.connected = true;
    status_.last_error.reset();
    status_.failures = 0;
  }
  if (failures > 0) {
    log::info("link to node {} for volume {} is up again after {} failed attempts", address_,
              volume_->name(), failures);
  }
  Error end = run_node_session(*node.conn, volume_, node.hello, node.hello_bytes, address_,
                               stopping_);
  {
    std::lock_guard lock(mu_);
    status_.connected = false;
    socket_ = -1;
    node.conn.reset();  // closes the socket, under mu_ so stop() never shuts down a reused fd
    if (!stopping_) {
      status_.last_error = fmt::format("node {} disconnected: {}", address_, end.message);
    }
  }
  // A session that committed something ended by chance (a node restarting, a cut): try again
  // soon, 100 ms then doubling, so a restarted node is back within a fraction of a second. One
  // that committed nothing (the node keeps closing) keeps backing off. One that failed on our
  // own full disk waits for space instead (full_disk.h).
  if (batches_committed() != committed_before) backoff_.reset();
  if (stopping_) return;
  if (is_disk_full(end.code)) {
    wait_for_space();
  } else {
    sleep_backoff();
  }
}

void Link::wait_for_space() {
  FullDisk disk(volume_->dir());
  log::warn("volume {}: the disk of {} is full ({} free): resuming once space is freed",
            volume_->name(), volume_->dir(),
            progress::format_bytes(static_cast<double>(disk.free_at_failure())));
  std::unique_lock lock(mu_);
  if (disk.wait(lock, cv_, [this] { return stopping_.load(); }, kFullDiskRecheck)) {
    log::info("volume {}: space freed on {}: resuming", volume_->name(), volume_->dir());
  }
}

uint64_t Link::batches_committed() const {
  std::lock_guard lock(volume_->mu);
  return volume_->stats.batches;
}

void Link::note_failure(const Error& e) {
  int64_t failures = 0;
  bool news = false;  // not the error the previous attempt of this outage ended with
  {
    std::lock_guard lock(mu_);
    news = status_.failures == 0 || status_.last_error != e.message;
    status_.last_error = e.message;
    failures = ++status_.failures;
  }
  if (!news) {
    log::debug("volume {}: {} (attempt {})", volume_->name(), e.message, failures);
  } else if (e.code == EPERM || e.code == EACCES) {
    log::error("volume {}: {} (retrying with backoff up to {} s)", volume_->name(), e.message,
               kMaxBackoff.count() / 1000);
  } else {
    log::warn("volume {}: {} (retrying with backoff up to {} s)", volume_->name(), e.message,
              kMaxBackoff.count() / 1000);
  }
}

void Link::sleep_backoff() {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, backoff_.next(), [this] { return stopping_.load(); });
}

}  // namespace bkp::server
