// Payload codecs for every message. Each Op kind encodes only the fields it uses, in a fixed
// order listed in docs/PROTOCOL.md; decoders reject short payloads, trailing bytes and unknown
// enum values, so a peer that disagrees about the format fails loudly on the first frame.
#include "common/wire/messages.h"

#include <time.h>
#include <zstd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>

#include "common/path.h"
#include "common/wire/codec.h"

namespace bkp::wire {
namespace {

tl::unexpected<Error> malformed(const char* what) {
  return fail(EPROTO, std::string("malformed ") + what + " message");
}

bool is_control(char c) { return (c >= 0 && c < 0x20) || c == 0x7f; }

// Text from a peer for display: bounded (false if longer) and with control characters escaped.
bool printable(std::string& text) {
  if (text.size() > kMaxText) return false;
  if (std::any_of(text.begin(), text.end(), is_control)) text = escape_controls(text);
  return true;
}

template <class T>
Result<T> finish(const Decoder& d, T value, const char* what) {
  if (!d.ok() || !d.at_end()) return malformed(what);
  return value;
}

// Which optional field groups an op kind carries.
struct Fields {
  bool path = false, target = false, id = false, mode = false, owner = false, rdev = false,
       flags = false, size = false, offset = false, times = false, ctime = false, xname = false,
       xvalue = false;
};

Fields fields_of(OpKind k) {
  Fields f;
  switch (k) {
    case OpKind::kMkdir: f.path = f.mode = f.owner = true; break;
    case OpKind::kCreate: f.path = f.id = f.mode = f.owner = true; break;
    case OpKind::kMknod: f.path = f.mode = f.rdev = f.owner = true; break;
    case OpKind::kSymlink: f.path = f.target = f.owner = f.times = true; break;
    case OpKind::kLink: f.path = f.target = f.id = true; break;
    case OpKind::kUnlink:
    case OpKind::kRmdir: f.path = true; break;
    case OpKind::kRename: f.path = f.target = f.flags = true; break;
    case OpKind::kTruncate: f.id = f.size = true; break;
    case OpKind::kAttr: f.path = f.id = f.mode = f.owner = f.times = f.ctime = true; break;
    case OpKind::kSetXattr: f.path = f.id = f.flags = f.xname = f.xvalue = true; break;
    case OpKind::kRemoveXattr: f.path = f.id = f.xname = true; break;
    case OpKind::kSyncBegin:
    case OpKind::kSyncEnd: break;
    case OpKind::kKeep: f.path = f.id = f.mode = true; break;
    case OpKind::kPunch: f.id = f.offset = f.size = true; break;
    case OpKind::kAllocate: f.id = f.flags = f.offset = f.size = true; break;
  }
  return f;
}

bool is_known_op(uint8_t k) { return k >= 1 && k <= static_cast<uint8_t>(kLastOpKind); }

}  // namespace

std::string escape_controls(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (is_control(c)) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out;
}

const char* op_name(OpKind kind) {
  static const char* const kNames[] = {"?",      "mkdir",  "create", "mknod",   "symlink",
                                       "link",   "unlink", "rmdir",  "rename",  "truncate",
                                       "attr",   "setxattr", "removexattr", "sync-begin",
                                       "sync-end", "keep", "punch", "allocate"};
  auto i = static_cast<uint8_t>(kind);
  return is_known_op(i) ? kNames[i] : "?";
}

int64_t to_ns(const struct timespec& ts) {
  // int64 nanoseconds span 1677-09-21 to 2262-04-11; ext4 keeps times to 2446. Past the span a
  // time is sent as its nearest end, never wrapped (which made 2400 arrive as 1901).
  constexpr int64_t kMaxSec = std::numeric_limits<int64_t>::max() / 1000000000 - 1;
  if (ts.tv_sec > kMaxSec) return std::numeric_limits<int64_t>::max();
  if (ts.tv_sec < -kMaxSec) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t realtime_ns() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return to_ns(ts);
}

Op attr_from_stat(std::string path, uint64_t id, const struct stat& st) {
  Op op;
  op.kind = OpKind::kAttr;
  op.path = std::move(path);
  op.id = id;
  op.mode = st.st_mode & 07777;
  op.uid = st.st_uid;
  op.gid = st.st_gid;
  op.atime_ns = to_ns(st.st_atim);
  op.mtime_ns = to_ns(st.st_mtim);
  return op;
}

void encode(const Hello& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u32(m.magic);
  e.u16(m.version);
  e.u8(static_cast<uint8_t>(m.role));
  e.str(m.name);
  e.str(m.path);
  e.u64(m.instance);
  e.str(m.auth);
}

Result<Hello> decode_hello(std::span<const uint8_t> p) {
  Decoder d(p);
  Hello m;
  m.magic = d.u32();
  m.version = d.u16();
  uint8_t role = d.u8();
  m.name = d.str();
  m.path = d.str();
  m.instance = d.u64();
  m.auth = d.str();
  if (d.ok() && m.magic != kMagic) return fail(EPROTO, "bad magic in Hello: not a backupfs peer");
  if (d.ok() && m.version != kVersion) {
    return fail(EPROTO, "unsupported protocol version " + std::to_string(m.version) +
                            " (this side speaks " + std::to_string(kVersion) + ")");
  }
  if (role < 1 || role > 3) return malformed("Hello (role)");
  m.role = static_cast<Role>(role);
  return finish(d, m, "Hello");
}

namespace {
void put_position(Encoder& e, const Position& m) {
  e.u64(m.committed);
  e.u8(m.need_baseline);
  e.u64(m.applied);
}

Position get_position(Decoder& d) {
  Position m;
  m.committed = d.u64();
  m.need_baseline = d.u8();
  m.applied = d.u64();
  return m;
}
}  // namespace

void encode(const HelloOk& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u16(m.version);
  put_position(e, m.position);
}

Result<HelloOk> decode_hello_ok(std::span<const uint8_t> p) {
  Decoder d(p);
  HelloOk m;
  m.version = d.u16();
  m.position = get_position(d);
  if (d.ok() && m.position.need_baseline > 1) return malformed("HelloOk (need_baseline)");
  return finish(d, m, "HelloOk");
}

void encode(const Position& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  put_position(e, m);
}

Result<Position> decode_position(std::span<const uint8_t> p) {
  Decoder d(p);
  Position m = get_position(d);
  if (d.ok() && m.need_baseline > 1) return malformed("Position (need_baseline)");
  return finish(d, m, "Position");
}

void encode(const ErrorMsg& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u32(m.code);
  e.str(m.text);
}

Result<ErrorMsg> decode_error(std::span<const uint8_t> p) {
  Decoder d(p);
  ErrorMsg m;
  m.code = d.u32();
  m.text = d.str();
  if (d.ok() && !printable(m.text)) return malformed("Error (text too long)");
  return finish(d, m, "Error");
}

void encode(const Attach& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u32(m.magic);
  e.u16(m.version);
  e.str(m.path);
  e.u64(m.server_id);
  e.str(m.auth);
  e.u8(static_cast<uint8_t>(m.purpose));
}

Result<Attach> decode_attach(std::span<const uint8_t> p) {
  Decoder d(p);
  Attach m;
  m.magic = d.u32();
  m.version = d.u16();
  m.path = d.str();
  m.server_id = d.u64();
  m.auth = d.str();
  uint8_t purpose = d.u8();
  if (d.ok() && m.magic != kMagic) return fail(EPROTO, "bad magic in Attach: not a backupd");
  if (d.ok() && m.version != kVersion) {
    return fail(EPROTO, "unsupported protocol version " + std::to_string(m.version) +
                            " (this side speaks " + std::to_string(kVersion) + ")");
  }
  if (purpose > static_cast<uint8_t>(AttachPurpose::kManifest)) return malformed("Attach");
  m.purpose = static_cast<AttachPurpose>(purpose);
  return finish(d, m, "Attach");
}

void encode(const NodeStatus& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u64(m.pending_ops);
  e.u64(m.pending_bytes);
  e.u64(m.pending_files);
  e.i64(m.oldest_ns);
  e.str(m.current_file);
}

Result<NodeStatus> decode_node_status(std::span<const uint8_t> p) {
  Decoder d(p);
  NodeStatus m;
  m.pending_ops = d.u64();
  m.pending_bytes = d.u64();
  m.pending_files = d.u64();
  m.oldest_ns = d.i64();
  m.current_file = d.str();
  if (d.ok() && !printable(m.current_file)) return malformed("NodeStatus (current_file too long)");
  return finish(d, m, "NodeStatus");
}

void encode(const Select& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.str(m.host);
  e.str(m.path);
  e.u64(m.instance);
}

Result<Select> decode_select(std::span<const uint8_t> p) {
  Decoder d(p);
  Select m;
  m.host = d.str();
  m.path = d.str();
  m.instance = d.u64();
  return finish(d, m, "Select");
}

void encode(const Op& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u8(static_cast<uint8_t>(m.kind));
  Fields f = fields_of(m.kind);
  if (f.path) e.str(m.path);
  if (f.target) e.str(m.target);
  if (f.id) e.u64(m.id);
  if (f.mode) e.u32(m.mode);
  if (f.owner) {
    e.u32(m.uid);
    e.u32(m.gid);
  }
  if (f.rdev) e.u64(m.rdev);
  if (f.flags) e.u32(m.flags);
  if (f.offset) e.u64(m.offset);
  if (f.size) e.u64(m.size);
  if (f.times) {
    e.i64(m.atime_ns);
    e.i64(m.mtime_ns);
  }
  if (f.ctime) e.i64(m.ctime_ns);
  if (f.xname) e.str(m.name);
  if (f.xvalue) e.str(m.value);
}

Result<Op> decode_op(std::span<const uint8_t> p) {
  Decoder d(p);
  uint8_t kind = d.u8();
  if (!d.ok() || !is_known_op(kind)) {
    return fail(EPROTO, "unknown operation kind " + std::to_string(kind));
  }
  Op m;
  m.kind = static_cast<OpKind>(kind);
  Fields f = fields_of(m.kind);
  if (f.path) m.path = d.str();
  if (f.target) m.target = d.str();
  if (f.id) m.id = d.u64();
  if (f.mode) m.mode = d.u32();
  if (f.owner) {
    m.uid = d.u32();
    m.gid = d.u32();
  }
  if (f.rdev) m.rdev = d.u64();
  if (f.flags) m.flags = d.u32();
  if (f.offset) m.offset = d.u64();
  if (f.size) m.size = d.u64();
  if (f.times) {
    m.atime_ns = d.i64();
    m.mtime_ns = d.i64();
  }
  if (f.ctime) m.ctime_ns = d.i64();
  if (f.xname) m.name = d.str();
  if (f.xvalue) m.value = d.str();
  return finish(d, m, "Op");
}

void encode(const Commit& m, std::vector<uint8_t>& out) { Encoder(out).u64(m.batch); }

void encode(const ManifestRequest& m, std::vector<uint8_t>& out) { Encoder(out).u8(m.flags); }

Result<ManifestRequest> decode_manifest_request(std::span<const uint8_t> p) {
  Decoder d(p);
  ManifestRequest m{d.u8()};
  if (d.ok() && (m.flags & ~kManifestFlags) != 0) return malformed("ManifestRequest");
  return finish(d, m, "ManifestRequest");
}

void encode(const DigestRequest& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u64(m.id);
  e.u32(m.block_size);
  e.u64(m.first);
  e.u32(m.count);
}

Result<DigestRequest> decode_digest_request(std::span<const uint8_t> p) {
  Decoder d(p);
  DigestRequest m;
  m.id = d.u64();
  m.block_size = d.u32();
  m.first = d.u64();
  m.count = d.u32();
  return finish(d, m, "DigestRequest");
}

void encode(const Digests& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u64(m.id);
  e.u64(m.size);
  e.u64(m.first);
  e.u32(static_cast<uint32_t>(m.digests.size()));
  for (uint64_t x : m.digests) e.u64(x);
}

Result<Digests> decode_digests(std::span<const uint8_t> p) {
  Decoder d(p);
  Digests m;
  m.id = d.u64();
  m.size = d.u64();
  m.first = d.u64();
  uint32_t n = d.u32();
  if (!d.ok() || n > p.size() / 8) return malformed("Digests");
  m.digests.reserve(n);
  for (uint32_t i = 0; i < n; ++i) m.digests.push_back(d.u64());
  return finish(d, std::move(m), "Digests");
}

size_t encoded_size(const ManifestEntry& m) {
  return 4 + m.path.size() + 3 * 4 + 8 * 7 + 4 + m.target.size() + 4 + m.xattr_names.size();
}

void encode(const Manifest& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u8(m.last);
  e.u32(static_cast<uint32_t>(m.entries.size()));
  for (const auto& x : m.entries) {
    e.str(x.path);
    e.u32(x.mode);
    e.u32(x.uid);
    e.u32(x.gid);
    e.u64(x.size);
    e.i64(x.mtime_ns);
    e.u64(x.rdev);
    e.u64(x.id);
    e.i64(x.ctime_ns);
    e.str(x.target);
    e.u64(x.xattr_digest);
    e.str(x.xattr_names);
    e.u64(x.content);
  }
}

Result<Manifest> decode_manifest(std::span<const uint8_t> p) {
  Decoder d(p);
  Manifest m;
  m.last = d.u8();
  uint32_t n = d.u32();
  // Each entry takes at least 76 bytes: a count beyond what the payload can hold is a lie.
  if (!d.ok() || m.last > 1 || n > p.size() / 76) return malformed("Manifest");
  m.entries.reserve(n);
  for (uint32_t i = 0; i < n && d.ok(); ++i) {
    ManifestEntry x;
    x.path = d.str();
    x.mode = d.u32();
    x.uid = d.u32();
    x.gid = d.u32();
    x.size = d.u64();
    x.mtime_ns = d.i64();
    x.rdev = d.u64();
    x.id = d.u64();
    x.ctime_ns = d.i64();
    x.target = d.str();
    x.xattr_digest = d.u64();
    x.xattr_names = d.str();
    x.content = d.u64();
    m.entries.push_back(std::move(x));
  }
  return finish(d, std::move(m), "Manifest");
}
void encode(const Ack& m, std::vector<uint8_t>& out) { Encoder(out).u64(m.batch); }

Result<Commit> decode_commit(std::span<const uint8_t> p) {
  Decoder d(p);
  Commit m{d.u64()};
  return finish(d, m, "Commit");
}

void encode(const SnapshotInventoryRequest& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.str(m.host);
  e.str(m.path);
}

Result<SnapshotInventoryRequest> decode_snapshot_inventory_request(std::span<const uint8_t> p) {
  Decoder d(p);
  SnapshotInventoryRequest m;
  m.host = d.str();
  m.path = d.str();
  return finish(d, std::move(m), "SnapshotInventoryRequest");
}

void encode(const SnapshotInventory& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.str(m.host);
  e.str(m.path);
  e.u32(static_cast<uint32_t>(m.ids.size()));
  for (const auto& id : m.ids) e.str(id);
  e.str(m.partial_id);
  e.u64(m.partial_bytes);
}

Result<SnapshotInventory> decode_snapshot_inventory(std::span<const uint8_t> p) {
  Decoder d(p);
  SnapshotInventory m;
  m.host = d.str();
  m.path = d.str();
  uint32_t n = d.u32();
  if (!d.ok() || n > p.size() / 24) return malformed("SnapshotInventory");
  for (uint32_t i = 0; i < n && d.ok(); ++i) {
    m.ids.push_back(d.str());
    if (d.ok() && !validate_snapshot_id(m.ids.back())) return malformed("SnapshotInventory (id)");
  }
  m.partial_id = d.str();
  m.partial_bytes = d.u64();
  if (d.ok() && (m.partial_id.empty() ? m.partial_bytes != 0
                                      : !validate_snapshot_id(m.partial_id))) {
    return malformed("SnapshotInventory (partial)");
  }
  return finish(d, std::move(m), "SnapshotInventory");
}

void encode(const SnapshotBegin& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.str(m.host);
  e.str(m.path);
  e.str(m.id);
  e.u64(m.bytes);
  e.u32(m.keep);
  e.u32(m.part_size);
  e.u64(m.offset);
  e.u32(static_cast<uint32_t>(m.digests.size()));
  for (const auto& dg : m.digests) e.bytes(dg);
}

Result<SnapshotBegin> decode_snapshot_begin(std::span<const uint8_t> p) {
  Decoder d(p);
  SnapshotBegin m;
  m.host = d.str();
  m.path = d.str();
  m.id = d.str();
  m.bytes = d.u64();
  m.keep = d.u32();
  m.part_size = d.u32();
  m.offset = d.u64();
  uint32_t n = d.u32();
  if (!d.ok()) return malformed("SnapshotBegin");
  if (m.offset > m.bytes) return malformed("SnapshotBegin (offset)");
  if (!validate_snapshot_id(m.id)) return malformed("SnapshotBegin (id)");
  const auto rest = d.rest();
  const bool power_of_two = m.part_size != 0 && (m.part_size & (m.part_size - 1)) == 0;
  if (!power_of_two || m.part_size < (1u << 20) || m.part_size > (64u << 20) || m.keep == 0 ||
      m.bytes > (uint64_t{1} << 50) || n != (m.bytes + m.part_size - 1) / m.part_size ||
      rest.size() != uint64_t{n} * 32) {
    return malformed("SnapshotBegin (size, part size, keep or digests)");
  }
  m.digests.resize(n);
  for (uint32_t i = 0; i < n; ++i) std::memcpy(m.digests[i].data(), rest.data() + 32 * i, 32);
  return m;
}

void encode(const SnapshotData& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u64(m.offset);
  e.bytes(m.bytes);
}

Result<SnapshotData> decode_snapshot_data(std::span<const uint8_t> p) {
  Decoder d(p);
  SnapshotData m;
  m.offset = d.u64();
  if (!d.ok()) return malformed("SnapshotData");
  m.bytes = d.rest();
  if (m.bytes.empty() || m.bytes.size() > kMaxSnapshotData) return malformed("SnapshotData (length)");
  return m;
}

void encode(const SnapshotEnd&, std::vector<uint8_t>&) {}

Result<SnapshotEnd> decode_snapshot_end(std::span<const uint8_t> p) {
  Decoder d(p);
  return finish(d, SnapshotEnd{}, "SnapshotEnd");
}

void encode(const SnapshotStored& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.str(m.id);
  e.u32(m.code);
  e.str(m.text);
}

Result<SnapshotStored> decode_snapshot_stored(std::span<const uint8_t> p) {
  Decoder d(p);
  SnapshotStored m;
  m.id = d.str();
  m.code = d.u32();
  m.text = d.str();
  if (d.ok() && (!validate_snapshot_id(m.id) || m.text.size() > kMaxText ||
                 (m.code == 0) != m.text.empty())) {
    return malformed("SnapshotStored");
  }
  return finish(d, std::move(m), "SnapshotStored");
}

void encode(const UsageRequest&, std::vector<uint8_t>&) {}

Result<UsageRequest> decode_usage_request(std::span<const uint8_t> p) {
  Decoder d(p);
  return finish(d, UsageRequest{}, "UsageRequest");
}

void encode(const Usage& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.u8(m.measured);
  e.u64(m.stored_bytes);
  e.u64(m.free_bytes);
  e.str(m.restore_address);
}

Result<Usage> decode_usage(std::span<const uint8_t> p) {
  Decoder d(p);
  Usage m;
  m.measured = d.u8();
  m.stored_bytes = d.u64();
  m.free_bytes = d.u64();
  m.restore_address = d.str();
  if (d.ok() && m.measured > 1) return malformed("Usage (measured)");
  if (d.ok() && m.restore_address.size() > kMaxAddress) return malformed("Usage (address)");
  return finish(d, m, "Usage");
}

Result<Ack> decode_ack(std::span<const uint8_t> p) {
  Decoder d(p);
  Ack m{d.u64()};
  return finish(d, m, "Ack");
}

void encode(const Drop& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.str(m.host);
  e.str(m.path);
  e.u8(m.purge);
}

Result<Drop> decode_drop(std::span<const uint8_t> p) {
  Decoder d(p);
  Drop m;
  m.host = d.str();
  m.path = d.str();
  m.purge = d.u8();
  if (d.ok() && m.purge > 1) return malformed("Drop (purge)");
  return finish(d, m, "Drop");
}

void encode(const Dropped& m, std::vector<uint8_t>& out) {
  Encoder e(out);
  e.str(m.host);
  e.str(m.path);
  e.u32(m.code);
  e.str(m.text);
}

Result<Dropped> decode_dropped(std::span<const uint8_t> p) {
  Decoder d(p);
  Dropped m;
  m.host = d.str();
  m.path = d.str();
  m.code = d.u32();
  m.text = d.str();
  if (d.ok() && !printable(m.text)) return malformed("Dropped (text too long)");
  if (d.ok() && (m.code == 0) != m.text.empty()) {
    return malformed("Dropped (a failure needs its reason, a success has none)");
  }
  return finish(d, m, "Dropped");
}

namespace {
constexpr uint32_t kMaxSkip = 64;

void put_write_header(std::span<uint8_t> room, uint64_t id, uint64_t offset, uint32_t raw_length) {
  auto put = [&](size_t at, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) room[at + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  put(0, id, 8);
  put(8, offset, 8);
  put(16, raw_length, 4);
}
}  // namespace

WriteEncoder::WriteEncoder() : ctx_(ZSTD_createCCtx()) {
  if (ctx_) ZSTD_CCtx_setParameter(ctx_, ZSTD_c_compressionLevel, 1);
}

WriteEncoder::~WriteEncoder() { ZSTD_freeCCtx(ctx_); }

uint8_t WriteEncoder::encode(uint64_t id, uint64_t offset, std::span<const uint8_t> data,
                             std::vector<uint8_t>& out) {
  size_t start = out.size();
  out.resize(start + kWriteHeader + data.size());
  uint8_t flags = 0;
  size_t n = encode_into(id, offset, data, std::span<uint8_t>(out.data() + start, out.size() - start),
                         flags);
  out.resize(start + n);
  return flags;
}

bool WriteEncoder::raw_next(size_t n) const { return n < 512 || ctx_ == nullptr || skip_ > 0; }

void WriteEncoder::raw_head(uint64_t id, uint64_t offset, size_t n, std::span<uint8_t> head) {
  put_write_header(head, id, offset, static_cast<uint32_t>(n));
  if (skip_ > 0) --skip_;  // as encode_into counts a raw chunk
}

size_t WriteEncoder::encode_into(uint64_t id, uint64_t offset, std::span<const uint8_t> data,
                                 std::span<uint8_t> room, uint8_t& flags) {
  put_write_header(room, id, offset, static_cast<uint32_t>(data.size()));
  uint8_t* body = room.data() + kWriteHeader;
  flags = 0;
  if (raw_next(data.size())) {
    if (skip_ > 0) --skip_;
  } else {
    // Straight into the frame (data is elsewhere when compression is tried: raw_next()), with
    // room for only what saves at least 1/8: anything larger fails and goes raw.
    size_t limit = data.size() - data.size() / 8;
    size_t n = ZSTD_compress2(ctx_, body, limit, data.data(), data.size());
    if (!ZSTD_isError(n)) {
      backoff_ = 0;
      flags = kFlagZstd;
      return kWriteHeader + n;
    }
    backoff_ = backoff_ == 0 ? 1 : std::min(backoff_ * 2, kMaxSkip);
    skip_ = backoff_;
  }
  if (data.data() != body && !data.empty()) std::memmove(body, data.data(), data.size());
  return kWriteHeader + data.size();
}

void encode_write_head(uint64_t id, uint64_t offset, const EncodedWrite& e, std::span<uint8_t> head) {
  put_write_header(head, id, offset, e.raw_length);
}

Result<Write> decode_write(uint8_t flags, std::span<const uint8_t> p) {
  Decoder d(p);
  Write w;
  w.id = d.u64();
  w.offset = d.u64();
  uint32_t raw = d.u32();
  if (!d.ok()) return malformed("Write");
  if (raw > kMaxPayload) return fail(EPROTO, "Write raw length exceeds the maximum");
  auto body = d.rest();
  if (flags & kFlagZstd) {
    unsigned long long content = ZSTD_getFrameContentSize(body.data(), body.size());
    if (content != raw) return fail(EPROTO, "Write: compressed size does not match raw length");
    w.inflated.resize(raw);
    // One decompression context per receiving thread, reused (creating one costs more than
    // decompressing a small chunk).
    thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(),
                                                                         ZSTD_freeDCtx);
    if (!dctx) return fail(ENOMEM, "Write: no zstd context");
    size_t n = ZSTD_decompressDCtx(dctx.get(), w.inflated.data(), raw, body.data(), body.size());
    if (ZSTD_isError(n) || n != raw) return fail(EPROTO, "Write: corrupt zstd payload");
    w.data = w.inflated;
  } else {
    if (body.size() != raw) return malformed("Write (length)");
    w.data = body;
  }
  if (w.offset + raw < w.offset) return fail(EPROTO, "Write: offset overflows");
  return w;
}

}  // namespace bkp::wire
