// The control connection: a normal framed backupfs connection (common/net/conn.h) whose
// payloads after the handshake are JSON. bkptool is a one-shot program, so the client is
// strictly request/response with generous timeouts instead of a session with retries: if
// backupd goes away mid-command the user gets an error and can run the command again.
//
// Exit code discipline: only failures before the handshake completes mean "backupd is not
// there" (exit 3). Once HelloOk arrived, backupd exists, and anything going wrong is a plain
// failure (exit 1) whose message says what broke, so scripts never retry a register that
// backupd may already have performed. Two failures during the handshake are not "not there":
// a backupd with another identity (exit 8: retrying cannot help, and it may be an impostor)
// and a refusal (exit 1: backupd said no, in a sentence that says what to do).
//
// Over TCP the identity check happens right after the TLS handshake and before the Hello, so
// nothing — not even the fact that bkptool wants control — reaches a server that is not the
// pinned one.
#include "tools/client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <fmt/format.h>

#include <filesystem>

#include "common/files.h"
#include "common/log.h"
#include "common/net/socket.h"
#include "common/net/tls.h"
#include "common/wire/messages.h"

namespace bkp::tools {
namespace {

Result<UniqueFd> unix_connect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return fail(ENAMETOOLONG, fmt::format("socket path longer than {} bytes", sizeof addr.sun_path - 1));
  }
  path.copy(addr.sun_path, path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket");
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    std::string hint = e == EACCES ? " (the control socket is for root and backupd's control_group)"
                     : e == ENOENT || e == ECONNREFUSED ? " (is backupd running on this host?)"
                     : "";
    return fail(e, std::string(std::strerror(e)) + hint);
  }
  return fd;
}

// TLS with bkptool's identity, then the pinned-identity check (see the file comment).
Outcome<void> secure(net::Conn& conn, const ServerAddress& server) {
  auto config = BKP_TRY(load_identity(server.identity_path));
  if (auto ok = conn.secure(*config, net::TlsSide::kClient, kHandshakeTimeoutMs); !ok) {
    return fail_with(Exit::kUnreachable, kCodeUnreachable,
                     fmt::format("TLS handshake with backupd at {} failed: {} (a backupd running "
                                 "with tls = false needs --no-tls)",
                                 server.text, ok.error().message));
  }
  if (conn.peer_id() != server.server_id) {
    return fail_with(Exit::kWrongIdentity, kCodeWrongServer,
                     fmt::format("backupd at {} presented identity {}, not {} (from {}); if its "
                                 "key was rotated, get the new id with `backupd --show-id` on the "
                                 "server host, otherwise this is not that backupd",
                                 server.text, conn.peer_id(), server.server_id,
                                 server.server_id_source));
  }
  return {};
}

std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

Outcome<std::shared_ptr<net::TlsConfig>> load_identity(const std::string& path) {
  auto local = [&](const Error& e) {
    return fail_with(Exit::kFailure, kCodeLocal, fmt::format("bkptool's identity: {}", e.message));
  };
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (!dir.empty()) {
    if (auto made = make_dirs(dir); !made) return local(made.error());
  }
  auto config = net::TlsConfig::load(path, "bkptool");
  if (!config) return local(config.error());
  return std::move(*config);
}

Failure failure_from_response(const Json& response) {
  std::string code = "internal";
  std::string error = "backupd reported a failure without a reason";
  if (auto it = response.find("code"); it != response.end() && it->is_string()) code = *it;
  if (auto it = response.find("error"); it != response.end() && it->is_string()) error = *it;
  return Failure{exit_for_code(code), code, error};
}

Outcome<std::unique_ptr<ControlClient>> ControlClient::connect(const ServerAddress& server) {
  auto unreachable = [&](const Error& e) {
    return fail_with(Exit::kUnreachable, kCodeUnreachable,
                     fmt::format("cannot reach backupd at {}: {}", server.text, e.message));
  };
  bool tls = server.transport == Transport::kTcp && server.tls;
  if (tls && server.server_id.empty()) {
    return fail_with(Exit::kUsage, kCodeUsage,
                     fmt::format("backupd at {} is reached over TCP, which needs its identity: "
                                 "run `backupd --show-id` on the server host and pass it with "
                                 "--server-id ID (or BKP_SERVER_ID, or server_id in the config "
                                 "file); --no-tls only for a backupd running with tls = false",
                                 server.text));
  }
  log::debug("connecting to {} (from {})", server.text, server.source);
  auto sock = server.transport == Transport::kUnix
                  ? unix_connect(server.socket_path)
                  : net::tcp_connect(server.where, kConnectTimeoutMs);
  if (!sock) return unreachable(sock.error());
  auto conn = net::Conn::open(std::move(*sock));
  if (!conn) return fail_with(Exit::kFailure, kCodeLocal, conn.error().message);
  if (tls) BKP_TRY_VOID(secure(**conn, server));

  wire::Hello hello;
  hello.role = wire::Role::kControl;
  hello.name = "bkptool";
  std::vector<uint8_t> payload;
  wire::encode(hello, payload);
  if (auto sent = (*conn)->send(wire::MsgType::kHello, 0, payload); !sent) {
    return unreachable(sent.error());
  }
  auto frame = (*conn)->recv(kHandshakeTimeoutMs);
  if (!frame) {
    // Connected, but no Hello answer: something else listens there, or a wedged backupd.
    return unreachable(Error{frame.error().code, frame.error().message + " (is that backupd?)"});
  }
  if (frame->type == wire::MsgType::kError) {
    auto err = wire::decode_error(frame->payload);
    std::string text = err ? err->text : "malformed Error frame";
    bool denied = err && err->code == EACCES;
    return fail_with(Exit::kFailure, denied ? kCodeNotAuthorised : kCodeProtocol,
                     fmt::format("backupd at {} refused: {}", server.text, text));
  }
  if (frame->type != wire::MsgType::kHelloOk) {
    return unreachable(
        Error{EPROTO, fmt::format("expected HelloOk, got {}", wire::type_name(frame->type))});
  }
  auto ok = wire::decode_hello_ok(frame->payload);
  if (!ok) return unreachable(ok.error());
  log::debug("connected to backupd at {}, protocol version {}", server.text, ok->version);
  return std::unique_ptr<ControlClient>(new ControlClient(std::move(*conn), server.text));
}

Failure ControlClient::broken(const Error& e) const {
  return Failure{Exit::kFailure, std::string(kCodeProtocol),
                 fmt::format("connection to backupd at {}: {}", server_text_, e.message)};
}

Outcome<Json> ControlClient::call(const Json& request, int timeout_ms) {
  std::string text = request.dump(-1, ' ', false, Json::error_handler_t::replace);
  log::debug("request {}", text);
  if (auto sent = conn_->send(wire::MsgType::kRequest, 0, bytes_of(text)); !sent) {
    return tl::unexpected(broken(sent.error()));
  }
  if (auto flushed = conn_->flush(); !flushed) return tl::unexpected(broken(flushed.error()));
  wire::Frame frame = BKP_TRY(next_frame(timeout_ms));
  if (frame.type != wire::MsgType::kResponse) {
    return tl::unexpected(broken(
        Error{EPROTO, fmt::format("expected a Response, got {}", wire::type_name(frame.type))}));
  }
  return parse_response(frame);
}

Outcome<wire::Frame> ControlClient::next_frame(int timeout_ms) {
  auto frame = conn_->recv(timeout_ms);
  if (!frame) {
    if (frame.error().code == ETIMEDOUT) {
      return tl::unexpected(broken(
          Error{ETIMEDOUT, fmt::format("no answer within {} s", timeout_ms / 1000)}));
    }
    return tl::unexpected(broken(frame.error()));
  }
  if (frame->type == wire::MsgType::kError) {
    auto err = wire::decode_error(frame->payload);
    return fail_with(
        Exit::kFailure, kCodeInternal,
        err ? fmt::format("backupd: {}", err->text) : "backupd sent a malformed Error frame");
  }
  return std::move(*frame);
}

Outcome<Json> ControlClient::parse_response(const wire::Frame& frame) const {
  std::string_view text(reinterpret_cast<const char*>(frame.payload.data()), frame.payload.size());
  log::debug("response {}", text);
  Json response = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (response.is_discarded() || !response.is_object()) {
    return tl::unexpected(broken(Error{EPROTO, "the response is not a JSON object"}));
  }
  auto ok = response.find("ok");
  if (ok == response.end() || !ok->is_boolean()) {
    return tl::unexpected(broken(Error{EPROTO, "the response has no boolean \"ok\""}));
  }
  if (!ok->get<bool>()) return tl::unexpected(failure_from_response(response));
  return response;
}

}  // namespace bkp::tools
