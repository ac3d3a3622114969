// The one place a frame that is not the expected message becomes an error, and the one place an
// Error frame is sent (see messenger.h).
#include "common/net/messenger.h"

namespace bkp::net {

Error unexpected_frame(const wire::FrameView& frame, const char* waiting_for) {
  if (frame.type == wire::MsgType::kError) {
    if (auto e = wire::decode_error(frame.payload)) {
      return Error{e->code != 0 ? static_cast<int>(e->code) : EIO, "peer: " + e->text};
    }
    return Error{EPROTO, "malformed Error frame from the peer"};
  }
  return Error{EPROTO, std::string("unexpected ") + wire::type_name(frame.type) +
                           " frame while waiting for " + waiting_for};
}

Result<void> send_error(Conn& conn, int code, std::string_view text) {
  return send_now(conn, wire::ErrorMsg{static_cast<uint32_t>(code),
                                       std::string(text.substr(0, wire::kMaxText))});
}

}  // namespace bkp::net
