// The messages carried in frames, and their payload codecs (docs/PROTOCOL.md is the spec).
//
// Namespace operations name entries by volume-relative path ("a/b/c", "" is the volume root),
// valid at the operation's place in the stream. File data and file metadata name regular files
// by a 64-bit FileId that is stable for the file's life (renames, hard links), so an extent
// shipped after a rename still lands in the right file.
#pragma once

#include <sys/stat.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/wire/frame.h"

struct ZSTD_CCtx_s;  // zstd.h's compression context

namespace bkp::wire {

constexpr uint32_t kMagic = 0x46504B42;  // "BKPF" little-endian
constexpr uint16_t kVersion = 8;

enum class Role : uint8_t { kNode = 1, kReplica = 2, kControl = 3 };

struct Hello {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  Role role = Role::kNode;
  std::string name;       // node: host name of the volume; replica: replica name
  std::string path;       // node: absolute volume path; replica: empty
  uint64_t instance = 0;  // random per process start: a new instance means "my log was lost"
  std::string auth;       // reserved for authentication; empty in version 2
};

// Where a receiver stands in one stream (the answer to Hello on a node stream, to Select on a
// replica stream). The sender resumes exactly there: batch `committed + 1`, skipping its first
// `applied` items (common/stream/sender.h says what an item is).
struct Position {
  uint64_t committed = 0;     // last batch durably applied for this stream instance
  uint8_t need_baseline = 0;  // 1: the receiver has no usable state: send the whole tree first
  uint64_t applied = 0;       // Op frames of batch committed + 1 already applied

  bool operator==(const Position&) const = default;
};

struct HelloOk {
  uint16_t version = kVersion;
  Position position;  // node stream: where backupd stands; replica stream: unused (zero)
};

// Longest text a peer may put in a message meant for display (Error.text,
// NodeStatus.current_file): longer is EPROTO. Decoders also escape control characters in such
// text (\xNN), so a peer cannot drive an operator's terminal through logs or `bkptool status`.
constexpr size_t kMaxText = 4096;
// The most bytes one SnapshotData carries.
constexpr size_t kMaxSnapshotData = 1u << 20;

// The longest name an operator may give an authorised replica or operator (control protocol:
// replica_add, operator_add).
constexpr size_t kMaxPeerName = 64;
// The longest "ADDR:PORT" a peer may advertise (Usage::restore_address).
constexpr size_t kMaxAddress = 300;

// text with each control character (below 0x20, and 0x7f) written as \xNN.
std::string escape_controls(std::string_view text);

struct ErrorMsg {
  uint32_t code = 0;  // errno-style
  std::string text;
};

// What a connection backupd opens to a node is for (Attach.purpose).
enum class AttachPurpose : uint8_t {
  kStream = 0,    // the volume's change stream (one backupd at a time)
  kManifest = 1,  // one ManifestRequest answered from the node's tree, then closed (verify)
};

// First frame backupd sends on a connection it opened to a registered node. The node checks
// that it serves `path` (else Error ENOENT "serves /x, not /y") and answers with its Hello.
struct Attach {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  std::string path;        // the registered volume path
  uint64_t server_id = 0;  // random, persisted by backupd: which server is attaching
  std::string auth;        // reserved for authentication; empty in version 2
  AttachPurpose purpose = AttachPurpose::kStream;
};

// Node -> backupd, before each Commit and about once a second while idle: the lag.
struct NodeStatus {
  uint64_t pending_ops = 0;    // operations recorded and not yet acknowledged
  uint64_t pending_bytes = 0;  // dirty bytes recorded and not yet acknowledged
  uint64_t pending_files = 0;
  int64_t oldest_ns = 0;       // CLOCK_REALTIME of the oldest unacknowledged change; 0 if none
  std::string current_file;    // file being shipped now (volume-relative), "" if none
};

struct Select {  // replica stream only; answered with a Position
  std::string host;
  std::string path;
  uint64_t instance = 0;  // backupd's stream to this replica for this volume (new: baseline)
};

enum class OpKind : uint8_t {
  kMkdir = 1,        // path, mode, uid, gid
  kCreate = 2,       // path, id, mode, uid, gid: a new empty regular file
  kMknod = 3,        // path, mode (with S_IFIFO/S_IFSOCK/S_IFCHR/S_IFBLK), rdev, uid, gid
  kSymlink = 4,      // path, target, uid, gid, mtime
  kLink = 5,         // path (new name), target (existing name), id (0 when not a regular file)
  kUnlink = 6,       // path
  kRmdir = 7,        // path
  kRename = 8,       // path (from), target (to), flags (RENAME_NOREPLACE / RENAME_EXCHANGE)
  kTruncate = 9,     // id, size
  kAttr = 10,        // id != 0: that file; else path. mode (permission bits), uid, gid, times
  kSetXattr = 11,    // id or path, name, value
  kRemoveXattr = 12, // id or path, name
  kSyncBegin = 13,   // baseline starts: receiver notes every path named until kSyncEnd
  kSyncEnd = 14,     // baseline done: receiver removes every entry not named since kSyncBegin
  kKeep = 15,        // path, id, mode: a baseline names an entry the receiver already holds as
                     // it is; mode S_IFDIR: a directory with everything under it
  kPunch = 16,       // id, offset, size: [offset, offset+size) of the file becomes a hole
  kAllocate = 17,    // id, flags (kAllocate*), offset, size: fallocate(2) without punching
};
constexpr OpKind kLastOpKind = OpKind::kAllocate;

// kAllocate's flags: fallocate(2)'s FALLOC_FL_KEEP_SIZE and FALLOC_FL_ZERO_RANGE, by value.
constexpr uint32_t kAllocateKeepSize = 0x01;
constexpr uint32_t kAllocateZeroRange = 0x10;

const char* op_name(OpKind kind);

struct Op {
  OpKind kind = OpKind::kMkdir;
  std::string path;
  std::string target;
  uint64_t id = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t rdev = 0;
  uint32_t flags = 0;
  uint64_t size = 0;
  uint64_t offset = 0;  // kPunch, kAllocate
  int64_t atime_ns = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;  // kAttr by id: the source file's ctime when its data was read (0: none)
  std::string name;   // xattr name
  std::string value;  // xattr value

  bool operator==(const Op&) const = default;
};

// Time as the wire carries it: nanoseconds since the epoch.
int64_t to_ns(const struct timespec& ts);
// CLOCK_REALTIME now, in nanoseconds (the wire's time base, e.g. NodeStatus.oldest_ns).
int64_t realtime_ns();
// An Attr op carrying st's permission bits, owner and times; by id when id != 0, else by path.
// ctime_ns is left 0: only a shipped file's closing Attr carries one (shipper.h).
Op attr_from_stat(std::string path, uint64_t id, const struct stat& st);

// The decoded bytes are not copied out of a raw frame: `data` views the payload decode_write was
// given (which must outlive the Write), or `inflated` when the frame was compressed. Moving a
// Write keeps `data` valid (a moved vector keeps its buffer); copying is not allowed.
struct Write {
  Write() = default;
  Write(Write&&) = default;
  Write& operator=(Write&&) = default;
  Write(const Write&) = delete;
  Write& operator=(const Write&) = delete;

  uint64_t id = 0;
  uint64_t offset = 0;
  std::span<const uint8_t> data;
  std::vector<uint8_t> inflated;
};

// What a receiver holds at one path, as it answers a ManifestRequest (a reconcile: the sender
// then ships only what differs, see common/stream/reconcile.h).
struct ManifestEntry {
  std::string path;
  uint32_t mode = 0;  // st_mode, type included
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t rdev = 0;
  uint64_t id = 0;        // regular files: the FileId; else 0
  int64_t ctime_ns = 0;   // regular files: the source's ctime its content matches; 0: unknown
  std::string target;     // symlinks
  uint64_t xattr_digest = 0;  // changes::xattr_digest of all its extended attributes
  std::string xattr_names;    // their names, each followed by a NUL
  // Regular files, when the request asked (kManifestContent): XXH3-64 of the bytes (holes read
  // as zeros), never 0; else 0.
  uint64_t content = 0;

  bool operator==(const ManifestEntry&) const = default;
};

// Receiver -> sender, answering a ManifestRequest: entries in chunks, `last` on the final one.
struct Manifest {
  std::vector<ManifestEntry> entries;
  uint8_t last = 0;
};

// ManifestRequest.flags.
constexpr uint8_t kManifestContent = 0x01;  // digest every regular file's bytes (entry.content)
constexpr uint8_t kManifestVerify = 0x02;   // for a verify: no baseline follows
constexpr uint8_t kManifestFlags = kManifestContent | kManifestVerify;

struct ManifestRequest {
  uint8_t flags = 0;
};

// Sender -> receiver during a reconcile: digests of `count` blocks of the receiver's file `id`
// from block `first` on (block i covers [i*block_size, (i+1)*block_size) of the file).
struct DigestRequest {
  uint64_t id = 0;
  uint32_t block_size = 0;
  uint64_t first = 0;
  uint32_t count = 0;
};

// The answer: one XXH3-64 per block the file has (fewer than asked past its end; none if the
// receiver has no file with that id), with the file's size.
struct Digests {
  uint64_t id = 0;
  uint64_t size = 0;
  uint64_t first = 0;
  std::vector<uint64_t> digests;
};

// What a replica holds and how much more it may take (the answer to UsageRequest): backupd
// places volumes by it (server/placement.h). stored_bytes counts every block under the
// replica's root once (hard links once); free_bytes is what it may still write: the free space
// of its filesystem, capped by its configured capacity. measured 0: not counted yet (the
// replicator's first walk of its root is still running), the byte figures are then 0.
// restore_address: where the replicator serves its snapshot copies to bkptool ("ADDR:PORT";
// empty: it does not), so backupd can tell bkptool where else a snapshot can be fetched.
struct UsageRequest {};
struct Usage {
  uint8_t measured = 0;
  uint64_t stored_bytes = 0;
  uint64_t free_bytes = 0;
  std::string restore_address;

  bool operator==(const Usage&) const = default;
};

// Snapshot copies on replicas (server/snapshot_copies.h, replicator/snapshot_store.h), between
// batches of the replica stream. backupd asks once per volume and connection which snapshots a
// replica holds, then sends each missing one as Begin, Data..., End, answered by Stored.
struct SnapshotInventoryRequest {
  std::string host;
  std::string path;
};
struct SnapshotInventory {
  std::string host;
  std::string path;
  std::vector<std::string> ids;  // complete archives held, each a valid snapshot id
  // An archive of this volume the replica was receiving when a connection ended, and how many
  // of its bytes it holds (checked as far as whole parts go): backupd may go on from there
  // (SnapshotBegin::offset). "" and 0: none.
  std::string partial_id;
  uint64_t partial_bytes = 0;
};
// The archive's size, how many of the newest snapshots the replica keeps of the volume (older
// ones are deleted once this one is stored), and the SHA-256 of every part_size bytes
// (common/part_digests.h): exactly part_count(bytes, part_size) of them.
struct SnapshotBegin {
  std::string host;
  std::string path;
  std::string id;
  uint64_t bytes = 0;
  uint32_t keep = 0;
  uint32_t part_size = 0;
  std::vector<std::array<uint8_t, 32>> digests;
  uint64_t offset = 0;  // the first Data's offset: the replica's partial_bytes when resuming
};
// The next bytes of the archive begun, at offset (each Data follows the previous one).
struct SnapshotData {
  uint64_t offset = 0;
  std::span<const uint8_t> bytes;  // into the frame's payload (decode) or the caller's buffer
};
struct SnapshotEnd {};
// code 0: the archive is stored under its id, every part checked; else the errno why not (a
// part that does not match its digest: EBADMSG) and one sentence.
struct SnapshotStored {
  std::string id;
  uint32_t code = 0;
  std::string text;
};

// backupd -> replica, between batches: this replica no longer holds the volume (unregistered,
// or, later, its copy placed elsewhere). The replica closes the volume's tree and stream state;
// with purge it also deletes them. Answered with Dropped; a Select of the same volume later
// starts it again (from nothing after a purge).
struct Drop {
  std::string host;
  std::string path;
  uint8_t purge = 0;  // 0: close only (the copy stays on disk); 1: delete the copy too

  bool operator==(const Drop&) const = default;
};

// replica -> backupd: the answer to Drop, naming the same volume. code 0: done (also when the
// replica held nothing of it); else the errno why not, and one sentence (kMaxText, escaped).
struct Dropped {
  std::string host;
  std::string path;
  uint32_t code = 0;
  std::string text;

  bool operator==(const Dropped&) const = default;
};

struct Commit {
  uint64_t batch = 0;
};
struct Ack {
  uint64_t batch = 0;
};

void encode(const Hello& m, std::vector<uint8_t>& out);
void encode(const HelloOk& m, std::vector<uint8_t>& out);
void encode(const ErrorMsg& m, std::vector<uint8_t>& out);
void encode(const Attach& m, std::vector<uint8_t>& out);
void encode(const NodeStatus& m, std::vector<uint8_t>& out);
void encode(const Select& m, std::vector<uint8_t>& out);
void encode(const Position& m, std::vector<uint8_t>& out);
void encode(const Op& m, std::vector<uint8_t>& out);
void encode(const Commit& m, std::vector<uint8_t>& out);
void encode(const ManifestRequest& m, std::vector<uint8_t>& out);
void encode(const DigestRequest& m, std::vector<uint8_t>& out);
void encode(const Digests& m, std::vector<uint8_t>& out);
void encode(const Manifest& m, std::vector<uint8_t>& out);
// The encoded size of one entry in a Manifest payload (to fill frames up to a bound).
size_t encoded_size(const ManifestEntry& e);
void encode(const Ack& m, std::vector<uint8_t>& out);
void encode(const SnapshotInventoryRequest& m, std::vector<uint8_t>& out);
void encode(const SnapshotInventory& m, std::vector<uint8_t>& out);
void encode(const SnapshotBegin& m, std::vector<uint8_t>& out);
void encode(const SnapshotData& m, std::vector<uint8_t>& out);
void encode(const SnapshotEnd& m, std::vector<uint8_t>& out);
void encode(const SnapshotStored& m, std::vector<uint8_t>& out);
void encode(const UsageRequest& m, std::vector<uint8_t>& out);
void encode(const Usage& m, std::vector<uint8_t>& out);
void encode(const Drop& m, std::vector<uint8_t>& out);
void encode(const Dropped& m, std::vector<uint8_t>& out);

// Each decoder rejects (EPROTO) short payloads, trailing bytes and out-of-range enums. Paths are
// not validated here; the applier validates them (common/path.h).
Result<Hello> decode_hello(std::span<const uint8_t> payload);
Result<HelloOk> decode_hello_ok(std::span<const uint8_t> payload);
Result<ErrorMsg> decode_error(std::span<const uint8_t> payload);
Result<Attach> decode_attach(std::span<const uint8_t> payload);
Result<NodeStatus> decode_node_status(std::span<const uint8_t> payload);
Result<Select> decode_select(std::span<const uint8_t> payload);
Result<Position> decode_position(std::span<const uint8_t> payload);
Result<Op> decode_op(std::span<const uint8_t> payload);
Result<Commit> decode_commit(std::span<const uint8_t> payload);
Result<Ack> decode_ack(std::span<const uint8_t> payload);
Result<ManifestRequest> decode_manifest_request(std::span<const uint8_t> payload);
Result<Manifest> decode_manifest(std::span<const uint8_t> payload);
Result<DigestRequest> decode_digest_request(std::span<const uint8_t> payload);
Result<Digests> decode_digests(std::span<const uint8_t> payload);
// Ids are checked (validate_snapshot_id), Begin's digests against its size and part size
// (1 MiB to 64 MiB, a power of two), Data's length against kMaxSnapshotData.
Result<SnapshotInventoryRequest> decode_snapshot_inventory_request(std::span<const uint8_t> payload);
Result<SnapshotInventory> decode_snapshot_inventory(std::span<const uint8_t> payload);
Result<SnapshotBegin> decode_snapshot_begin(std::span<const uint8_t> payload);
Result<SnapshotData> decode_snapshot_data(std::span<const uint8_t> payload);
Result<SnapshotEnd> decode_snapshot_end(std::span<const uint8_t> payload);
Result<SnapshotStored> decode_snapshot_stored(std::span<const uint8_t> payload);
Result<UsageRequest> decode_usage_request(std::span<const uint8_t> payload);
Result<Usage> decode_usage(std::span<const uint8_t> payload);
Result<Drop> decode_drop(std::span<const uint8_t> payload);
Result<Dropped> decode_dropped(std::span<const uint8_t> payload);

// Write payloads: u64 id, u64 offset, u32 raw length, then the bytes; compressed with zstd
// (frame flag kFlagZstd) when that saves at least 1/8.
//
// Compression is adaptive: a chunk that did not compress makes the encoder send the next ones
// raw without trying (1, then 2, 4 ... up to 64 chunks while the data keeps failing; any success
// resets it), so random or already-compressed data costs almost no zstd CPU on the sender — on a
// small machine that CPU is taken from the application — while one chunk in 64 keeps checking
// whether the data changed nature. One zstd context is reused. Not thread-safe: one per stream.
constexpr size_t kWriteHeader = 20;  // u64 id, u64 offset, u32 raw length

class WriteEncoder {
 public:
  WriteEncoder();
  ~WriteEncoder();
  WriteEncoder(const WriteEncoder&) = delete;
  WriteEncoder& operator=(const WriteEncoder&) = delete;

  // Appends the payload to out; returns the frame flags.
  uint8_t encode(uint64_t id, uint64_t offset, std::span<const uint8_t> data,
                 std::vector<uint8_t>& out);
  // The same into room (at least kWriteHeader + data.size() bytes): returns the payload size
  // and sets flags. When raw_next() said so, data may already sit at room + kWriteHeader (read
  // there in place); it is then not copied. Otherwise it must not overlap room.
  size_t encode_into(uint64_t id, uint64_t offset, std::span<const uint8_t> data,
                     std::span<uint8_t> room, uint8_t& flags);
  // True when a chunk of n bytes will go raw without a compression attempt, so the caller can
  // read it straight into the frame, or send it from where it is (raw_head).
  bool raw_next(size_t n) const;
  // For a chunk of n bytes that raw_next() said goes raw: writes the payload's first
  // kWriteHeader bytes into head; the chunk's bytes follow unchanged (flags 0).
  void raw_head(uint64_t id, uint64_t offset, size_t n, std::span<uint8_t> head);

 private:
  ::ZSTD_CCtx_s* ctx_;
  uint32_t skip_ = 0;     // chunks still to send raw without trying
  uint32_t backoff_ = 0;  // the next skip after a failure
};
Result<Write> decode_write(uint8_t flags, std::span<const uint8_t> payload);

// A Write frame's data as it travelled: the frame's flags and the payload's bytes after the
// kWriteHeader (one zstd frame, or raw), kept to be sent again unchanged: backupd forwards a
// node's chunks to every replica as they came (server/forward_cache.h).
struct EncodedWrite {
  uint8_t flags = 0;
  uint32_t raw_length = 0;
  std::vector<uint8_t> body;
};
// The first kWriteHeader bytes of the payload of a Write of e at offset of file id; e.body
// follows them. The frame's flags are e.flags.
void encode_write_head(uint64_t id, uint64_t offset, const EncodedWrite& e, std::span<uint8_t> head);

}  // namespace bkp::wire
