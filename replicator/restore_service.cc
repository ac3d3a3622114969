// A replicator serving its snapshot copies to bkptool (restore_service.h).
//
// The accept loop polls the listening socket and an eventfd that stop() signals; each accepted
// connection runs on its own thread: TLS as server, the Hello, then the operator check (after
// the Hello, as backupd does, so the refusal arrives as the answer bkptool waits for), HelloOk
// and requests through the control framing backupd uses (common/net/control_channel.h). The
// requests are answered from files only: the snapshot directory is opened beneath ROOT without
// following a symlink, and an archive is opened before its header is sent, so rotation by the
// replica session meanwhile cannot change the bytes promised.
#include "replicator/restore_service.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/files.h"
#include "common/log.h"
#include "common/net/conn.h"
#include "common/net/control_channel.h"
#include "common/net/messenger.h"
#include "common/path.h"
#include "replicator/held_snapshots.h"
#include "replicator/live_archive.h"

namespace bkp::replicator {
namespace {

using json = nlohmann::json;

constexpr int kHandshakeTimeoutMs = 10000;

// A failed request: backupd's code ("bad_request", "unknown_volume", "no_snapshot",
// "internal") and a sentence.
struct Refusal {
  const char* code;
  std::string message;
};
template <class T>
using Answer = tl::expected<T, Refusal>;
tl::unexpected<Refusal> refuse(const char* code, std::string message) {
  return tl::unexpected(Refusal{code, std::move(message)});
}

// The requests of one connection.
class SnapshotSession {
 public:
  SnapshotSession(net::Conn& conn, const RestoreServiceConfig& config, const std::string& peer)
      : channel_(conn), config_(config), peer_(peer) {}

  // Serves requests until the connection ends; returns the error that ended it.
  Error serve() {
    while (true) {
      auto request = channel_.next(net::kControlIdleTimeoutMs);
      if (!request) return request.error();
      if (auto r = handle(*request); !r) return r.error();
    }
  }

 private:
  Result<void> handle(const net::ControlRequest& request) {
    Answer<json> answer = refuse("bad_request", request.invalid);
    if (request.invalid.empty()) {
      if (request.cmd == "snapshots") {
        answer = snapshots(request.body);
      } else if (request.cmd == "restore") {
        answer = restore(request.body);
      } else {
        answer = refuse("bad_request",
                        fmt::format("unknown command '{}': a replicator serves snapshots and "
                                    "restore (the rest is backupd's)", request.cmd));
      }
    }
    std::string what = request.cmd;
    if (request.body.is_object()) {
      for (const char* key : {"host", "path", "snapshot"}) {
        auto it = request.body.find(key);
        if (it != request.body.end() && it->is_string()) what += " " + it->get<std::string>();
      }
    }
    if (!answer) {
      log::info("control {}: {}: {}: {}", peer_, what, answer.error().code, answer.error().message);
      return channel_.respond_error(answer.error().code, answer.error().message);
    }
    if (answer->is_null()) {  // restore streamed its answer itself
      if (stream_error_) {
        log::info("control {}: {}: stream failed: {}", peer_, what, stream_error_->message);
        return tl::unexpected(*std::exchange(stream_error_, std::nullopt));
      }
      log::info("control {}: {}: ok", peer_, what);
      return {};
    }
    log::info("control {}: {}: ok", peer_, what);
    return channel_.respond(*answer);
  }

  static Answer<std::string> text(const json& request, const char* key) {
    auto it = request.find(key);
    if (it == request.end()) return refuse("bad_request", fmt::format("missing field '{}'", key));
    if (!it->is_string()) {
      return refuse("bad_request", fmt::format("field '{}' must be a string", key));
    }
    return it->get<std::string>();
  }

  // The request's host and path, checked.
  static Answer<void> named_volume(const json& request, std::string* host, std::string* path) {
    *host = BKP_TRY(text(request, "host"));
    auto given_path = BKP_TRY(text(request, "path"));
    if (auto ok = validate_host(*host); !ok) return refuse("bad_request", ok.error().message);
    auto checked = validate_volume_path(given_path);
    if (!checked) return refuse("bad_request", checked.error().message);
    *path = *checked;
    return {};
  }

  // The volume's snapshot directory on this replica, host and path checked.
  Answer<UniqueFd> volume(const json& request, std::string* host, std::string* path) {
    BKP_TRY_VOID(named_volume(request, host, path));
    auto dir = open_held_volume(config_.root, *host, *path);
    if (!dir && dir.error().code == ENOENT) {
      return refuse("unknown_volume", fmt::format("replica {} holds no snapshots of {}:{}",
                                                  config_.name, *host, *path));
    }
    if (!dir) return refuse("internal", dir.error().message);
    return std::move(*dir);
  }

  json snapshot_json(const HeldSnapshot& s) const {
    return json{{"id", s.id},
                {"name", s.id + ".tgz"},
                {"created_at", iso_time(snapshot_id_ms(s.id))},
                {"bytes", s.bytes},
                {"part_size", s.part_size},
                {"parts", s.digests.size()},
                {"holders", json::array({config_.name})}};
  }

  // Newest first, as backupd lists them; an archive rotated away meanwhile is left out.
  Answer<json> snapshots(const json& request) {
    std::string host, path;
    auto dir = BKP_TRY(volume(request, &host, &path));
    auto ids = archive_ids(dir.get());
    json out = json::array();
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
      auto held = open_held_snapshot(dir.get(), *it);
      if (!held && held.error().code == ENOENT) continue;
      if (!held) return refuse("internal", held.error().message);
      out.push_back(snapshot_json(*held));
    }
    return json{{"ok", true}, {"host", host}, {"snapshots", std::move(out)}};
  }

  // Answers and streams itself; null on success so handle() sends nothing more.
  Answer<json> restore(const json& request) {
    auto range = net::archive_range(request);
    if (!range) return refuse("bad_request", range.error());
    auto live = request.find("live");
    if (live != request.end() && !live->is_boolean()) {
      return refuse("bad_request", "field 'live' must be a boolean");
    }
    std::string host, path;
    BKP_TRY_VOID(named_volume(request, &host, &path));
    if (live != request.end() && live->get<bool>()) return restore_live(host, path, *range);
    std::string wanted = "latest";
    if (request.contains("snapshot") && !request.at("snapshot").is_null()) {
      wanted = BKP_TRY(text(request, "snapshot"));
    }
    if (wanted.size() > 4 && wanted.ends_with(".tgz")) wanted.resize(wanted.size() - 4);
    // A parallel restore asks for its parts one by one, by id: they come from the archive this
    // connection already has open (a live one exists nowhere else).
    if (open_ && open_->host == host && open_->path == path && open_->held.id == wanted) {
      return stream(open_->held, *range);
    }
    auto dir = BKP_TRY(volume(request, &host, &path));
    if (wanted != "latest") {
      if (auto ok = validate_snapshot_id(wanted); !ok) {
        return refuse("bad_request", ok.error().message);
      }
    }
    auto ids = archive_ids(dir.get());
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
      if (wanted != "latest" && *it != wanted) continue;
      auto held = open_held_snapshot(dir.get(), *it);
      if (!held && held.error().code == ENOENT) continue;  // rotated away since the listing
      if (!held) return refuse("internal", held.error().message);
      open_ = Open{host, path, std::move(*held)};
      return stream(open_->held, *range);
    }
    if (wanted == "latest") {
      return refuse("no_snapshot", fmt::format("replica {} holds no snapshot of {}:{}",
                                               config_.name, host, path));
    }
    return refuse("no_snapshot", fmt::format("replica {} holds no snapshot '{}' of {}:{}",
                                             config_.name, wanted, host, path));
  }

  // `restore` with "live": true: this replica's tree of the volume as it is now, archived for
  // this connection (live_archive.h); its parts are then asked for by the id in the header.
  Answer<json> restore_live(const std::string& host, const std::string& path,
                            const net::ArchiveRange& range) {
    if (config_.still == nullptr) return refuse("internal", "no live archives here");
    auto held = archive_live_tree(config_.root, host, path, *config_.still);
    if (!held && held.error().code == ENOENT) {
      return refuse("unknown_volume", fmt::format("replica {} holds no copy of {}:{}",
                                                  config_.name, host, path));
    }
    if (!held && held.error().code == EBUSY) {
      return refuse("busy", fmt::format("replica {}: {}", config_.name, held.error().message));
    }
    if (!held) return refuse("internal", held.error().message);
    log::info("live archive {} of {}:{}: {} bytes", held->id, host, path, held->bytes);
    open_ = Open{host, path, std::move(*held)};
    return stream(open_->held, range);
  }

  // Streams held (null: answered, or stream_error_ set).
  json stream(const HeldSnapshot& held, const net::ArchiveRange& range) {
    FileSource source(held.file.get(), held.bytes, held.id + ".tgz");
    auto streamed = channel_.stream(net::ArchiveStream{.source = &source,
                                                       .bytes = held.bytes,
                                                       .id = held.id,
                                                       .snapshot = snapshot_json(held),
                                                       .part_size = held.part_size,
                                                       .digests = held.digests,
                                                       .range = range});
    if (!streamed) stream_error_ = streamed.error();
    return json(nullptr);
  }

  net::ControlChannel channel_;
  const RestoreServiceConfig& config_;
  const std::string& peer_;
  std::optional<Error> stream_error_;  // a restore that failed after its header
  // The archive this connection last streamed from (held or live), open: its parts are the
  // bytes its header promised, whatever rotation does meanwhile.
  struct Open {
    std::string host, path;
    HeldSnapshot held;
  };
  std::optional<Open> open_;
};

}  // namespace

Result<std::unique_ptr<RestoreService>> RestoreService::start(RestoreServiceConfig config) {
  if (!config.tls) return fail(EINVAL, "serving restores needs TLS (operators are identities)");
  std::unique_ptr<RestoreService> s(new RestoreService(std::move(config)));
  net::HostPort bound;
  s->listening_ = BKP_TRY(net::tcp_listen(s->config_.listen, &bound));
  s->port_ = bound.port;
  s->wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->wake_) return fail_errno("eventfd");
  if (!s->config_.port_file.empty()) {
    BKP_TRY_VOID(write_file_atomic(s->config_.port_file, fmt::format("{}\n", s->port_),
                                   Durability::kNoSync));
  }
  log::info("serving snapshots and restores on {}:{} to {} operator identit{}",
            s->config_.listen.host, s->port_, s->config_.operator_ids.size(),
            s->config_.operator_ids.size() == 1 ? "y" : "ies");
  s->acceptor_ = std::thread([raw = s.get()] { raw->accept_loop(); });
  return s;
}

void RestoreService::stop() {
  if (!acceptor_.joinable()) return;
  stopping_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  acceptor_.join();
  {
    std::lock_guard lock(mu_);
    for (auto& w : workers_) ::shutdown(w.socket.get(), SHUT_RDWR);
  }
  for (auto& w : workers_) w.thread.join();  // no other thread touches workers_ now
  workers_.clear();
}

void RestoreService::reap() {
  std::lock_guard lock(mu_);
  workers_.remove_if([](Worker& w) {
    if (!*w.done) return false;
    w.thread.join();  // it has returned, or is returning, from serve()
    return true;
  });
}

void RestoreService::accept_loop() {
  while (!stopping_) {
    pollfd fds[2] = {{listening_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log::error("restore service: poll: {}", std::strerror(errno));
      return;
    }
    if (stopping_) return;
    if (!(fds[0].revents & POLLIN)) continue;
    UniqueFd sock(::accept4(listening_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!sock) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        log::error("restore service: accept: {}", std::strerror(errno));
      }
      continue;
    }
    reap();
    std::string peer = fmt::format("operator connection {}", ++served_);
    std::lock_guard lock(mu_);
    if (workers_.size() >= kMaxRestoreConnections) {
      log::warn("{} refused: {} connections already open", peer, kMaxRestoreConnections);
      continue;
    }
    net::tune_socket(sock.get());
    Worker w;
    w.socket.reset(::fcntl(sock.get(), F_DUPFD_CLOEXEC, 0));
    if (!w.socket) {
      log::error("{} refused: {}", peer, std::strerror(errno));
      continue;
    }
    w.done = std::make_shared<std::atomic<bool>>(false);
    w.thread = std::thread([this, s = std::move(sock), peer, done = w.done]() mutable {
      serve(std::move(s), peer);
      *done = true;
    });
    workers_.push_back(std::move(w));
  }
}

void RestoreService::serve(UniqueFd socket, const std::string& peer) {
  auto opened = net::Conn::open(std::move(socket));
  if (!opened) {
    log::error("{}: {}", peer, opened.error().message);
    return;
  }
  net::Conn& conn = **opened;
  if (auto ok = conn.secure(*config_.tls, net::TlsSide::kServer, kHandshakeTimeoutMs); !ok) {
    if (!stopping_) log::warn("{} rejected: {}", peer, ok.error().message);
    return;
  }
  const std::string who = fmt::format("{} (identity {})", peer, conn.peer_id());
  auto hello = net::expect<wire::Hello>(conn, kHandshakeTimeoutMs);
  if (!hello) {
    if (!stopping_) log::warn("{} rejected: {}", who, hello.error().message);
    net::send_error(conn, hello.error().code, hello.error().message);
    return;
  }
  if (hello->role != wire::Role::kControl || hello->version != wire::kVersion) {
    const std::string why = fmt::format(
        "replica {} serves only bkptool's control role at protocol version {} here", config_.name,
        wire::kVersion);
    log::warn("{} refused: {}", who, why);
    net::send_error(conn, EPROTONOSUPPORT, why);
    return;
  }
  const auto& ids = config_.operator_ids;
  if (std::find(ids.begin(), ids.end(), conn.peer_id()) == ids.end()) {
    const std::string why = fmt::format(
        "operator identity {} is not authorised on replica {}; start the replicator with "
        "--operator-id {}", conn.peer_id(), config_.name, conn.peer_id());
    log::warn("{} refused: {}", who, why);
    net::send_error(conn, EACCES, why);
    return;
  }
  if (auto sent = net::send_now(conn, wire::HelloOk{}); !sent) {
    log::info("control {}: {}", who, sent.error().message);
    return;
  }
  SnapshotSession session(conn, config_, who);
  Error end = session.serve();
  if (stopping_ || end.code == ECONNRESET || end.code == EPIPE) {  // even mid-stream
    log::debug("control {}: closed", who);
  } else if (end.code == ETIMEDOUT) {
    log::info("control {}: idle for {} s, closing", who, net::kControlIdleTimeoutMs / 1000);
  } else {
    log::error("control {}: {}", who, end.message);
    net::send_error(conn, end.code, end.message);
  }
}

}  // namespace bkp::replicator
