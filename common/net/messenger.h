// Typed messages over a Conn: send one message, or wait for one of a given type, so a session
// never switches on frame types to find out that the peer said no.
//
// expect<M>() skips Ping frames, turns an Error frame into an error carrying the peer's errno
// and text ("peer: ..."), and any other frame into EPROTO naming what arrived instead.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "common/net/conn.h"
#include "common/result.h"
#include "common/wire/messages.h"

namespace bkp::net {

template <class M>
struct MessageType;

#define BKP_MESSAGE_TYPE(Msg, kType, decoder)                                 \
  template <>                                                                 \
  struct MessageType<wire::Msg> {                                             \
    static constexpr wire::MsgType type = wire::MsgType::kType;               \
    static Result<wire::Msg> decode(std::span<const uint8_t> p) { return wire::decoder(p); } \
  };
BKP_MESSAGE_TYPE(Hello, kHello, decode_hello)
BKP_MESSAGE_TYPE(HelloOk, kHelloOk, decode_hello_ok)
BKP_MESSAGE_TYPE(ErrorMsg, kError, decode_error)
BKP_MESSAGE_TYPE(Attach, kAttach, decode_attach)
BKP_MESSAGE_TYPE(NodeStatus, kNodeStatus, decode_node_status)
BKP_MESSAGE_TYPE(Select, kSelect, decode_select)
BKP_MESSAGE_TYPE(Position, kPosition, decode_position)
BKP_MESSAGE_TYPE(Commit, kCommit, decode_commit)
BKP_MESSAGE_TYPE(Ack, kAck, decode_ack)
BKP_MESSAGE_TYPE(ManifestRequest, kManifestRequest, decode_manifest_request)
BKP_MESSAGE_TYPE(Manifest, kManifest, decode_manifest)
BKP_MESSAGE_TYPE(DigestRequest, kDigestRequest, decode_digest_request)
BKP_MESSAGE_TYPE(Digests, kDigests, decode_digests)
BKP_MESSAGE_TYPE(UsageRequest, kUsageRequest, decode_usage_request)
BKP_MESSAGE_TYPE(SnapshotInventoryRequest, kSnapshotInventoryRequest,
                 decode_snapshot_inventory_request)
BKP_MESSAGE_TYPE(SnapshotInventory, kSnapshotInventory, decode_snapshot_inventory)
BKP_MESSAGE_TYPE(SnapshotBegin, kSnapshotBegin, decode_snapshot_begin)
BKP_MESSAGE_TYPE(SnapshotData, kSnapshotData, decode_snapshot_data)
BKP_MESSAGE_TYPE(SnapshotEnd, kSnapshotEnd, decode_snapshot_end)
BKP_MESSAGE_TYPE(SnapshotStored, kSnapshotStored, decode_snapshot_stored)
BKP_MESSAGE_TYPE(Usage, kUsage, decode_usage)
BKP_MESSAGE_TYPE(Drop, kDrop, decode_drop)
BKP_MESSAGE_TYPE(Dropped, kDropped, decode_dropped)
#undef BKP_MESSAGE_TYPE

// Queues the message (Conn::flush sends it; recv flushes first).
template <class M>
Result<void> send(Conn& conn, const M& msg) {
  std::vector<uint8_t> payload;
  wire::encode(msg, payload);
  return conn.send(MessageType<M>::type, 0, payload);
}

// Sends the message and flushes: for answers the peer waits for.
template <class M>
Result<void> send_now(Conn& conn, const M& msg) {
  BKP_TRY_VOID(send(conn, msg));
  return conn.flush();
}

// Sends Error{code, text} and flushes; the caller closes the connection after it. Callers that
// are closing anyway may ignore a failure (the peer may be gone).
Result<void> send_error(Conn& conn, int code, std::string_view text);

// The error a peer's Error frame carries, or EPROTO for a frame that is not the one expected.
Error unexpected_frame(const wire::FrameView& frame, const char* waiting_for);

// Waits up to timeout_ms for a message of type M (see the file comment). The Pings in between
// do not extend the wait: a peer that pings and never answers is cut as one that stays silent.
template <class M>
Result<M> expect(Conn& conn, int timeout_ms) {
  const int limit_ms = timeout_ms;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
  bool pinged = false;
  auto only_pings = [&] {
    return fail(ETIMEDOUT, fmt::format("peer sent only Pings in {} ms, no {}", limit_ms,
                                       wire::type_name(MessageType<M>::type)));
  };
  while (true) {
    auto got = conn.recv_view(timeout_ms);
    if (!got && pinged && got.error().message.find("nothing in time") != std::string::npos) {
      return only_pings();  // not a frame stopped halfway: that error says so itself
    }
    wire::FrameView frame = BKP_TRY(std::move(got));
    if (frame.type == wire::MsgType::kPing) {
      pinged = true;
      if (limit_ms < 0) continue;  // no limit
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return only_pings();
      timeout_ms = static_cast<int>(left.count());
      continue;
    }
    if (frame.type != MessageType<M>::type) {
      return tl::unexpected(unexpected_frame(frame, wire::type_name(MessageType<M>::type)));
    }
    return MessageType<M>::decode(frame.payload);
  }
}

}  // namespace bkp::net
