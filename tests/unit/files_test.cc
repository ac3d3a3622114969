// write_file_atomic: every version is whole, and replacing one frees no inode (the names are
// swapped, not renamed over), so a receiver writing its state at every commit costs no
// deallocation (files.h says why that matters).
#include "common/files.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <string>

#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"

namespace bkp {
namespace {

ino_t inode_of(const std::string& path) {
  struct stat st{};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST(WriteFileAtomicTest, EachVersionIsWholeAndTheTwoInodesTakeTurns) {
  testutil::TempDir dir;
  const std::string path = dir.sub("state"), tmp = path + ".tmp";
  const std::string first = "committed 1\ninstance 7\n" + std::string(3000, 'x') + "\n";
  const std::string second = "committed 2\ninstance 7\n" + std::string(5000, 'y') + "\n";
  const std::string third = "committed 3\n";

  ASSERT_TRUE(write_file_atomic(path, first, Durability::kSync));
  EXPECT_EQ(testutil::read_file(path), first);
  const ino_t a = inode_of(path);

  ASSERT_TRUE(write_file_atomic(path, second, Durability::kNoSync));
  EXPECT_EQ(testutil::read_file(path), second);
  EXPECT_EQ(testutil::read_file(tmp), first) << "the previous version waits to be overwritten";
  const ino_t b = inode_of(path);
  EXPECT_NE(a, b);
  EXPECT_EQ(inode_of(tmp), a);

  // Shorter than what the reused file held: cut to length, nothing of the old bytes left.
  ASSERT_TRUE(write_file_atomic(path, third, Durability::kSync));
  EXPECT_EQ(testutil::read_file(path), third);
  EXPECT_EQ(inode_of(path), a) << "the first file was reused, not a new one made";
  EXPECT_EQ(inode_of(tmp), b);
}

TEST(WriteFileAtomicTest, ALeftoverTmpFileIsOverwrittenWhole) {
  testutil::TempDir dir;
  const std::string path = dir.sub("stats");
  testutil::write_file(path + ".tmp", std::string(10000, 'z'));  // a crash left it mid-write
  ASSERT_TRUE(write_file_atomic(path, "ops 5\n", Durability::kNoSync));
  EXPECT_EQ(testutil::read_file(path), "ops 5\n");
}

TEST(WriteFileAtomicTest, AnUnwritableDirectoryIsAClearError) {
  testutil::TempDir dir;
  auto r = write_file_atomic(dir.sub("missing/state"), "x\n", Durability::kSync);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().message.find(dir.sub("missing/state.tmp")), std::string::npos)
      << r.error().message;
}

}  // namespace
}  // namespace bkp
