// FullDisk: a real full filesystem (a small tmpfs this test mounts; skipped where it cannot),
// full of bytes or out of inodes, so "space back" is what statvfs reports after files are
// removed, not a mock.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "common/full_disk.h"
#include "common/unique_fd.h"
#include "tests/testutil/temp_dir.h"

namespace bkp {
namespace {

using namespace std::chrono_literals;

class FullDiskTest : public ::testing::Test {
 protected:
  // A tmpfs of 4 MiB and 1,000 inodes, filled with one file.
  void SetUp() override { mount_and_fill("size=4m,nr_inodes=1000"); }

  void mount_and_fill(const char* options) {
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options) != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs at " << dir_ << ": " << std::strerror(errno);
    }
    mounted_ = true;
    UniqueFd fd(open(filler().c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd) << std::strerror(errno);
    std::string block(1 << 16, 'x');
    while (write(fd.get(), block.data(), block.size()) > 0) {
    }
    ASSERT_EQ(errno, ENOSPC);
  }

  // Creates empty files until the filesystem has no inode left; returns how many.
  int use_up_inodes() {
    for (int i = 0;; ++i) {
      UniqueFd fd(open(name(i).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
      if (!fd) {
        EXPECT_EQ(errno, ENOSPC) << std::strerror(errno);
        return i;
      }
    }
  }
  std::string name(int i) const { return dir_ + "/f" + std::to_string(i); }
  void TearDown() override {
    if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  std::string filler() const { return dir_ + "/filler"; }

  testutil::TempDir tmp_{"bkp-full-disk"};
  const std::string dir_ = tmp_.mkdir("fs");
  bool mounted_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
};

TEST(IsDiskFullTest, NoSpaceAndQuotaAreAFullDiskOtherErrorsAreNot) {
  EXPECT_TRUE(is_disk_full(ENOSPC));
  EXPECT_TRUE(is_disk_full(EDQUOT));
  EXPECT_FALSE(is_disk_full(EIO));
  EXPECT_FALSE(is_disk_full(ECONNRESET));
  EXPECT_FALSE(is_disk_full(0));
}

TEST_F(FullDiskTest, SpaceIsBackOnceAFileIsRemovedNotBefore) {
  FullDisk disk(dir_);
  EXPECT_LT(disk.free_at_failure(), FullDisk::kSpaceBack);
  EXPECT_FALSE(disk.space_back());
  ASSERT_EQ(unlink(filler().c_str()), 0) << std::strerror(errno);
  EXPECT_TRUE(disk.space_back());
  std::unique_lock lock(mu_);
  EXPECT_TRUE(disk.wait(lock, cv_, [] { return false; }, std::chrono::hours(1)));
}

TEST_F(FullDiskTest, FreedInodesAreSpaceBackTooThoughHardlyAByteIsFreed) {
  ASSERT_EQ(unlink(filler().c_str()), 0) << std::strerror(errno);  // bytes are not the limit
  const int files = use_up_inodes();
  ASSERT_GT(files, static_cast<int>(FullDisk::kInodesBack));
  FullDisk disk(dir_);
  EXPECT_FALSE(disk.space_back());
  for (int i = 0; i < static_cast<int>(FullDisk::kInodesBack) - 1; ++i) {
    ASSERT_EQ(unlink(name(i).c_str()), 0) << std::strerror(errno);
  }
  EXPECT_FALSE(disk.space_back());  // empty files: no byte freed, one inode short
  ASSERT_EQ(unlink(name(static_cast<int>(FullDisk::kInodesBack) - 1).c_str()), 0);
  EXPECT_TRUE(disk.space_back());
}

TEST_F(FullDiskTest, AWaitEndsOnStopOrAfterTheLongestWaitWithoutSpace) {
  FullDisk disk(dir_);
  std::unique_lock lock(mu_);
  EXPECT_FALSE(disk.wait(lock, cv_, [] { return true; }, std::chrono::hours(1)));
  EXPECT_FALSE(disk.wait(lock, cv_, [] { return false; }, 0ms));
}

}  // namespace
}  // namespace bkp
