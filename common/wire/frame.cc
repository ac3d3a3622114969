// Frame encoding and the incremental frame reader.
//
// The reader is the first thing that touches bytes from the network, so it is strict: it checks
// the announced length against kMaxPayload before buffering a payload (a hostile 4 GiB length
// costs nothing), rejects unknown types and reserved bits, verifies the checksum over header and
// payload, and requires sequence numbers to rise by exactly one (replayed or dropped frames are
// a broken stream, not something to guess around).
#include "common/wire/frame.h"

#include <cstring>

#include "common/wire/codec.h"
#include "common/xxh3.h"

namespace bkp::wire {
namespace {

// Of the header's first 16 bytes, then the payload, which may come in two parts.
uint64_t checksum(const uint8_t* header16, std::span<const uint8_t> payload,
                  std::span<const uint8_t> rest = {}) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, header16, 16);
  XXH3_64bits_update(&state, payload.data(), payload.size());
  if (!rest.empty()) XXH3_64bits_update(&state, rest.data(), rest.size());
  return XXH3_64bits_digest(&state);
}

void store_le(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t load_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

bool is_known_type(uint8_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHello:
    case MsgType::kHelloOk:
    case MsgType::kError:
    case MsgType::kSelect:
    case MsgType::kOp:
    case MsgType::kWrite:
    case MsgType::kCommit:
    case MsgType::kAck:
    case MsgType::kPing:
    case MsgType::kAttach:
    case MsgType::kNodeStatus:
    case MsgType::kPosition:
    case MsgType::kManifestRequest:
    case MsgType::kManifest:
    case MsgType::kDigestRequest:
    case MsgType::kDigests:
    case MsgType::kUsageRequest:
    case MsgType::kUsage:
    case MsgType::kSnapshotInventoryRequest:
    case MsgType::kSnapshotInventory:
    case MsgType::kSnapshotBegin:
    case MsgType::kSnapshotData:
    case MsgType::kSnapshotEnd:
    case MsgType::kSnapshotStored:
    case MsgType::kDrop:
    case MsgType::kDropped:
    case MsgType::kRequest:
    case MsgType::kResponse:
    case MsgType::kData:
      return true;
  }
  return false;
}

const char* type_name(MsgType type) {
  switch (type) {
    case MsgType::kHello: return "Hello";
    case MsgType::kHelloOk: return "HelloOk";
    case MsgType::kError: return "Error";
    case MsgType::kSelect: return "Select";
    case MsgType::kOp: return "Op";
    case MsgType::kWrite: return "Write";
    case MsgType::kCommit: return "Commit";
    case MsgType::kAck: return "Ack";
    case MsgType::kPing: return "Ping";
    case MsgType::kAttach: return "Attach";
    case MsgType::kNodeStatus: return "NodeStatus";
    case MsgType::kPosition: return "Position";
    case MsgType::kManifestRequest: return "ManifestRequest";
    case MsgType::kManifest: return "Manifest";
    case MsgType::kDigestRequest: return "DigestRequest";
    case MsgType::kDigests: return "Digests";
    case MsgType::kUsageRequest: return "UsageRequest";
    case MsgType::kUsage: return "Usage";
    case MsgType::kSnapshotInventoryRequest: return "SnapshotInventoryRequest";
    case MsgType::kSnapshotInventory: return "SnapshotInventory";
    case MsgType::kSnapshotBegin: return "SnapshotBegin";
    case MsgType::kSnapshotData: return "SnapshotData";
    case MsgType::kSnapshotEnd: return "SnapshotEnd";
    case MsgType::kSnapshotStored: return "SnapshotStored";
    case MsgType::kDrop: return "Drop";
    case MsgType::kDropped: return "Dropped";
    case MsgType::kRequest: return "Request";
    case MsgType::kResponse: return "Response";
    case MsgType::kData: return "Data";
  }
  return "unknown";
}

void encode_frame(MsgType type, uint8_t flags, uint64_t seq, std::span<const uint8_t> payload,
                  std::vector<uint8_t>& out) {
  size_t start = out.size();
  out.resize(start + kHeaderSize + payload.size());
  if (!payload.empty()) std::memcpy(out.data() + start + kHeaderSize, payload.data(), payload.size());
  seal_frame(type, flags, seq, out.data() + start, payload.size());
}

void seal_frame(MsgType type, uint8_t flags, uint64_t seq, uint8_t* frame, size_t head_size,
                std::span<const uint8_t> body) {
  store_le(frame, head_size + body.size(), 4);
  frame[4] = static_cast<uint8_t>(type);
  frame[5] = flags;
  store_le(frame + 6, 0, 2);
  store_le(frame + 8, seq, 8);
  store_le(frame + 16,
           checksum(frame, std::span<const uint8_t>(frame + kHeaderSize, head_size), body), 8);
}

void FrameReader::feed(std::span<const uint8_t> bytes) {
  std::span<uint8_t> room = space(bytes.size());
  if (!bytes.empty()) std::memcpy(room.data(), bytes.data(), bytes.size());
  filled(bytes.size());
}

std::span<uint8_t> FrameReader::space(size_t n) {
  // Compact lazily: only when the consumed prefix dominates, so reading stays amortized O(n).
  if (pos_ > 0 && pos_ * 2 >= end_) {
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
  }
  if (buf_.size() < end_ + n) buf_.resize(end_ + n);  // grows only: no zeroing per read
  return std::span<uint8_t>(buf_.data() + end_, n);
}

void FrameReader::filled(size_t used) { end_ += used; }

size_t FrameReader::pending_size() const {
  if (end_ - pos_ < 4) return 0;
  return kHeaderSize + std::min<uint64_t>(load_le(buf_.data() + pos_, 4), kMaxPayload);
}

Result<std::optional<FrameView>> FrameReader::next() {
  size_t avail = end_ - pos_;
  if (avail < kHeaderSize) return std::optional<FrameView>();
  const uint8_t* h = buf_.data() + pos_;
  uint32_t length = static_cast<uint32_t>(load_le(h, 4));
  uint8_t type = h[4];
  uint8_t flags = h[5];
  uint16_t reserved = static_cast<uint16_t>(load_le(h + 6, 2));
  uint64_t seq = load_le(h + 8, 8);
  uint64_t sum = load_le(h + 16, 8);
  if (length > kMaxPayload) {
    return fail(EPROTO, "frame length " + std::to_string(length) + " exceeds the maximum " +
                            std::to_string(kMaxPayload));
  }
  if (!is_known_type(type)) return fail(EPROTO, "unknown frame type " + std::to_string(type));
  if (reserved != 0 || (flags & ~kFlagZstd) != 0) {
    return fail(EPROTO, "reserved frame header bits are set");
  }
  if (seq != last_seq_ + 1) {
    return fail(EPROTO, "frame sequence " + std::to_string(seq) + " after " +
                            std::to_string(last_seq_) + " (replayed or lost frame)");
  }
  if (avail < kHeaderSize + length) return std::optional<FrameView>();
  std::span<const uint8_t> payload(h + kHeaderSize, length);
  if (checksum(h, payload) != sum) {
    return fail(EPROTO, std::string("bad checksum on ") + type_name(static_cast<MsgType>(type)) +
                            " frame " + std::to_string(seq));
  }
  pos_ += kHeaderSize + length;
  last_seq_ = seq;
  return std::optional<FrameView>(FrameView{static_cast<MsgType>(type), flags, seq, payload});
}

}  // namespace bkp::wire
