// Frames: the unit of every backupfs connection (node -> backupd, backupd -> replicator).
//
// Layout (little-endian), documented in docs/PROTOCOL.md:
//   u32 length   payload bytes, at most kMaxPayload; checked before anything is allocated
//   u8  type     MsgType; unknown types are rejected
//   u8  flags    kFlagZstd: payload is a zstd frame (only for Write)
//   u16 reserved must be 0
//   u64 seq      per-connection, strictly increasing from 1; a repeat or gap is rejected
//   u64 checksum XXH3-64 of the first 16 header bytes followed by the payload
// FrameReader is incremental so one reader serves blocking and io_uring sockets alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace bkp::wire {

constexpr size_t kHeaderSize = 24;
constexpr uint32_t kMaxPayload = 4u << 20;  // 4 MiB; data chunks are at most 1 MiB raw
constexpr uint8_t kFlagZstd = 0x01;

enum class MsgType : uint8_t {
  kHello = 1,
  kHelloOk = 2,
  kError = 3,
  kSelect = 4,  // replica stream: following ops belong to this volume
  kAttach = 5,  // backupd -> node, first frame on a registered link
  kOp = 10,     // one namespace/metadata operation (wire::Op)
  kWrite = 11,  // file data: id, offset, bytes
  kCommit = 20,
  kAck = 21,
  kPing = 22,
  kNodeStatus = 23,  // node -> backupd: what its change log still holds (the lag)
  kPosition = 24,    // replica -> backupd, answers Select: where the replica stands
  kManifestRequest = 25,  // sender -> receiver: list what your tree holds (before a baseline)
  kManifest = 26,         // receiver -> sender: a chunk of that list
  kDigestRequest = 27,    // sender -> receiver: block digests of one of your files, please
  kDigests = 28,          // receiver -> sender: those digests
  kDrop = 29,             // backupd -> replica: stop holding a volume (and with purge, delete it)
  kDropped = 30,          // replica -> backupd: done, or why not
  kUsageRequest = 32,     // backupd -> replica: how much do you hold, how much room is left?
  kUsage = 33,            // replica -> backupd: the answer (placement, server/placement.h)
  kSnapshotInventoryRequest = 34,  // backupd -> replica: which snapshots of a volume do you hold?
  kSnapshotInventory = 35,         // replica -> backupd: those
  kSnapshotBegin = 36,    // backupd -> replica: a snapshot archive follows (its part digests)
  kSnapshotData = 37,     // backupd -> replica: the next bytes of it
  kSnapshotEnd = 38,      // backupd -> replica: that was all of it
  kSnapshotStored = 39,   // replica -> backupd: kept (or why not)
  kRequest = 40,     // control: one JSON request
  kResponse = 41,    // control: one JSON response
  kData = 42,        // control: raw bytes of a restore stream
};

bool is_known_type(uint8_t type);
const char* type_name(MsgType type);

// A frame whose payload still lies in the reader's buffer: valid until the reader is fed or
// asked for the next frame (the receive path applies it from there, without a copy).
struct FrameView {
  MsgType type = MsgType::kPing;
  uint8_t flags = 0;
  uint64_t seq = 0;
  std::span<const uint8_t> payload;
};

// A frame that owns its payload.
struct Frame {
  MsgType type = MsgType::kPing;
  uint8_t flags = 0;
  uint64_t seq = 0;
  std::vector<uint8_t> payload;

  static Frame copy_of(const FrameView& v) {
    return Frame{v.type, v.flags, v.seq, {v.payload.begin(), v.payload.end()}};
  }
  operator FrameView() const { return {type, flags, seq, payload}; }  // NOLINT: a view of it
};

// Appends one encoded frame (header + payload) to out. The payload must not exceed kMaxPayload.
void encode_frame(MsgType type, uint8_t flags, uint64_t seq, std::span<const uint8_t> payload,
                  std::vector<uint8_t>& out);
// Writes the header of a frame whose payload begins with head_size bytes that already follow it
// at frame + kHeaderSize (built in place, without a copy) and goes on with body, which is sent
// from where it is (net::Conn::send_parts; empty for a payload wholly in place).
void seal_frame(MsgType type, uint8_t flags, uint64_t seq, uint8_t* frame, size_t head_size,
                std::span<const uint8_t> body = {});

// Incremental decoder. feed() bytes as they arrive, then call next() until it returns nullopt.
// Any error is final for the connection: the peer is confused or hostile.
class FrameReader {
 public:
  void feed(std::span<const uint8_t> bytes);
  // Room for up to n more bytes at the end of the buffer, for a read straight into it (no copy);
  // filled(used) then keeps the first `used` of them. Nothing else may run in between.
  std::span<uint8_t> space(size_t n);
  void filled(size_t used);
  // A complete, verified frame; nullopt when more bytes are needed; an error (EPROTO) on bad
  // length, unknown type, nonzero reserved bits, bad checksum or out-of-order sequence. The view
  // is valid until the next call of any method (Frame::copy_of keeps it longer).
  Result<std::optional<FrameView>> next();
  // Bytes buffered but not yet returned as a frame (bounded by kHeaderSize + kMaxPayload).
  size_t buffered() const { return end_ - pos_; }
  // The size of the frame being read, header included, once its length field is here (at most
  // kHeaderSize + kMaxPayload); 0 before.
  size_t pending_size() const;

 private:
  std::vector<uint8_t> buf_;  // [pos_, end_) is unread; beyond end_ is room
  size_t pos_ = 0;
  size_t end_ = 0;
  uint64_t last_seq_ = 0;
};

}  // namespace bkp::wire
