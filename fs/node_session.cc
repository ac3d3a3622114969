// The node session thread: wait for a backupd to attach, say Hello, ship batches, wait for their
// acks, report the lag, and go back to waiting when the connection breaks.
//
// stream::Sender does the stream's bookkeeping: at most one bounded batch in flight, dropped
// only when backupd acknowledges it; after any failure it is kept and, on the next attach,
// resumed exactly where backupd's HelloOk says the mirror stands (or dropped if backupd
// committed it, or replaced by a baseline scan of the whole tree if backupd asks for one — after
// a restart of either side — reconciled with the mirror's manifest so only what differs moves). While
// a batch is in flight the log keeps coalescing, so the next batch carries everything since; a
// log of data only is also given up to kLinger to gather more before it is taken.
//
// NodeStatus (the lag: what is recorded and not yet acknowledged, and since when) goes out before
// each batch, hence before its Commit, about once a second while idle, and about once a second
// during a long batch, naming the file being shipped (the data source sends it as it opens the
// next file; the path comes from /proc/self/fd, one readlink, only when a status is due).
//
// The application is never involved: FUSE only records, and whether a backupd is attached or not
// changes nothing for it.
#include "fs/node_session.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <mutex>
#include <shared_mutex>

#include "common/changes/scan.h"
#include "common/log.h"
#include "common/net/messenger.h"
#include "common/stream/reconcile.h"
#include "common/path.h"
#include "common/wire/messages.h"
#include "fs/file_handle.h"

namespace bkp::fs {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kHelloTimeoutMs = 10000;
constexpr int kAckTimeoutMs = 30000;
constexpr auto kIdleWait = 50ms;
// Data-only changes wait up to 20 ms for more (stream::Linger): measured with fio's fsync'd 4 KiB
// writes, one batch per write cost backupd 0.30 s of CPU per 2,048 writes and the application
// 10-20% of its IOPS on a 2-core machine; 20 ms batches cost 0.04 s. 8 MiB goes at once.
constexpr stream::Linger kLinger{20ms, 8u << 20};
constexpr auto kStatusEvery = 1s;
constexpr auto kNameEvery = 200ms;  // files named for the progress display at most this often
// An offer while the attached backupd's socket shows a hang-up waits this long for the session
// thread to notice and let go, so a restarted backupd is not refused for its own ghost.
constexpr auto kReleaseWait = 2s;

long long ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// The volume-relative path of an open regular file of the tree at root, or "" if the kernel
// cannot name it (a disconnected dentry, a file unlinked since).
std::string relative_path(int fd, const std::string& root) {
  char buf[PATH_MAX];
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof buf) return "";
  std::string_view path(buf, static_cast<size_t>(n));
  if (path.size() <= root.size() + 1 || path.compare(0, root.size(), root) != 0 ||
      path[root.size()] != '/') {
    return "";
  }
  std::string rel(path.substr(root.size() + 1));
  return validate_rel_path(rel) ? rel : "";
}

}  // namespace

// The shipper's data source, which also names the file it opens, for the progress display
// (about five times a second) and in a due NodeStatus.
class NodeSession::StatusSource : public changes::DataSource {
 public:
  StatusSource(NodeSession& session, net::Conn& conn)
      : session_(session), conn_(conn), files_(session.root_fd_) {}

  Result<UniqueFd> open_file(const changes::FileRef& file) override {
    auto fd = files_.open_file(file);
    if (!fd) return fd;
    bool status = session_.status_due();
    auto now = Clock::now();
    std::string name;
    if (status || now - named_ >= kNameEvery) {
      name = relative_path(fd->get(), session_.options_.path);
      named_ = now;
    }
    session_.progress_.file(file, name);
    if (status) BKP_TRY_VOID(session_.send_status(conn_, name));
    return fd;
  }

  void prefetch(const changes::FileRef& file, uint64_t offset, uint64_t length) override {
    files_.prefetch(file, offset, length);
  }

  void sent(const changes::FileRef& file, uint64_t bytes) override {
    (void)file;
    session_.progress_.sent(bytes);
  }

 private:
  Clock::time_point named_{};
  NodeSession& session_;
  net::Conn& conn_;
  HandleSource files_;
};

NodeSession::NodeSession(SessionOptions options, UniqueFd listener, changes::ChangeLog& log,
                         int root_fd)
    : options_(std::move(options)),
      log_(log),
      root_fd_(root_fd),
      progress_(options_.meter, log),
      listener_(std::move(listener), options_.path, options_.trust,
                [this](Attached& attached) { return offer(attached); }) {
  if (options_.resume_committed) sender_.resume_after(*options_.resume_committed);
}


NodeSession::~NodeSession() {
  if (thread_.joinable()) drain(0ms);
  listener_.stop();
}

void NodeSession::start() {
  // Termination signals must reach the FUSE loop, not these threads.
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaddset(&block, sig);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  thread_ = std::thread([this] { main(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  listener_.start();
}

bool NodeSession::drain(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mu_);
    draining_.store(true);
    // A backupd that already hung up (the session has not noticed yet: it may be between two
    // batches) will not take the rest; waiting for it would only hold the unmount for `grace`.
    drain_waits_ = attached_ && !peer_gone_locked();
  }
  log_.wake();
  cv_.notify_all();
  {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, grace, [this] { return done_; })) {
      stop_.store(true);
      if (conn_fd_ >= 0) ::shutdown(conn_fd_, SHUT_RDWR);
      cv_.notify_all();
    }
  }
  log_.wake();
  if (thread_.joinable()) thread_.join();
  listener_.stop();
  return drained_;
}

Result<void> NodeSession::offer(Attached& attached) {
  if (attached.attach.purpose == wire::AttachPurpose::kManifest) return answer_manifest(attached);
  std::unique_lock lock(mu_);
  if (attached_ && peer_gone_locked()) {
    cv_.wait_for(lock, kReleaseWait, [this] { return !attached_ || done_; });
  }
  if (done_ || stopping() || (draining_.load() && !drain_waits_)) {
    return fail(ESHUTDOWN, "this node is shutting down");
  }
  if (attached_) return fail(EBUSY, "another backupd is attached");
  attached_ = true;
  conn_fd_ = attached.conn->fd();
  handoff_ = std::move(attached);
  cv_.notify_all();
  return {};
}

bool NodeSession::peer_gone_locked() const {
  if (conn_fd_ < 0) return false;
  pollfd p{conn_fd_, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool NodeSession::attached() const {
  std::lock_guard lock(mu_);
  return attached_;
}

bool NodeSession::log_empty() const {
  auto s = log_.stats();
  return s.ops == 0 && s.files == 0;
}

void NodeSession::main() {
  log::info("waiting for backupd to attach");
  while (auto attached = wait_attached()) {
    auto result = run_session(*attached);
    detach();
    std::string peer = attached->peer;
    attached.reset();  // closes the connection, after detach() forgot its descriptor
    if (result) {
      drained_ = true;
      break;
    }
    progress_.interrupted();
    if (stopping()) break;
    stream::Lag lag = sender_.lag();
    if (result.error().code == ECONNRESET) {
      log::info("backupd {} detached; keeping {} ops and {} files for the next attach", peer,
                lag.ops, lag.files);
    } else {
      log::warn("backupd {}: {}; keeping {} ops and {} files for the next attach", peer,
                result.error().message, lag.ops, lag.files);
    }
  }
  std::lock_guard lock(mu_);
  done_ = true;
  cv_.notify_all();
}

std::optional<Attached> NodeSession::wait_attached() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] {
    return handoff_ || stopping() || (draining_.load() && (!drain_waits_ || nothing_left()));
  });
  if (draining_.load() && nothing_left()) {
    drained_ = true;
    return std::nullopt;
  }
  if (stopping() || !handoff_) return std::nullopt;
  std::optional<Attached> attached = std::move(handoff_);
  handoff_.reset();
  return attached;
}

void NodeSession::detach() {
  std::lock_guard lock(mu_);
  attached_ = false;
  conn_fd_ = -1;
  cv_.notify_all();
}

wire::Hello NodeSession::hello() const {
  wire::Hello hello;
  hello.role = wire::Role::kNode;
  hello.name = options_.host;
  hello.path = options_.path;
  hello.instance = options_.instance;
  return hello;
}

// A verify (server/verify.h) asks for the tree as it is, beside the stream and whatever it
// does: the walk only reads the directory (no namespace lock, nothing recorded), on the
// handshake thread, so the application and the stream go on meanwhile.
Result<void> NodeSession::answer_manifest(Attached& attached) {
  net::Conn& conn = *attached.conn;
  BKP_TRY_VOID(net::send_now(conn, hello()));
  auto request = net::expect<wire::ManifestRequest>(conn, kHelloTimeoutMs);
  if (!request) return tl::unexpected(request.error().wrap("verify"));
  auto t0 = Clock::now();
  BKP_TRY_VOID(stream::send_tree_manifest(conn, root_fd_, request->flags).map_error([](Error e) {
    return e.wrap("verify");
  }));
  log::info("backupd {} verified: manifest{} sent in {} ms", attached.peer,
            request->flags & wire::kManifestContent ? " with content digests" : "", ms_since(t0));
  return {};
}

Result<void> NodeSession::run_session(Attached& attached) {
  net::Conn& conn = *attached.conn;
  BKP_TRY_VOID(net::send(conn, hello()));
  BKP_TRY_VOID(conn.flush());
  auto ok = net::expect<wire::HelloOk>(conn, kHelloTimeoutMs);
  if (!ok) return tl::unexpected(ok.error().wrap("hello"));
  const wire::Position& at = ok->position;
  log::info("backupd {} attached (server {:016x}) to {}:{} (committed {}{}{})", attached.peer,
            attached.attach.server_id, options_.host, options_.path, at.committed,
            at.applied ? fmt::format(" + {} operations", at.applied) : "",
            at.need_baseline ? ", baseline requested" : "");
  if (sender_.position(at) == stream::Sender::Resume::kBaseline) BKP_TRY_VOID(take_baseline(conn));
  last_status_ = {};
  while (!stopping()) {
    if (sender_.needs_reconcile()) BKP_TRY_VOID(take_baseline(conn));
    if (auto left = sender_.linger_left(kLinger, wire::realtime_ns()); left > 0ns && !draining_) {
      // On the session's own condition, so an unmount or a stop ends the linger at once.
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, left, [this] { return draining_.load() || stopping(); });
      continue;
    }
    const changes::Batch* batch = sender_.next();
    if (batch == nullptr) {
      if (draining_.load()) return {};
      if (status_due()) {
        BKP_TRY_VOID(send_status(conn, ""));
        BKP_TRY_VOID(conn.flush());
      }
      if (!log_.wait(kIdleWait)) BKP_TRY_VOID(check_idle(conn));
      continue;
    }
    BKP_TRY_VOID(ship(conn, *batch));
    if (baseline_ && log_empty()) {
      baseline_ = false;
      if (options_.activity != nullptr) {
        if (auto cleared = options_.activity->clear_suspects(); !cleared) {
          log::warn("{}", cleared.error().message);
        }
      }
    }
    progress_.acked();
  }
  return fail(ECANCELED, "stopped");
}

Result<void> NodeSession::ship(net::Conn& conn, const changes::Batch& batch) {
  auto t0 = Clock::now();
  uint64_t sent_before = conn.bytes_sent();
  BKP_TRY_VOID(send_status(conn, ""));
  progress_.batch(batch, baseline_ ? "baseline" : "");
  StatusSource source(*this, conn);
  uint64_t number = batch.number, ops = batch.ops.size(), files = batch.files.size();
  uint64_t skipped = sender_.resume_at();
  if (options_.activity != nullptr) {
    auto noted = options_.activity->reading(batch);
    if (!noted && !activity_failing_) {
      log::warn("a restart of the machine could leave the mirror holding bytes this disk lost: "
                "{}", noted.error().message);
    }
    activity_failing_ = !noted;
  }
  auto sent = sender_.send(conn, source, counters_);
  if (options_.activity != nullptr) options_.activity->read_done(batch);
  BKP_TRY_VOID(sent);
  BKP_TRY_VOID(sender_.await_ack(conn, kAckTimeoutMs));
  log::debug("batch {} acknowledged: {} ops, {} files ({} items resumed past), {} wire bytes, {} ms",
             number, ops, files, skipped, conn.bytes_sent() - sent_before, ms_since(t0));
  return {};
}

bool NodeSession::status_due() const { return Clock::now() - last_status_ >= kStatusEvery; }

Result<void> NodeSession::send_status(net::Conn& conn, const std::string& current_file) {
  last_status_ = Clock::now();
  return net::send(conn, sender_.status(current_file));
}

// Between batches: notice a peer that closed or complained, without waiting.
Result<void> NodeSession::check_idle(net::Conn& conn) {
  if (!BKP_TRY(conn.readable())) return {};
  wire::Frame frame = BKP_TRY(conn.recv(1000));
  if (frame.type == wire::MsgType::kPing) return {};
  return tl::unexpected(net::unexpected_frame(frame, "nothing (idle)"));
}

Result<void> NodeSession::take_baseline(net::Conn& conn) {
  auto t0 = Clock::now();
  if (log_.overflowed()) {
    log::warn("the change log overflowed while nothing drained it ({} operations): "
              "reconciling with backupd by manifest", log_.stats().ops);
  }
  UniqueFd dir(::openat(root_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return fail_errno("baseline: open root");
  // What the mirror already holds is not sent again (common/stream/reconcile.h). Our tree is
  // walked into the caches while backupd walks its mirror for the manifest.
  auto have = [&] {
    changes::TreeWarmer warm(dir.get());
    return stream::fetch_manifest(conn, kHelloTimeoutMs);
  }();
  if (!have) return tl::unexpected(have.error().wrap("baseline"));
  changes::ScanOptions options;
  options.have = &*have;
  if (SourceActivity* a = options_.activity; a != nullptr && a->suspects() > 0) {
    // Files a restart of the machine left in doubt: an equal ctime proves nothing for them.
    options.ctime = [a](uint64_t id, const struct stat& st) {
      return a->suspect(id) ? 0 : wire::to_ns(st.st_ctim);
    };
  }
  changes::LogStats scanned;
  uint64_t kept = 0;
  {
    std::unique_lock ns(log_.namespace_lock());
    // The baseline stands for everything unacknowledged so far: it is as old as the oldest of it.
    int64_t oldest = log_.since_ns();
    auto batch = changes::scan_tree(dir.get(), make_identify(), options);
    if (!batch) return tl::unexpected(batch.error().wrap("baseline"));
    batch->since_ns = oldest;
    kept = std::count_if(batch->ops.begin(), batch->ops.end(),
                         [](const wire::Op& op) { return op.kind == wire::OpKind::kKeep; });
    log_.replace(std::move(*batch));
    scanned = log_.stats();
  }
  baseline_ = true;
  // Outside the namespace lock: the application goes on meanwhile (a file it writes to ships
  // whole, ChangeLog::narrow).
  HandleSource files(root_fd_);
  auto narrowed = stream::narrow_by_digests(conn, log_, files, kHelloTimeoutMs);
  if (!narrowed) return tl::unexpected(narrowed.error().wrap("baseline"));
  scanned = log_.stats();
  log::info("baseline: {} ops ({} entries already on backupd), {} files, {} bytes of data ({} "
            "files verified by block digests, {} bytes already on backupd), in {} ms",
            scanned.ops, kept, scanned.files, scanned.dirty_bytes, narrowed->files,
            narrowed->kept_bytes, ms_since(t0));
  return {};
}

}  // namespace bkp::fs
