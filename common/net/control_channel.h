// The serving side of the control protocol's framing (docs/PROTOCOL.md "Control"), shared by
// backupd and by a replicator that serves its snapshot copies to bkptool: Request frames that
// carry a JSON object with a "cmd", one Response frame per request, and an archive streamed as
// a header Response, Data frames of exactly the promised bytes, and a final {"done":true}.
//
// What the commands mean stays with each server; this is only how they arrive and leave, so a
// bkptool restore reads backupd and a replicator alike.
//
// Not thread-safe: one thread owns the channel (and its Conn).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/byte_source.h"
#include "common/net/conn.h"
#include "common/part_digests.h"
#include "common/result.h"

namespace bkp::net {

constexpr int kControlIdleTimeoutMs = 300000;  // a silent control client is dropped after 5 min
constexpr size_t kArchiveChunk = 1u << 20;     // bytes per Data frame of a streamed archive
// The most part digests a stream header carries (64 hex digits each, within one frame).
constexpr size_t kMaxDigestsInResponse = 50000;

// One Request as it arrived.
struct ControlRequest {
  nlohmann::json body;  // the request object; discarded or not an object when invalid
  std::string cmd;      // its "cmd"; "?" when it has none
  std::string invalid;  // why it is no request (a bad_request sentence); empty when it is one
};

// Which bytes of an archive a restore request asks for (docs/PROTOCOL.md "Control", restore):
// all of it by default; "offset" and "length" ask for a range (a part of a parallel restore),
// "digests": false leaves the part digests out of the header (the client has them already).
struct ArchiveRange {
  bool ranged = false;  // "offset" or "length" was given: the header repeats them
  uint64_t offset = 0;
  std::optional<uint64_t> length;  // nullopt: to the end
  bool digests = true;
};

// The range a restore request asks for, or the bad_request sentence for a field of the wrong
// type.
tl::expected<ArchiveRange, std::string> archive_range(const nlohmann::json& request);

// An archive to stream: an open file of `bytes` bytes and what the header says of it.
struct ArchiveStream {
  ByteSource* source = nullptr;
  uint64_t bytes = 0;
  std::string id;          // names the snapshot in errors
  nlohmann::json snapshot; // the header's SNAPSHOT object
  uint64_t part_size = 0;  // 0: no digests known
  std::span<const PartDigest> digests;
  ArchiveRange range;
  nlohmann::json extra = nlohmann::json::object();  // more header fields (backupd: "sources")
};

class ControlChannel {
 public:
  explicit ControlChannel(Conn& conn) : conn_(conn) {}

  // Waits up to idle_ms for the next Request, skipping Pings. A request that is not a JSON
  // object with a string "cmd" is returned with `invalid` set (answer it, the session goes on).
  // Errors end the session: ETIMEDOUT when idle, ECONNRESET when the client closed, EPROTO for
  // a frame that is not a Request.
  Result<ControlRequest> next(int idle_ms);

  // Sends one Response and flushes. A response too large for one frame is replaced by an
  // "internal" error saying so.
  Result<void> respond(const nlohmann::json& response);
  Result<void> respond_error(std::string_view code, std::string_view message);

  // {"ok":true,"snapshot":SNAPSHOT,"bytes":N[,"offset":O,"length":L][,"digests":HEX]...extra},
  // exactly L bytes of Data read from the source at O (the whole archive unless ranged), then
  // {"ok":true,"done":true}. The digests go with it when asked for, there is one per part and
  // they fit in one frame. A range beyond the archive is answered with a bad_request error
  // (the session goes on). A failure after the header cannot be expressed as a response any
  // more: the caller ends the connection.
  Result<void> stream(const ArchiveStream& archive);

 private:
  Conn& conn_;
};

// {"ok":false,"code":code,"error":message}.
nlohmann::json control_error_json(std::string_view code, std::string_view message);

}  // namespace bkp::net
