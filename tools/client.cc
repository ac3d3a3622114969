// The control connection: a normal framed backupfs connection (common/net/conn.h) whose
// payloads after the handshake are JSON. bkptool is a one-shot program, so the client is
// strictly request/response with generous timeouts instead of a session with retries: if
// backupd goes away mid-command the user gets an error and can run the command again.
//
// Exit code discipline: only failures before the handshake completes mean "backupd is not
// there" (exit 3). Once HelloOk arrived, backupd exists, and anything going wrong is a plain
// failure (exit 1) whose message says what broke, so scripts never retry a register that
// backupd may already have performed.
#include "tools/client.h"

#include <fmt/format.h>

#include "common/log.h"
#include "common/net/socket.h"
#include "common/wire/messages.h"

namespace bkp::tools {
namespace {

std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

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
  log::debug("connecting to {} (from {})", server.text, server.source);
  auto sock = net::tcp_connect(server.where, kConnectTimeoutMs);
  if (!sock) return unreachable(sock.error());
  auto conn = net::Conn::open(std::move(*sock));
  if (!conn) return fail_with(Exit::kFailure, kCodeLocal, conn.error().message);

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
    return fail_with(Exit::kFailure, kCodeProtocol,
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

Outcome<Json> ControlClient::call(const Json& request) {
  std::string text = request.dump(-1, ' ', false, Json::error_handler_t::replace);
  log::debug("request {}", text);
  if (auto sent = conn_->send(wire::MsgType::kRequest, 0, bytes_of(text)); !sent) {
    return tl::unexpected(broken(sent.error()));
  }
  if (auto flushed = conn_->flush(); !flushed) return tl::unexpected(broken(flushed.error()));
  wire::Frame frame = BKP_TRY(next_frame());
  if (frame.type != wire::MsgType::kResponse) {
    return tl::unexpected(broken(
        Error{EPROTO, fmt::format("expected a Response, got {}", wire::type_name(frame.type))}));
  }
  return parse_response(frame);
}

Outcome<wire::Frame> ControlClient::next_frame() {
  auto frame = conn_->recv(kResponseTimeoutMs);
  if (!frame) {
    if (frame.error().code == ETIMEDOUT) {
      return tl::unexpected(broken(
          Error{ETIMEDOUT, fmt::format("no answer within {} s", kResponseTimeoutMs / 1000)}));
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
