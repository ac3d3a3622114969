// DirectReader (common/changes/direct_reader.h): what a baseline reads past the page cache must
// be exactly what a buffered read returns, from any offset, across the chunk it reads ahead, at
// the end of the file and right after a buffered write that is not on disk yet; and it must
// leave the cache as it found it. A verify's content digests read large files the same way.
#include "common/changes/direct_reader.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <string>
#include <vector>

#include "common/stream/reconcile.h"
#include "common/unique_fd.h"
#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::changes {
namespace {

constexpr size_t kChunk = 1 << 20;

class DirectReaderTest : public ::testing::Test {
 protected:
  // A file of `size` pseudo-random bytes, written back and dropped from the cache.
  UniqueFd cold_file(size_t size) {
    data_ = testutil::random_bytes(size, size);
    std::string path = dir_.sub("f");
    testutil::write_file(path, std::string_view(reinterpret_cast<const char*>(data_.data()),
                                                data_.size()));
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    EXPECT_TRUE(fd);
    EXPECT_EQ(fdatasync(fd.get()), 0);
    EXPECT_EQ(posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
    return fd;
  }
  // Reads [offset, end) in chunks as the shipper does, reading ahead up to end.
  std::vector<uint8_t> read_range(DirectReader& reader, uint64_t offset, uint64_t end) {
    std::vector<uint8_t> out;
    for (uint64_t off = offset; off < end;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, end - off));
      auto got = reader.read(off, want, end);
      EXPECT_TRUE(got) << got.error().message;
      if (!got || got->empty()) break;
      out.insert(out.end(), got->begin(), got->end());
      off += got->size();
    }
    return out;
  }
  std::vector<uint8_t> expected(uint64_t offset, uint64_t end) const {
    end = std::min<uint64_t>(end, data_.size());
    return {data_.begin() + static_cast<ptrdiff_t>(offset),
            data_.begin() + static_cast<ptrdiff_t>(end)};
  }

  testutil::TempDir dir_{"bkp-direct"};
  std::vector<uint8_t> data_;
};

TEST_F(DirectReaderTest, ReadsAnyRangeAsABufferedReadWouldAndLeavesTheCacheEmpty) {
  const size_t size = 5 * kChunk + 4321;  // ends mid-block
  UniqueFd fd = cold_file(size);
  DirectReader reader(kChunk);
  if (!reader.use(fd.get(), true)) GTEST_SKIP() << "this filesystem cannot read directly";
  EXPECT_EQ(read_range(reader, 777, size), expected(777, size));  // unaligned start and end
  EXPECT_EQ(read_range(reader, 0, 2 * kChunk), expected(0, 2 * kChunk));
  EXPECT_EQ(read_range(reader, 4 * kChunk, size + 3 * kChunk), expected(4 * kChunk, size))
      << "a range past the end of the file ends where the file does";
  EXPECT_EQ(testutil::cached_pages(fd.get(), size), 0u);
}

TEST_F(DirectReaderTest, AReadOtherThanTheOneAheadGetsItsOwnBytes) {
  const size_t size = 6 * kChunk;
  UniqueFd fd = cold_file(size);
  DirectReader reader(kChunk);
  if (!reader.use(fd.get(), true)) GTEST_SKIP() << "this filesystem cannot read directly";
  auto first = reader.read(0, kChunk, size);  // reads [1, 2) MiB ahead
  ASSERT_TRUE(first);
  EXPECT_EQ(std::vector<uint8_t>(first->begin(), first->end()), expected(0, kChunk));
  auto skipped = reader.read(3 * kChunk + 5, 1000, size);
  ASSERT_TRUE(skipped);
  EXPECT_EQ(std::vector<uint8_t>(skipped->begin(), skipped->end()),
            expected(3 * kChunk + 5, 3 * kChunk + 1005));
  auto shorter = reader.read(3 * kChunk + 1005, kChunk / 2, size);  // not what was read ahead
  ASSERT_TRUE(shorter);
  EXPECT_EQ(std::vector<uint8_t>(shorter->begin(), shorter->end()),
            expected(3 * kChunk + 1005, 3 * kChunk + 1005 + kChunk / 2));
  // Another file, with other bytes at the same offsets: what was read ahead for the first one
  // (from 3.5 MiB + 1005 on) is never returned for it.
  auto ahead = reader.read(3 * kChunk + 1005 + kChunk / 2, 1000, size);
  ASSERT_TRUE(ahead);
  UniqueFd other = cold_file(5 * kChunk);
  ASSERT_TRUE(reader.use(other.get(), true));
  EXPECT_EQ(read_range(reader, 3 * kChunk + 2005 + kChunk / 2, 5 * kChunk),
            expected(3 * kChunk + 2005 + kChunk / 2, 5 * kChunk));
}

TEST_F(DirectReaderTest, SeesAWriteThatIsOnlyInThePageCache) {
  const size_t size = 3 * kChunk;
  UniqueFd fd = cold_file(size);
  DirectReader reader(kChunk);
  if (!reader.use(fd.get(), true)) GTEST_SKIP() << "this filesystem cannot read directly";
  UniqueFd writer(::open(dir_.sub("f").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(writer);
  std::vector<uint8_t> patch(10000, 0xab);
  ASSERT_EQ(pwrite(writer.get(), patch.data(), patch.size(), kChunk + 3),
            static_cast<ssize_t>(patch.size()));
  std::copy(patch.begin(), patch.end(), data_.begin() + kChunk + 3);
  EXPECT_EQ(read_range(reader, 0, size), expected(0, size));
}

// A verify's content digests (stream::walk_manifest with kManifestContent) read large files
// past the page cache, small ones through it, and both give the digest of the bytes.
TEST_F(DirectReaderTest, ContentDigestsOfAVerifyAreOfTheBytesAndLeaveTheCacheEmpty) {
  const size_t size = 9 * kChunk + 99;
  UniqueFd fd = cold_file(size);
  if (DirectReader probe(kChunk); !probe.use(fd.get(), true)) {
    GTEST_SKIP() << "this filesystem cannot read directly";
  }
  testutil::write_file(dir_.sub("small"), "small file");
  UniqueFd tree(::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(tree);
  auto manifest = stream::walk_manifest(tree.get(), wire::kManifestContent);
  ASSERT_TRUE(manifest) << manifest.error().message;
  ASSERT_TRUE(manifest->count("f") && manifest->count("small"));
  EXPECT_EQ(manifest->at("f").content, XXH3_64bits(data_.data(), data_.size()));
  EXPECT_EQ(manifest->at("small").content, XXH3_64bits("small file", 10));
  EXPECT_EQ(testutil::cached_pages(fd.get(), size), 0u);
}

TEST_F(DirectReaderTest, AFileItsFilesystemCannotReadDirectlyStaysBuffered) {
  UniqueFd fd(::open("/proc/self/status", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  DirectReader reader(kChunk);
  EXPECT_FALSE(reader.use(fd.get(), true));
  EXPECT_EQ(fcntl(fd.get(), F_GETFL) & O_DIRECT, 0);
  auto got = reader.read(0, 5, kChunk);  // read buffered, through the same call
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(std::string(got->begin(), got->end()), "Name:");
}

// Asked for a buffered read, the reader reads through the page cache, from any offset.
TEST_F(DirectReaderTest, AFileNotAskedForDirectReadsIsReadBuffered) {
  const size_t size = 2 * kChunk + 17;
  UniqueFd fd = cold_file(size);
  DirectReader reader(kChunk);
  EXPECT_FALSE(reader.use(fd.get(), false));
  EXPECT_EQ(read_range(reader, 5, size + kChunk), expected(5, size));
  EXPECT_GT(testutil::cached_pages(fd.get(), size), 0u);
}

}  // namespace
}  // namespace bkp::changes
