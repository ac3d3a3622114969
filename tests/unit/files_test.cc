// write_file_atomic: every version is whole, and replacing one frees no inode (the names are
// swapped, not renamed over), so a receiver writing its state at every commit costs no
// deallocation (files.h says why that matters). open_beneath: a path longer than PATH_MAX is
// opened in pieces, and no piece follows a symlink or leaves the directory.
#include "common/files.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
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

// dir/ then `levels` directories of 200-byte names; returns the relative path of the last.
std::string make_deep(int dir_fd, int levels) {
  std::string rel;
  UniqueFd at(::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0));
  for (int i = 0; i < levels; ++i) {
    const std::string name(200, static_cast<char>('a' + i));
    EXPECT_EQ(::mkdirat(at.get(), name.c_str(), 0755), 0) << i;
    at.reset(::openat(at.get(), name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    rel += (rel.empty() ? "" : "/") + name;
  }
  return rel;
}

TEST(OpenBeneathTest, APathLongerThanPathMaxIsOpenedInPieces) {
  testutil::TempDir dir;
  UniqueFd base(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  const std::string deep = make_deep(base.get(), 45);
  ASSERT_GT(deep.size(), size_t{2 * PATH_MAX});
  UniqueFd bottom = open_beneath(base.get(), deep, O_PATH | O_DIRECTORY);
  ASSERT_TRUE(bottom) << std::strerror(errno);
  UniqueFd made(::openat(bottom.get(), "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(made);
  EXPECT_TRUE(open_beneath(base.get(), deep + "/f", O_RDONLY | O_NOFOLLOW));
  EXPECT_FALSE(open_beneath(base.get(), deep + "/missing", O_RDONLY));
  EXPECT_EQ(errno, ENOENT);
}

TEST(OpenBeneathTest, NoPieceFollowsASymlinkOrLeavesTheDirectory) {
  testutil::TempDir dir;
  UniqueFd base(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  const std::string deep = make_deep(base.get(), 25);
  std::string out = deep;  // 25 levels down, 26 up: the second piece climbs out of base
  for (int i = 0; i < 26; ++i) out += "/..";
  EXPECT_FALSE(open_beneath(base.get(), out, O_PATH));
  EXPECT_EQ(errno, EXDEV) << "a path that climbs out of the directory";
  // Level 20 (past the first piece) replaced by a symlink to a directory that exists.
  std::string upto = deep.substr(0, 20 * 201 - 1);
  UniqueFd parent = open_beneath(base.get(), upto.substr(0, upto.rfind('/')), O_PATH);
  ASSERT_TRUE(parent);
  const std::string last = upto.substr(upto.rfind('/') + 1);
  ASSERT_EQ(::renameat(parent.get(), last.c_str(), parent.get(), "moved"), 0);
  ASSERT_EQ(::symlinkat("moved", parent.get(), last.c_str()), 0);
  EXPECT_FALSE(open_beneath(base.get(), deep, O_PATH | O_DIRECTORY));
  EXPECT_EQ(errno, ELOOP);
  EXPECT_FALSE(open_beneath(base.get(), std::string(5000, 'x'), O_RDONLY));
  EXPECT_EQ(errno, ENAMETOOLONG);
}

}  // namespace
}  // namespace bkp
