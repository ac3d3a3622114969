// Incremental shipping (DESIGN.md §2): rewriting 1 MiB inside a 200 MiB file sends about
// 1 MiB, not the file. Counted where it matters, by the server: wire_bytes in the volume's stats
// file is every byte of frames received for the volume.
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

}  // namespace
}  // namespace bkp::it
