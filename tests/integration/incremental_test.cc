// Incremental shipping (DESIGN.md §2): rewriting 1 MiB inside a 200 MiB file sends about
// 1 MiB, not the file. Counted where it matters, by the server: wire_bytes in the volume's stats
// file is every byte of frames received for the volume.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "common/unique_fd.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

constexpr uint64_t kBigFile = 200 * kMiB;

class IncrementalTest : public ClusterTest {
 protected:
  uint64_t wire_bytes() {
    auto s = server_stats();
    return s && s->count("wire_bytes") ? s->at("wire_bytes") : 0;
  }
};

TEST_F(IncrementalTest, RewritingOneMiBOfABigFileShipsAboutOneMiB) {
  ASSERT_TRUE(start_all());
  write_big_file(src("big.bin"), kBigFile, 42);
  ASSERT_EQ(wait_converged(), "");

  // The stats file may trail the commit that made the mirror converge; the file itself was
  // shipped, so at least its size has crossed the wire.
  ASSERT_TRUE(testutil::wait_until([&] { return wire_bytes() >= kBigFile || expired(); }, 30s))
      << "wire_bytes " << wire_bytes() << " after shipping a " << kBigFile << "-byte file";
  uint64_t before = wire_bytes();

  // 1 MiB of fresh random bytes at an unaligned offset in the middle, in one write.
  write_at(src("big.bin"), 100 * kMiB + 12345, random_string(kMiB, 4242));
  ASSERT_EQ(wait_converged(), "");

  ASSERT_TRUE(testutil::wait_until([&] { return wire_bytes() >= before + kMiB || expired(); }, 30s))
      << "wire_bytes grew by only " << wire_bytes() - before << " for a 1 MiB rewrite";
  uint64_t shipped = wire_bytes() - before;
  EXPECT_GE(shipped, kMiB);  // the random bytes cannot have been compressed away
  EXPECT_LT(shipped, 2 * kMiB) << "a 1 MiB rewrite of a 200 MiB file sent " << shipped << " bytes";
}

// fallocate(PUNCH_HOLE) travels as a hole, not as the zeros it reads as: the mirror and both
// replicas end with the same hole map as the source (wait_converged compares holes), and no
// zeros cross the wire for it.
TEST_F(IncrementalTest, APunchedHoleStaysAHoleOnEveryCopy) {
  ASSERT_TRUE(start_all());
  write_big_file(src("db.bin"), 8 * kMiB, 7);
  ASSERT_EQ(wait_converged(), "");
  auto data_bytes = [&] {
    auto s = server_stats();
    return s && s->count("data_bytes") ? s->at("data_bytes") : 0;
  };
  ASSERT_TRUE(testutil::wait_until([&] { return data_bytes() >= 8 * kMiB || expired(); }, 30s));
  uint64_t before = data_bytes();
  {
    UniqueFd fd(::open(src("db.bin").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd);
    std::string fresh = random_string(kMiB, 8);
    ASSERT_EQ(::pwrite(fd.get(), fresh.data(), fresh.size(), 2 * kMiB),
              static_cast<ssize_t>(fresh.size()));
    ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kMiB, 4 * kMiB), 0)
        << strerror(errno);
  }
  ASSERT_EQ(wait_converged(), "");
  // At most the megabyte written (if it shipped before the punch), never the 4 MiB of zeros.
  EXPECT_LE(data_bytes() - before, kMiB) << "the punched range was shipped as data";
  for (const std::string& copy : {mirror(), replica(0), replica(1)}) {
    UniqueFd fd(::open((copy + "/db.bin").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << copy;
    EXPECT_EQ(::lseek(fd.get(), kMiB, SEEK_HOLE), static_cast<off_t>(kMiB)) << copy;
    EXPECT_EQ(::lseek(fd.get(), kMiB, SEEK_DATA), static_cast<off_t>(5 * kMiB)) << copy;
  }
}

// A preallocation and a zero range travel as fallocate, not as the zeros they read as: every
// copy ends with the same size and content, its blocks allocated, and no zeros cross the wire.
TEST_F(IncrementalTest, PreallocationsAndZeroRangesStayAllocatedOnEveryCopy) {
  ASSERT_TRUE(start_all());
  write_big_file(src("db.bin"), 4 * kMiB, 9);
  ASSERT_EQ(wait_converged(), "");
  auto data_bytes = [&] {
    auto s = server_stats();
    return s && s->count("data_bytes") ? s->at("data_bytes") : 0;
  };
  ASSERT_TRUE(testutil::wait_until([&] { return data_bytes() >= 4 * kMiB || expired(); }, 30s));
  const uint64_t before = data_bytes();
  struct stat source {};
  {
    UniqueFd fd(::open(src("db.bin").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, kMiB, 2 * kMiB), 0) << strerror(errno);
    ASSERT_EQ(::fallocate(fd.get(), 0, 4 * kMiB, 8 * kMiB), 0) << strerror(errno);
    ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 12 * kMiB, 4 * kMiB), 0)
        << strerror(errno);
    ASSERT_EQ(::fstat(fd.get(), &source), 0);
  }
  ASSERT_EQ(source.st_size, static_cast<off_t>(12 * kMiB));
  ASSERT_EQ(wait_converged(), "");
  EXPECT_LT(data_bytes() - before, kMiB) << "zeros were shipped as data";
  for (const std::string& copy : {mirror(), replica(0), replica(1)}) {
    struct stat st {};
    ASSERT_EQ(::stat((copy + "/db.bin").c_str(), &st), 0) << copy;
    EXPECT_EQ(st.st_size, source.st_size) << copy;
    // Within 1 MiB of the source's allocation (16 MiB): not written and not sparse.
    EXPECT_GE(st.st_blocks, source.st_blocks - 2048) << copy << ": preallocation lost";
  }
}

}  // namespace
}  // namespace bkp::it
