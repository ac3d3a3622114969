// Message codecs: every message and every operation kind survives encode -> decode unchanged;
// Write compresses only when it pays and always restores the exact bytes; and any payload that
// is short, has trailing bytes or names an out-of-range enum is rejected.
#include "common/wire/messages.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <random>
#include <set>
#include <limits>
#include <string>
#include <vector>

namespace bkp::wire {
namespace {

using Bytes = std::vector<uint8_t>;

template <class M>
Bytes encoded(const M& m) {
  Bytes out;
  encode(m, out);
  return out;
}

Bytes random_data(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Every strict prefix and one extra trailing byte must fail to decode.
template <class Decode>
void expect_only_exact_length_decodes(const Bytes& good, Decode decode, const std::string& what) {
  ASSERT_TRUE(decode(good)) << what << ": the untouched payload must decode";
  for (size_t cut = 0; cut < good.size(); ++cut) {
    auto r = decode(Bytes(good.begin(), good.begin() + cut));
    EXPECT_FALSE(r) << what << ": accepted a payload truncated to " << cut << " of " << good.size()
                    << " bytes";
    if (!r) {
      EXPECT_EQ(r.error().code, EPROTO) << what;
    }
  }
  Bytes longer = good;
  longer.push_back(0);
  EXPECT_FALSE(decode(longer)) << what << ": accepted a trailing byte";
}

// The index of the single byte in which two encodings differ (both the same length).
size_t differing_byte(const Bytes& a, const Bytes& b) {
  EXPECT_EQ(a.size(), b.size());
  size_t at = a.size();
  int count = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] != b[i]) {
      at = i;
      ++count;
    }
  }
  EXPECT_EQ(count, 1);
  return at;
}

Hello sample_hello() {
  Hello h;
  h.role = Role::kReplica;
  h.name = "web1.example.com";
  h.path = "/srv/my app";
  h.instance = 0x0123456789ABCDEFull;
  h.auth = "";
  return h;
}

TEST(MessagesTest, HelloRoundTrips) {
  Hello h = sample_hello();
  h.auth = std::string("tok\0en", 6);
  auto d = decode_hello(encoded(h));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->magic, kMagic);
  EXPECT_EQ(d->version, kVersion);
  EXPECT_EQ(d->role, Role::kReplica);
  EXPECT_EQ(d->name, h.name);
  EXPECT_EQ(d->path, h.path);
  EXPECT_EQ(d->instance, h.instance);
  EXPECT_EQ(d->auth, h.auth);
}

// A peer of the previous version (6: no Drop) learns why it is refused, in words naming both.
TEST(MessagesTest, AHelloOfAnotherVersionIsRefusedByName) {
  Hello old = sample_hello();
  old.version = kVersion - 1;
  auto d = decode_hello(encoded(old));
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, EPROTO);
  EXPECT_NE(d.error().message.find("unsupported protocol version " + std::to_string(kVersion - 1) +
                                   " (this side speaks " + std::to_string(kVersion) + ")"),
            std::string::npos)
      << d.error().message;
}

TEST(MessagesTest, HelloOkRoundTrips) {
  HelloOk m;
  m.position = Position{987654321, 1, 77};
  auto d = decode_hello_ok(encoded(m));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->version, kVersion);
  EXPECT_EQ(d->position, (Position{987654321, 1, 77}));
}

TEST(MessagesTest, PositionRoundTripsAndRejectsABadFlag) {
  auto d = decode_position(encoded(Position{5, 0, ~uint64_t{0}}));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(*d, (Position{5, 0, ~uint64_t{0}}));
  auto bad = decode_position(encoded(Position{5, 2, 0}));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EPROTO);
}

TEST(MessagesTest, ErrorRoundTrips) {
  ErrorMsg m{EPROTO, "bad frame: checksum mismatch"};
  auto d = decode_error(encoded(m));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->code, static_cast<uint32_t>(EPROTO));
  EXPECT_EQ(d->text, m.text);
}

TEST(MessagesTest, SelectRoundTrips) {
  Select m{"web1", "/srv/app", 0x1122334455667788};
  auto d = decode_select(encoded(m));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->host, "web1");
  EXPECT_EQ(d->path, "/srv/app");
  EXPECT_EQ(d->instance, 0x1122334455667788u);
}

TEST(MessagesTest, DropAndDroppedRoundTrip) {
  for (uint8_t purge : {0, 1}) {
    Drop m{"web1", "/srv/my app", purge};
    auto d = decode_drop(encoded(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(*d, m);
  }
  for (const Dropped& m : {Dropped{"web1", "/srv/app", 0, ""},
                           Dropped{"::1", "/srv/app", ENOSPC, "delete r/x: No space left"}}) {
    auto d = decode_dropped(encoded(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(*d, m);
  }
}

// A Drop's purge is a flag; a Dropped says why exactly when it failed, in bounded text whose
// control characters are escaped (it reaches `bkptool unregister` and backupd's log).
TEST(MessagesTest, MalformedDropAndDroppedAreRejected) {
  Bytes drop = encoded(Drop{"h", "/p", 1});
  for (uint8_t bad : {2, 255}) {
    drop.back() = bad;
    auto d = decode_drop(drop);
    ASSERT_FALSE(d) << "purge " << int(bad);
    EXPECT_EQ(d.error().code, EPROTO);
  }
  EXPECT_FALSE(decode_dropped(encoded(Dropped{"h", "/p", 0, "done, but says why"})));
  EXPECT_FALSE(decode_dropped(encoded(Dropped{"h", "/p", EIO, ""})));
  EXPECT_FALSE(decode_dropped(encoded(Dropped{"h", "/p", EIO, std::string(kMaxText + 1, 'x')})));
  auto escaped = decode_dropped(encoded(Dropped{"h", "/p", EIO, "bad\x1b[2Jname"}));
  ASSERT_TRUE(escaped) << escaped.error().message;
  EXPECT_EQ(escaped->text, "bad\\x1b[2Jname");
}

TEST(MessagesTest, CommitAndAckRoundTrip) {
  auto c = decode_commit(encoded(Commit{42}));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->batch, 42u);
  auto a = decode_ack(encoded(Ack{~uint64_t{0}}));
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->batch, ~uint64_t{0});
}

TEST(MessagesTest, UsageRoundTripsAndRejectsABadFlagOrAddress) {
  ASSERT_TRUE(decode_usage_request(encoded(UsageRequest{})));
  Usage m{1, ~uint64_t{0} - 1, 0x0102030405060708, "127.0.0.1:7800"};
  auto d = decode_usage(encoded(m));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(*d, m);
  auto bad = decode_usage(encoded(Usage{2, 0, 0, ""}));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EPROTO);
  auto long_address = decode_usage(encoded(Usage{1, 0, 0, std::string(kMaxAddress + 1, '1')}));
  ASSERT_FALSE(long_address);
  EXPECT_EQ(long_address.error().code, EPROTO);
}

TEST(MessagesTest, SnapshotCopyMessagesRoundTripAndAreChecked) {
  SnapshotInventory inv{"web1", "/srv/app", {"20261130T010203.000Z", "20261130T010204.500Z"}};
  auto i = decode_snapshot_inventory(encoded(inv));
  ASSERT_TRUE(i) << i.error().message;
  EXPECT_EQ(i->ids, inv.ids);
  inv.partial_id = "20261130T010205.000Z";
  inv.partial_bytes = 12345;
  i = decode_snapshot_inventory(encoded(inv));
  ASSERT_TRUE(i) << i.error().message;
  EXPECT_EQ(i->partial_id, inv.partial_id);
  EXPECT_EQ(i->partial_bytes, 12345u);
  SnapshotInventory no_id = inv;
  no_id.partial_id = "";
  EXPECT_FALSE(decode_snapshot_inventory(encoded(no_id))) << "bytes of no archive";
  no_id.partial_id = "../x";
  EXPECT_FALSE(decode_snapshot_inventory(encoded(no_id))) << "a partial id that is not one";
  inv.ids.push_back("../../etc/passwd");
  EXPECT_FALSE(decode_snapshot_inventory(encoded(inv))) << "an id that is not one";

  SnapshotBegin b{"web1", "/srv/app", "20261130T010203.000Z", (8u << 20) + 1, 10, 8u << 20, {}};
  b.digests.resize(2);
  b.digests[1][31] = 7;
  auto d = decode_snapshot_begin(encoded(b));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->bytes, b.bytes);
  EXPECT_EQ(d->digests, b.digests);
  b.offset = 8u << 20;
  d = decode_snapshot_begin(encoded(b));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->offset, 8u << 20);
  const std::vector<std::pair<const char*, void (*)(SnapshotBegin&)>> spoilers{
      {"an offset past the end", [](SnapshotBegin& m) { m.offset = m.bytes + 1; }},
      {"one digest short", [](SnapshotBegin& m) { m.digests.pop_back(); }},
      {"a part size that is no power of two", [](SnapshotBegin& m) { m.part_size = 3u << 20; }},
      {"keep 0", [](SnapshotBegin& m) { m.keep = 0; }},
      {"an id that is not one", [](SnapshotBegin& m) { m.id = "latest"; }},
  };
  for (const auto& [what, spoil] : spoilers) {
    SnapshotBegin bad = b;
    spoil(bad);
    EXPECT_FALSE(decode_snapshot_begin(encoded(bad))) << what;
  }

  std::vector<uint8_t> chunk(100, 9);
  const Bytes frame = encoded(SnapshotData{42, chunk});  // the decoded bytes point into it
  auto data = decode_snapshot_data(frame);
  ASSERT_TRUE(data);
  EXPECT_EQ(data->offset, 42u);
  EXPECT_EQ(std::vector<uint8_t>(data->bytes.begin(), data->bytes.end()), chunk);
  EXPECT_FALSE(decode_snapshot_data(encoded(SnapshotData{42, {}}))) << "empty data";
  std::vector<uint8_t> huge(kMaxSnapshotData + 1);
  EXPECT_FALSE(decode_snapshot_data(encoded(SnapshotData{0, huge})));

  auto ok = decode_snapshot_stored(encoded(SnapshotStored{"20261130T010203.000Z", 0, ""}));
  ASSERT_TRUE(ok);
  EXPECT_FALSE(decode_snapshot_stored(encoded(SnapshotStored{"20261130T010203.000Z", 0, "x"})))
      << "success with a reason";
  EXPECT_FALSE(decode_snapshot_stored(encoded(SnapshotStored{"20261130T010203.000Z", 5, ""})))
      << "failure without one";
  EXPECT_TRUE(decode_snapshot_end(encoded(SnapshotEnd{})));
  EXPECT_TRUE(decode_snapshot_inventory_request(encoded(SnapshotInventoryRequest{"h", "/p"})));
}

// One Op of every kind, each carrying only the fields its kind documents (messages.h), with
// values that would expose a swapped or narrowed field.
// Two entries: a regular file with xattrs, and a symlink.
Manifest sample_manifest() {
  ManifestEntry file;
  file.path = "a/file";
  file.mode = S_IFREG | 0640;
  file.uid = 1000;
  file.gid = 100;
  file.size = uint64_t{1} << 35;
  file.mtime_ns = -5;
  file.id = 42;
  file.ctime_ns = 1700000000123456789;
  file.xattr_digest = 0xfeedface;
  file.xattr_names = std::string("user.a\0user.b\0", 14);
  file.content = 0x0123456789abcdef;
  ManifestEntry link;
  link.path = "a/link";
  link.mode = S_IFLNK | 0777;
  link.target = "../elsewhere";
  return Manifest{{file, link}, 1};
}

std::vector<Op> one_op_of_every_kind() {
  std::vector<Op> ops;
  auto add = [&](OpKind kind, const std::function<void(Op&)>& fill) {
    Op op;
    op.kind = kind;
    fill(op);
    ops.push_back(op);
  };
  add(OpKind::kMkdir, [](Op& o) {
    o.path = "a/b";
    o.mode = 0750;
    o.uid = 1000;
    o.gid = 65534;
  });
  add(OpKind::kCreate, [](Op& o) {
    o.path = "a/b/file.txt";
    o.id = 0xFEDCBA9876543210ull;
    o.mode = 0640;
    o.uid = 4000000000u;
    o.gid = 12;
  });
  add(OpKind::kMknod, [](Op& o) {
    o.path = "dev/fifo";
    o.mode = S_IFIFO | 0600;
    o.rdev = 0x0000000100000002ull;
    o.uid = 1;
    o.gid = 2;
  });
  add(OpKind::kSymlink, [](Op& o) {
    o.path = "links/l";
    o.target = "../../elsewhere/with space";
    o.uid = 3;
    o.gid = 4;
    o.mtime_ns = 1700000000123456789;
  });
  add(OpKind::kLink, [](Op& o) {
    o.path = "new name";
    o.target = "old/name";
    o.id = 77;
  });
  add(OpKind::kUnlink, [](Op& o) { o.path = "gone"; });
  add(OpKind::kRmdir, [](Op& o) { o.path = "gone/dir"; });
  add(OpKind::kRename, [](Op& o) {
    o.path = "from";
    o.target = "to/here";
    o.flags = RENAME_NOREPLACE;
  });
  add(OpKind::kTruncate, [](Op& o) {
    o.id = 9;
    o.size = (uint64_t{1} << 40) + 3;
  });
  add(OpKind::kAttr, [](Op& o) {  // by id
    o.id = 10;
    o.mode = 04755;
    o.uid = 65534;
    o.gid = 65534;
    o.atime_ns = -1000000001;  // before 1970
    o.mtime_ns = 981173106123456789;
    o.ctime_ns = 981173106123456790;  // the source's, for a later reconcile
  });
  add(OpKind::kAttr, [](Op& o) {  // by path
    o.path = "some/dir";
    o.mode = 01777;
    o.uid = 5;
    o.gid = 6;
    o.atime_ns = 1;
    o.mtime_ns = 2;
  });
  add(OpKind::kSetXattr, [](Op& o) {
    o.id = 11;
    o.name = "user.comment";
    o.value = std::string("binary\0value\xff", 13);
  });
  add(OpKind::kSetXattr, [](Op& o) {
    o.path = "some/dir";
    o.name = "user.empty";
  });
  add(OpKind::kRemoveXattr, [](Op& o) {
    o.id = 12;
    o.name = "user.comment";
  });
  add(OpKind::kSyncBegin, [](Op&) {});
  add(OpKind::kSyncEnd, [](Op&) {});
  add(OpKind::kKeep, [](Op& o) {
    o.path = "kept/file";
    o.id = 13;
  });
  add(OpKind::kPunch, [](Op& o) {
    o.id = 14;
    o.offset = uint64_t{1} << 33;
    o.size = 128 * 1024;
  });
  add(OpKind::kAllocate, [](Op& o) {
    o.id = 15;
    o.flags = kAllocateZeroRange | kAllocateKeepSize;
    o.offset = uint64_t{1} << 34;
    o.size = 64 * 1024;
  });
  return ops;
}

// Text meant for an operator's eyes is bounded and cannot carry terminal escapes.
TEST(MessagesTest, DisplayTextIsBoundedAndItsControlCharactersEscaped) {
  NodeStatus big;
  big.current_file = std::string(kMaxText + 1, 'a');
  EXPECT_FALSE(decode_node_status(encoded(big)));
  NodeStatus esc;
  esc.current_file = "dir/\x1b[2Jname\n";
  auto d = decode_node_status(encoded(esc));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->current_file, "dir/\\x1b[2Jname\\x0a");
  auto e = decode_error(encoded(ErrorMsg{5, "bad\rthing"}));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->text, "bad\\x0dthing");
  EXPECT_FALSE(decode_error(encoded(ErrorMsg{5, std::string(kMaxText + 1, 'x')})));
}

TEST(MessagesTest, ReconcileMessagesRoundTrip) {
  Manifest m = sample_manifest();
  auto d = decode_manifest(encoded(m));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->entries, m.entries);
  EXPECT_EQ(d->last, 1);
  EXPECT_EQ(d->entries.size() > 0 ? encoded(m).size() : 0,
            5 + wire::encoded_size(m.entries[0]) + wire::encoded_size(m.entries[1]));
  auto q = decode_digest_request(encoded(DigestRequest{7, 131072, 9, 65536}));
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, 7u);
  EXPECT_EQ(q->block_size, 131072u);
  EXPECT_EQ(q->first, 9u);
  EXPECT_EQ(q->count, 65536u);
  auto g = decode_digests(encoded(Digests{7, 1u << 20, 9, {1, 2, 3}}));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->digests, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(g->size, 1u << 20);
  EXPECT_TRUE(decode_manifest_request(encoded(ManifestRequest{})));
}

// Version 8: a verify's manifest request says what it wants, and an Attach what it is for.
TEST(MessagesTest, VerifyFlagsAndAttachPurposeRoundTripAndUnknownValuesAreRejected) {
  auto q = decode_manifest_request(encoded(ManifestRequest{kManifestContent | kManifestVerify}));
  ASSERT_TRUE(q) << q.error().message;
  EXPECT_EQ(q->flags, kManifestContent | kManifestVerify);
  EXPECT_FALSE(decode_manifest_request(encoded(ManifestRequest{0x04})));
  EXPECT_FALSE(decode_manifest_request({}));  // version 7's empty request
  Attach a;
  a.path = "/srv/app";
  a.server_id = 9;
  a.purpose = AttachPurpose::kManifest;
  auto d = decode_attach(encoded(a));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->purpose, AttachPurpose::kManifest);
  EXPECT_EQ(d->path, "/srv/app");
  Bytes bad = encoded(a);
  bad.back() = 2;
  EXPECT_FALSE(decode_attach(bad));
}

TEST(MessagesTest, AManifestOrDigestsClaimingMoreEntriesThanItHoldsIsRejected) {
  Bytes m = encoded(sample_manifest());
  m[1] = 0xff;  // entry count, little-endian u32 after the `last` byte
  m[2] = 0xff;
  EXPECT_FALSE(decode_manifest(m));
  Bytes last = encoded(sample_manifest());
  last[0] = 2;  // `last` is a flag
  EXPECT_FALSE(decode_manifest(last));
  Bytes g = encoded(Digests{1, 2, 3, {4}});
  g[24] = 0xff;  // digest count after id, size, first
  g[25] = 0xff;
  EXPECT_FALSE(decode_digests(g));
}

TEST(MessagesTest, OpOfEveryKindRoundTrips) {
  auto ops = one_op_of_every_kind();
  std::set<OpKind> kinds;
  for (const Op& op : ops) {
    kinds.insert(op.kind);
    auto d = decode_op(encoded(op));
    ASSERT_TRUE(d) << op_name(op.kind) << ": " << d.error().message;
    EXPECT_EQ(*d, op) << op_name(op.kind);
  }
  EXPECT_EQ(kinds.size(), static_cast<size_t>(kLastOpKind))
      << "a new OpKind needs a round-trip case here";
}

TEST(MessagesTest, EveryOpKindHasADistinctName) {
  std::set<std::string> names;
  for (int k = 1; k <= static_cast<int>(kLastOpKind); ++k) {
    const char* name = op_name(static_cast<OpKind>(k));
    ASSERT_NE(name, nullptr);
    EXPECT_TRUE(names.insert(name).second) << "duplicate name " << name;
  }
}

TEST(MessagesTest, TruncatedOrPaddedPayloadsAreRejected) {
  expect_only_exact_length_decodes(
      encoded(sample_hello()), [](const Bytes& b) { return decode_hello(b); }, "Hello");
  expect_only_exact_length_decodes(
      encoded(HelloOk{}), [](const Bytes& b) { return decode_hello_ok(b); }, "HelloOk");
  expect_only_exact_length_decodes(
      encoded(ErrorMsg{5, "x"}), [](const Bytes& b) { return decode_error(b); }, "Error");
  expect_only_exact_length_decodes(
      encoded(Select{"h", "/p", 9}), [](const Bytes& b) { return decode_select(b); }, "Select");
  expect_only_exact_length_decodes(
      encoded(Position{1, 1, 2}), [](const Bytes& b) { return decode_position(b); }, "Position");
  expect_only_exact_length_decodes(
      encoded(Commit{1}), [](const Bytes& b) { return decode_commit(b); }, "Commit");
  expect_only_exact_length_decodes(
      encoded(Ack{1}), [](const Bytes& b) { return decode_ack(b); }, "Ack");
  expect_only_exact_length_decodes(
      encoded(Drop{"h", "/p", 1}), [](const Bytes& b) { return decode_drop(b); }, "Drop");
  expect_only_exact_length_decodes(
      encoded(Dropped{"h", "/p", 5, "x"}), [](const Bytes& b) { return decode_dropped(b); },
      "Dropped");
  expect_only_exact_length_decodes(
      encoded(sample_manifest()), [](const Bytes& b) { return decode_manifest(b); }, "Manifest");
  expect_only_exact_length_decodes(
      encoded(DigestRequest{1, 2, 3, 4}),
      [](const Bytes& b) { return decode_digest_request(b); }, "DigestRequest");
  expect_only_exact_length_decodes(
      encoded(Digests{1, 2, 3, {4, 5}}), [](const Bytes& b) { return decode_digests(b); },
      "Digests");
  expect_only_exact_length_decodes(
      encoded(Usage{1, 2, 3, "r:1"}), [](const Bytes& b) { return decode_usage(b); }, "Usage");
  EXPECT_FALSE(decode_usage_request(Bytes{0})) << "an UsageRequest is empty";
  for (const Op& op : one_op_of_every_kind()) {
    expect_only_exact_length_decodes(
        encoded(op), [](const Bytes& b) { return decode_op(b); },
        std::string("Op ") + op_name(op.kind));
  }
}

TEST(MessagesTest, OutOfRangeRoleIsRejected) {
  Hello a = sample_hello();
  Hello b = a;
  a.role = Role::kNode;
  b.role = Role::kReplica;
  Bytes bytes = encoded(a);
  size_t at = differing_byte(bytes, encoded(b));
  ASSERT_LT(at, bytes.size());
  for (uint8_t bad : {0, 4, 200}) {
    bytes[at] = bad;
    EXPECT_FALSE(decode_hello(bytes)) << "role " << int(bad);
  }
}

TEST(MessagesTest, OutOfRangeOpKindIsRejected) {
  Op a;
  a.kind = OpKind::kUnlink;
  a.path = "x";
  Op b = a;
  b.kind = OpKind::kRmdir;
  Bytes bytes = encoded(a);
  size_t at = differing_byte(bytes, encoded(b));
  ASSERT_LT(at, bytes.size());
  for (uint8_t bad : {0, 17, 99, 255}) {
    bytes[at] = bad;
    EXPECT_FALSE(decode_op(bytes)) << "kind " << int(bad);
  }
}

TEST(MessagesTest, CompressibleWriteIsCompressedAndRestored) {
  Bytes data;
  while (data.size() < (1u << 20)) {
    std::string line = "line " + std::to_string(data.size() % 977) + " of a very boring log\n";
    data.insert(data.end(), line.begin(), line.end());
  }
  data.resize(1u << 20);
  Bytes payload;
  uint8_t flags = WriteEncoder().encode(5, 123456789012, data, payload);
  EXPECT_EQ(flags & kFlagZstd, kFlagZstd);
  EXPECT_LT(payload.size(), data.size() / 4);
  EXPECT_LE(payload.size(), kMaxPayload);
  auto d = decode_write(flags, payload);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->id, 5u);
  EXPECT_EQ(d->offset, 123456789012u);
  EXPECT_EQ(Bytes(d->data.begin(), d->data.end()), data);
}

TEST(MessagesTest, IncompressibleWriteIsSentRaw) {
  Bytes data = random_data(1u << 20, 1);
  Bytes payload;
  uint8_t flags = WriteEncoder().encode(6, 0, data, payload);
  EXPECT_EQ(flags & kFlagZstd, 0);
  EXPECT_EQ(payload.size(), 8 + 8 + 4 + data.size());  // u64 id, u64 offset, u32 length, bytes
  auto d = decode_write(flags, payload);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->id, 6u);
  EXPECT_EQ(d->offset, 0u);
  EXPECT_EQ(Bytes(d->data.begin(), d->data.end()), data);
}

// After incompressible data the encoder stops trying for a while (1, 2, 4 ... chunks), and the
// first success makes it try every chunk again; every payload decodes either way.
TEST(MessagesTest, EncoderSkipsCompressionAfterIncompressibleData) {
  WriteEncoder enc;
  Bytes text(64 * 1024, 'a');
  Bytes noise = random_data(64 * 1024, 9);
  auto compressed = [&](const Bytes& data) {
    Bytes payload;
    uint8_t flags = enc.encode(1, 0, data, payload);
    auto d = decode_write(flags, payload);
    EXPECT_TRUE(d && Bytes(d->data.begin(), d->data.end()) == data);
    return (flags & kFlagZstd) != 0;
  };
  EXPECT_TRUE(compressed(text));
  EXPECT_FALSE(compressed(noise));  // tried and failed: skip 1
  EXPECT_FALSE(compressed(text));   // skipped although compressible
  EXPECT_TRUE(compressed(text));    // tried again
  EXPECT_FALSE(compressed(noise));  // skip 1
  EXPECT_FALSE(compressed(noise));  // skipped
  EXPECT_FALSE(compressed(noise));  // tried and failed again: skip 2
  EXPECT_FALSE(compressed(text));
  EXPECT_FALSE(compressed(text));
  EXPECT_TRUE(compressed(text));    // back to trying every chunk
  EXPECT_TRUE(compressed(text));
}

TEST(MessagesTest, EmptyWriteRoundTrips) {
  Bytes payload;
  uint8_t flags = WriteEncoder().encode(7, 99, {}, payload);
  auto d = decode_write(flags, payload);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->offset, 99u);
  EXPECT_TRUE(d->data.empty());
}

TEST(MessagesTest, TruncatedOrPaddedWritesAreRejected) {
  for (bool compressible : {false, true}) {
    Bytes data = compressible ? Bytes(5000, 'z') : random_data(5000, 2);
    Bytes payload;
    uint8_t flags = WriteEncoder().encode(8, 4096, data, payload);
    ASSERT_EQ((flags & kFlagZstd) != 0, compressible);
    expect_only_exact_length_decodes(
        payload, [flags](const Bytes& b) { return decode_write(flags, b); },
        compressible ? "compressed Write" : "raw Write");
  }
}

Bytes write_header(uint64_t id, uint64_t offset, uint32_t raw_length) {
  Bytes out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(id >> (8 * i)));
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(offset >> (8 * i)));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(raw_length >> (8 * i)));
  return out;
}

Bytes zstd_compress(const Bytes& data) {
  Bytes out(ZSTD_compressBound(data.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

TEST(MessagesTest, CompressedWriteWithWrongLengthIsRejected) {
  Bytes data(1000, 'q');
  Bytes frame = zstd_compress(data);
  Bytes shorter = write_header(1, 0, 999);  // claims fewer bytes than the frame holds
  shorter.insert(shorter.end(), frame.begin(), frame.end());
  EXPECT_FALSE(decode_write(kFlagZstd, shorter));
  Bytes longer = write_header(1, 0, 1001);  // claims more
  longer.insert(longer.end(), frame.begin(), frame.end());
  EXPECT_FALSE(decode_write(kFlagZstd, longer));
}

TEST(MessagesTest, CompressedWriteClaimingAHugeSizeIsRejected) {
  Bytes frame = zstd_compress(Bytes(1000, 'q'));
  Bytes bomb = write_header(1, 0, 0xFFFFFFFFu);
  bomb.insert(bomb.end(), frame.begin(), frame.end());
  EXPECT_FALSE(decode_write(kFlagZstd, bomb));
}

TEST(MessagesTest, GarbageMarkedCompressedIsRejected) {
  Bytes payload = write_header(1, 0, 100);
  Bytes junk = random_data(60, 3);
  payload.insert(payload.end(), junk.begin(), junk.end());
  EXPECT_FALSE(decode_write(kFlagZstd, payload));
}

// Times past int64 nanoseconds (ext4 keeps them to 2446) are sent as the nearest end of the
// span, never wrapped: a file dated 2400 once arrived in every copy dated 1901.
TEST(MessagesTest, TimesPastTheWiresSpanAreSentAsItsNearestEnd) {
  EXPECT_EQ(to_ns(timespec{1'700'000'000, 123}), 1'700'000'000'000'000'123);
  EXPECT_EQ(to_ns(timespec{-5, 120'000'000}), -4'880'000'000);
  EXPECT_EQ(to_ns(timespec{9'223'372'035, 999'999'999}), 9'223'372'035'999'999'999);
  EXPECT_EQ(to_ns(timespec{13'569'465'600, 0}), std::numeric_limits<int64_t>::max());  // 2400
  EXPECT_EQ(to_ns(timespec{-13'569'465'600, 0}), std::numeric_limits<int64_t>::min());
}

}  // namespace
}  // namespace bkp::wire
