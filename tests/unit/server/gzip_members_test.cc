// GzipMembers (server/gzip_members.h): what it writes is standard gzip, one member per block,
// read back here with zlib's own inflate across member boundaries; the same bytes whatever the
// number of threads; memory bounded (members leave while the stream is still being written); and
// a sink's error (a full disk) reaches the writer and stops everything after it.
#include "server/gzip_members.h"

#include <zlib.h>

#include <random>
#include <string>

#include <gtest/gtest.h>

namespace bkp::server {
namespace {

constexpr size_t kBlock = 4096;

struct Gunzipped {
  std::string data;
  int members = 0;
  bool complete = false;  // the input ended exactly at the end of a member
};

// Inflates a series of gzip members, one after the other, as gzip -d does.
Gunzipped gunzip(const std::string& gz) {
  Gunzipped out;
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  char buf[1 << 16];
  while (true) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    int r = inflate(&z, Z_NO_FLUSH);
    out.data.append(buf, sizeof buf - z.avail_out);
    if (r == Z_STREAM_END) {
      ++out.members;
      if (z.avail_in == 0) {
        out.complete = true;
        break;
      }
      inflateReset(&z);
    } else if (r != Z_OK) {
      break;  // Z_BUF_ERROR: the input ended inside a member
    }
  }
  inflateEnd(&z);
  return out;
}

constexpr size_t kBigBlock = 1 << 20;  // big enough to be probed (gzip_members.cc)

std::string random_text(size_t n, unsigned seed) {
  // Words from a small alphabet: compressible, but not trivially.
  std::mt19937 rng(seed);
  std::string s(n, ' ');
  for (auto& c : s) c = "abcdefgh \n"[rng() % 10];
  return s;
}

// Everything a GzipMembers wrote, and how many times its sink was called.
struct Collected {
  std::string gz;
  int calls = 0;
};

ByteSink collect(Collected& c) {
  return [&c](std::span<const char> bytes) -> Result<void> {
    c.gz.append(bytes.data(), bytes.size());
    ++c.calls;
    return {};
  };
}

GzipMembersOptions options(unsigned threads) {
  return GzipMembersOptions{.level = 1, .block = kBlock, .threads = threads};
}

// Writes `input` in pieces of `piece` bytes and finishes.
std::string compress(const std::string& input, size_t piece, unsigned threads) {
  Collected c;
  GzipMembers members(collect(c), options(threads));
  for (size_t at = 0; at < input.size(); at += piece) {
    auto r = members.write(std::span<const char>(input).subspan(at, std::min(piece, input.size() - at)));
    EXPECT_TRUE(r) << r.error().message;
  }
  auto r = members.finish();
  EXPECT_TRUE(r) << r.error().message;
  return c.gz;
}

TEST(GzipMembersTest, RoundTripsAcrossMemberBoundaries) {
  std::string input = random_text(7 * kBlock + 1234, 1);
  for (size_t piece : {size_t{1}, size_t{1000}, kBlock, 3 * kBlock + 17}) {
    std::string gz = compress(input, piece, 3);
    Gunzipped back = gunzip(gz);
    EXPECT_TRUE(back.complete) << "piece " << piece;
    EXPECT_EQ(back.members, 8) << "piece " << piece;
    EXPECT_TRUE(back.data == input) << "piece " << piece;
    EXPECT_LT(gz.size(), input.size() * 3 / 4) << "not compressed";
  }
}

TEST(GzipMembersTest, TheOutputDependsOnlyOnTheInput) {
  std::string input = random_text(20 * kBlock + 5, 2);
  std::string one = compress(input, 777, 1);
  EXPECT_TRUE(one == compress(input, 777, 4));
  EXPECT_TRUE(one == compress(input, kBlock, 2));
}

// Random bytes (an incompressible block, as media or compressed files are) are stored rather
// than deflated; text, and blocks too small to judge, are deflated. Both kinds read back.
TEST(GzipMembersTest, IncompressibleBlocksAreToldFromCompressibleOnes) {
  std::mt19937 rng(7);
  std::string noise(kBigBlock, '\0');
  for (auto& c : noise) c = static_cast<char>(rng());
  const std::string text = random_text(kBigBlock, 8);
  IncompressibleProbe probe;
  EXPECT_TRUE(probe(noise));
  EXPECT_FALSE(probe(text));
  EXPECT_FALSE(probe(std::string_view(noise).substr(0, 128 * 1024))) << "too small to judge";
  std::string mixed = noise + text + noise;
  Collected c;
  GzipMembers members(collect(c), GzipMembersOptions{.level = 6, .block = kBigBlock, .threads = 2});
  ASSERT_TRUE(members.write(mixed));
  ASSERT_TRUE(members.finish());
  Gunzipped back = gunzip(c.gz);
  EXPECT_EQ(back.members, 3);
  EXPECT_TRUE(back.data == mixed);
  EXPECT_LT(c.gz.size(), 2 * kBigBlock + kBigBlock / 2) << "the text block was not deflated";
}

TEST(GzipMembersTest, AnEmptyStreamIsOneEmptyMember) {
  std::string gz = compress("", 1, 2);
  Gunzipped back = gunzip(gz);
  EXPECT_TRUE(back.complete);
  EXPECT_EQ(back.members, 1);
  EXPECT_EQ(back.data, "");
}

// Nine blocks through a ring of four slots (two threads): the last block ends the stream, and
// finish() neither adds an empty member nor takes a slot still in flight for a partial block.
TEST(GzipMembersTest, ABlockBoundaryAtTheEndAddsNoEmptyMember) {
  std::string input = random_text(9 * kBlock, 3);
  for (size_t piece : {size_t{1000}, kBlock}) {
    Gunzipped back = gunzip(compress(input, piece, 2));
    EXPECT_TRUE(back.complete) << "piece " << piece;
    EXPECT_EQ(back.members, 9) << "piece " << piece;
    EXPECT_TRUE(back.data == input) << "piece " << piece;
  }
}

// At most two blocks per thread are in flight: members reach the sink while the stream is
// still being written, not all at the end.
TEST(GzipMembersTest, MembersLeaveWhileTheStreamIsWritten) {
  constexpr unsigned kThreads = 2;
  Collected c;
  GzipMembers members(collect(c), options(kThreads));
  std::string block = random_text(kBlock, 4);
  for (int i = 1; i <= 50; ++i) {
    ASSERT_TRUE(members.write(block));
    EXPECT_GE(c.calls, i - static_cast<int>(2 * kThreads)) << "after block " << i;
  }
  ASSERT_TRUE(members.finish());
  EXPECT_EQ(c.calls, 50);
  EXPECT_EQ(gunzip(c.gz).members, 50);
}

// The sink fails on its second member (the disk filled up): the error, errno included, comes
// back from write() or finish(), every later call returns it, and nothing more is written.
TEST(GzipMembersTest, ASinksErrorStopsTheStream) {
  int calls = 0;
  ByteSink full = [&](std::span<const char>) -> Result<void> {
    if (++calls == 2) return fail(ENOSPC, "write snap.tgz: No space left on device");
    return {};
  };
  GzipMembers members(full, options(2));
  std::string input = random_text(10 * kBlock, 5);
  Result<void> r;
  for (size_t at = 0; at < input.size() && r; at += kBlock) {
    r = members.write(std::span<const char>(input).subspan(at, kBlock));
  }
  if (r) r = members.finish();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOSPC);
  EXPECT_EQ(r.error().message, "write snap.tgz: No space left on device");
  auto again = members.write(std::span<const char>(input).subspan(0, 10));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ENOSPC);
  EXPECT_FALSE(members.finish());
  EXPECT_EQ(calls, 2);
}

// Dropped unfinished: the destructor stops its threads with blocks still queued.
TEST(GzipMembersTest, DroppingAnUnfinishedStreamStopsItsThreads) {
  Collected c;
  {
    GzipMembers members(collect(c), options(2));
    std::string input = random_text(3 * kBlock + 1, 6);
    ASSERT_TRUE(members.write(input));
  }
  EXPECT_LE(c.calls, 3);
}

}  // namespace
}  // namespace bkp::server
