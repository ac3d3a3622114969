// Frames: what a peer sends is what the other side reads, in any chunking; and everything a
// confused or hostile peer can send (truncation, oversized lengths, flipped bits, unknown types,
// reserved bits, replayed sequence numbers) is an error, never a frame and never a huge buffer.
#include "common/wire/frame.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cerrno>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace bkp::wire {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes frame(MsgType type, uint64_t seq, const Bytes& payload, uint8_t flags = 0) {
  Bytes out;
  encode_frame(type, flags, seq, payload, out);
  return out;
}

std::string hex(std::span<const uint8_t> bytes) {
  std::string out;
  for (uint8_t b : bytes) out += "0123456789abcdef"[b >> 4], out += "0123456789abcdef"[b & 15];
  return out;
}

void put(Bytes& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A frame built by hand from the layout documented in frame.h, with a correct checksum, so a
// test can make exactly one field wrong.
Bytes raw_frame(uint32_t length, uint8_t type, uint8_t flags, uint16_t reserved, uint64_t seq,
                const Bytes& payload) {
  Bytes out;
  put(out, length, 4);
  out.push_back(type);
  out.push_back(flags);
  put(out, reserved, 2);
  put(out, seq, 8);
  Bytes hashed(out.begin(), out.end());
  hashed.insert(hashed.end(), payload.begin(), payload.end());
  put(out, XXH3_64bits(hashed.data(), hashed.size()), 8);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

// Feeds everything and collects frames until the reader needs more bytes or fails.
struct Decoded {
  std::vector<Frame> frames;
  bool failed = false;
  int code = 0;
  std::string message;
};

Decoded decode_all(FrameReader& r, const Bytes& in) {
  r.feed(in);
  Decoded d;
  for (int i = 0; i < 1000; ++i) {
    auto next = r.next();
    if (!next) {
      d.failed = true;
      d.code = next.error().code;
      d.message = next.error().message;
      return d;
    }
    if (!next->has_value()) return d;
    d.frames.push_back(Frame::copy_of(**next));
  }
  ADD_FAILURE() << "reader produced 1000 frames";
  return d;
}

Decoded decode_all(const Bytes& in) {
  FrameReader r;
  return decode_all(r, in);
}

TEST(FrameTest, EncodingFollowsTheDocumentedLayout) {
  Bytes payload = bytes("hello");
  EXPECT_EQ(frame(MsgType::kOp, 7, payload), raw_frame(5, 10, 0, 0, 7, payload));
  EXPECT_EQ(frame(MsgType::kPing, 1, {}).size(), kHeaderSize);
}

TEST(FrameTest, RoundTripsSeveralFrames) {
  Bytes in = frame(MsgType::kHello, 1, bytes("first"));
  Bytes b = frame(MsgType::kWrite, 2, Bytes(100000, 0xAB), kFlagZstd);
  Bytes c = frame(MsgType::kCommit, 3, {});
  in.insert(in.end(), b.begin(), b.end());
  in.insert(in.end(), c.begin(), c.end());

  FrameReader r;
  Decoded d = decode_all(r, in);
  ASSERT_FALSE(d.failed) << d.message;
  ASSERT_EQ(d.frames.size(), 3u);
  EXPECT_EQ(d.frames[0].type, MsgType::kHello);
  EXPECT_EQ(d.frames[0].seq, 1u);
  EXPECT_EQ(d.frames[0].flags, 0);
  EXPECT_EQ(d.frames[0].payload, bytes("first"));
  EXPECT_EQ(d.frames[1].type, MsgType::kWrite);
  EXPECT_EQ(d.frames[1].flags, kFlagZstd);
  EXPECT_EQ(d.frames[1].payload, Bytes(100000, 0xAB));
  EXPECT_EQ(d.frames[2].type, MsgType::kCommit);
  EXPECT_TRUE(d.frames[2].payload.empty());
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(FrameTest, RoundTripsTheLargestPayload) {
  Bytes payload(kMaxPayload, 0x5A);
  payload.back() = 1;
  Decoded d = decode_all(frame(MsgType::kWrite, 1, payload));
  ASSERT_FALSE(d.failed) << d.message;
  ASSERT_EQ(d.frames.size(), 1u);
  EXPECT_EQ(d.frames[0].payload, payload);
}

TEST(FrameTest, ReassemblesFramesFedByteByByte) {
  Bytes in = frame(MsgType::kOp, 1, bytes("abc"));
  Bytes more = frame(MsgType::kAck, 2, bytes("defgh"));
  in.insert(in.end(), more.begin(), more.end());

  FrameReader r;
  std::vector<Frame> got;
  for (size_t i = 0; i < in.size(); ++i) {
    r.feed(std::span<const uint8_t>(&in[i], 1));
    auto next = r.next();
    ASSERT_TRUE(next) << "byte " << i << ": " << next.error().message;
    if (next->has_value()) got.push_back(Frame::copy_of(**next));
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].payload, bytes("abc"));
  EXPECT_EQ(got[1].type, MsgType::kAck);
  EXPECT_EQ(got[1].payload, bytes("defgh"));
}

TEST(FrameTest, TruncatedInputYieldsNoFrame) {
  Bytes in = frame(MsgType::kOp, 1, bytes("payload"));
  for (size_t cut = 0; cut < in.size(); ++cut) {
    FrameReader r;
    Decoded d = decode_all(r, Bytes(in.begin(), in.begin() + cut));
    EXPECT_FALSE(d.failed) << "cut at " << cut << ": " << d.message;
    EXPECT_TRUE(d.frames.empty()) << "cut at " << cut;
    EXPECT_EQ(r.buffered(), cut);
  }
}

TEST(FrameTest, OversizedLengthIsRejectedFromTheHeaderAlone) {
  for (uint32_t length : {kMaxPayload + 1, 0xFFFFFFFFu}) {
    // Only the header arrives: the reader must not wait for (or allocate) the payload.
    Bytes header = raw_frame(length, 10, 0, 0, 1, {});
    ASSERT_EQ(header.size(), kHeaderSize);
    FrameReader r;
    Decoded d = decode_all(r, header);
    EXPECT_TRUE(d.failed) << "length " << length << " accepted or awaited";
    EXPECT_EQ(d.code, EPROTO) << d.message;
    EXPECT_LE(r.buffered(), kHeaderSize);
  }
}

TEST(FrameTest, FlippedPayloadByteIsAChecksumError) {
  Bytes in = frame(MsgType::kOp, 1, bytes("some payload"));
  in[kHeaderSize + 3] ^= 0x01;
  Decoded d = decode_all(in);
  EXPECT_TRUE(d.failed);
  EXPECT_EQ(d.code, EPROTO);
  EXPECT_TRUE(d.frames.empty());
}

TEST(FrameTest, FlippedHeaderOrChecksumByteIsAnError) {
  Bytes good = frame(MsgType::kOp, 1, bytes("xyz"));
  for (size_t at : {size_t{5} /* flags */, size_t{9} /* seq */, size_t{16}, size_t{23}}) {
    Bytes in = good;
    in[at] ^= 0x80;
    Decoded d = decode_all(in);
    EXPECT_TRUE(d.failed) << "flipped header byte " << at;
    EXPECT_TRUE(d.frames.empty()) << "flipped header byte " << at;
  }
}

TEST(FrameTest, UnknownTypeIsRejected) {
  for (uint8_t type : {0, 6, 99, 255}) {
    Decoded d = decode_all(raw_frame(3, type, 0, 0, 1, bytes("abc")));
    EXPECT_TRUE(d.failed) << "type " << int(type);
    EXPECT_EQ(d.code, EPROTO);
  }
  EXPECT_FALSE(is_known_type(0));
  EXPECT_FALSE(is_known_type(99));
  EXPECT_TRUE(is_known_type(static_cast<uint8_t>(MsgType::kWrite)));
}

TEST(FrameTest, EveryKnownTypeHasAName) {
  for (int t = 0; t < 256; ++t) {
    if (!is_known_type(static_cast<uint8_t>(t))) continue;
    const char* name = type_name(static_cast<MsgType>(t));
    ASSERT_NE(name, nullptr);
    EXPECT_STRNE(name, "") << t;
  }
}

TEST(FrameTest, NonzeroReservedIsRejected) {
  Decoded d = decode_all(raw_frame(3, 10, 0, 0x0100, 1, bytes("abc")));
  EXPECT_TRUE(d.failed);
  EXPECT_EQ(d.code, EPROTO);
}

TEST(FrameTest, RepeatedSequenceNumberIsRejected) {
  Bytes in = frame(MsgType::kOp, 1, bytes("a"));
  Bytes again = frame(MsgType::kOp, 1, bytes("a"));
  in.insert(in.end(), again.begin(), again.end());
  Decoded d = decode_all(in);
  EXPECT_EQ(d.frames.size(), 1u);
  EXPECT_TRUE(d.failed);
  EXPECT_EQ(d.code, EPROTO);
}

TEST(FrameTest, DecreasingSequenceNumberIsRejected) {
  Bytes in = frame(MsgType::kOp, 1, bytes("a"));
  for (uint64_t seq : {2, 3, 2}) {
    Bytes f = frame(MsgType::kOp, seq, bytes("a"));
    in.insert(in.end(), f.begin(), f.end());
  }
  Decoded d = decode_all(in);
  EXPECT_EQ(d.frames.size(), 3u);
  EXPECT_TRUE(d.failed);
}

TEST(FrameTest, SequenceGapIsRejected) {
  Bytes in = frame(MsgType::kOp, 1, bytes("a"));
  Bytes gap = frame(MsgType::kOp, 3, bytes("a"));
  in.insert(in.end(), gap.begin(), gap.end());
  Decoded d = decode_all(in);
  EXPECT_EQ(d.frames.size(), 1u);
  EXPECT_TRUE(d.failed);
}

TEST(FrameTest, AnErrorIsFinal) {
  Bytes bad = frame(MsgType::kOp, 1, bytes("abc"));
  bad[kHeaderSize] ^= 1;
  FrameReader r;
  ASSERT_TRUE(decode_all(r, bad).failed);
  // A well-formed frame after the error does not resurrect the connection.
  Decoded d = decode_all(r, frame(MsgType::kOp, 2, bytes("ok")));
  EXPECT_TRUE(d.failed);
  EXPECT_TRUE(d.frames.empty());
}

TEST(FrameTest, RandomGarbageIsAnErrorNotABigBuffer) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    Bytes junk(64 * 1024);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    FrameReader r;
    Decoded d = decode_all(r, junk);
    EXPECT_TRUE(d.frames.empty()) << "trial " << trial;
    // Either rejected now, or (a plausible length of an unknown frame) still waiting, but never
    // holding more than one maximal frame.
    EXPECT_LE(r.buffered(), kHeaderSize + kMaxPayload);
    uint32_t length = junk[0] | junk[1] << 8 | junk[2] << 16 | uint32_t{junk[3]} << 24;
    if (length > kMaxPayload) {
      EXPECT_TRUE(d.failed) << "trial " << trial;
    }
  }
}

// docs/PROTOCOL.md's test vectors ("Frames") are what seal_frame makes: a peer written from the
// document checks its XXH3 and its header against these bytes, so they must not drift.
TEST(FrameTest, TheDocumentsTestVectorsAreWhatWeSend) {
  auto sealed = [](MsgType type, uint64_t seq, std::vector<uint8_t> payload) {
    std::vector<uint8_t> frame(kHeaderSize);
    frame.insert(frame.end(), payload.begin(), payload.end());
    seal_frame(type, 0, seq, frame.data(), payload.size());
    return hex(frame);
  };
  EXPECT_EQ(sealed(MsgType::kPing, 1, {}),
            "00000000" "16" "00" "0000" "0100000000000000" "b803a7bf3ca0e4d8");
  EXPECT_EQ(sealed(MsgType::kCommit, 1, {1, 0, 0, 0, 0, 0, 0, 0}),
            "08000000" "14" "00" "0000" "0100000000000000" "db4a09ca6e6b8a0b" "0100000000000000");
  std::vector<uint8_t> write(20 + 128, 0);  // id 1, offset 0, raw_length 128, 128 zero bytes
  write[0] = 1;
  write[16] = 128;
  EXPECT_EQ(sealed(MsgType::kWrite, 2, write).substr(0, 2 * kHeaderSize),
            "94000000" "0b" "00" "0000" "0200000000000000" "4756fa01737339cf");
}

// A payload past a few hundred bytes takes XXH3's vector code, which common/xxh3.h chooses at
// run time (SSE2, AVX2 or AVX-512): the checksum must be the one xxhash's scalar code computes
// (the expected value was computed with XXH_VECTOR=XXH_SCALAR, SSE2 and AVX2 builds alike).
TEST(FrameTest, ALongPayloadsChecksumIsTheSameOnEveryVectorUnit) {
  std::vector<uint8_t> frame(kHeaderSize + 100000);
  for (size_t i = 0; i < 100000; ++i) frame[kHeaderSize + i] = static_cast<uint8_t>(i * 31 % 251);
  seal_frame(MsgType::kOp, 0, 3, frame.data(), 100000);
  EXPECT_EQ(hex(std::span(frame).subspan(16, 8)), "ef280d0730add4f8");
}

}  // namespace
}  // namespace bkp::wire
