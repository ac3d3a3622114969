// InodeTable's descriptor cache: bounded by its budget, keeping what is used and evicting what
// is not, and never closing a descriptor an operation still holds (a closed descriptor number
// can be reused by the next open, so an operation would then act on another file).
#include "fs/inode_table.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fs/file_handle.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::fs {
namespace {

class InodeTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < kFiles; ++i) {
      UniqueFd f(::open(dir_.sub("f" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644));
      ASSERT_TRUE(f);
    }
    UniqueFd root(::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root);
    auto table = InodeTable::create(std::move(root), kBudget, nullptr);
    ASSERT_TRUE(table) << table.error().message;
    table_ = std::move(*table);
    for (int i = 0; i < kFiles; ++i) {
      std::string name = "f" + std::to_string(i);
      auto handle = handle_at(table_->mount_fd(), name.c_str(), 0);
      ASSERT_TRUE(handle) << handle.error().message;
      struct stat st{};
      ASSERT_EQ(::fstatat(table_->mount_fd(), name.c_str(), &st, 0), 0);
      inodes_.push_back(&table_->remember(*handle, st, table_->root(), name));
    }
  }

  // The inode number behind a descriptor.
  static ino_t ino_of(int fd) {
    struct stat st{};
    return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
  }

  static constexpr int kFiles = 6;
  static constexpr size_t kBudget = 2;
  testutil::TempDir dir_{"bkp-inodes"};
  std::unique_ptr<InodeTable> table_;
  std::vector<Inode*> inodes_;
};

TEST_F(InodeTableTest, TheCacheStaysWithinItsBudgetAndKeepsTheHotInode) {
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kFiles; ++i) {
      {
        auto hot = table_->path_fd(*inodes_[0]);  // used between every other inode
        ASSERT_TRUE(hot);
        EXPECT_EQ(ino_of(hot->get()), inodes_[0]->ino);
      }
      auto fd = table_->path_fd(*inodes_[i]);
      ASSERT_TRUE(fd);
      EXPECT_EQ(ino_of(fd->get()), inodes_[i]->ino);
      EXPECT_LE(table_->cached_fds(), kBudget);
    }
  }
  EXPECT_EQ(table_->cached_fds(), kBudget);
  EXPECT_GE(inodes_[0]->fd.load(), 0) << "the inode used all the time was evicted";
}

TEST_F(InodeTableTest, ADescriptorInUseIsNeverClosed) {
  auto held = table_->path_fd(*inodes_[0]);
  ASSERT_TRUE(held);
  int fd = held->get();
  for (int i = 1; i < kFiles; ++i) {  // each of these wants the budget's slots
    auto other = table_->path_fd(*inodes_[i]);
    ASSERT_TRUE(other);
  }
  // Still open, still the same file: nothing else took over the number.
  EXPECT_EQ(ino_of(fd), inodes_[0]->ino);
  EXPECT_LE(table_->cached_fds(), kBudget);
}

TEST_F(InodeTableTest, TwoHeldDescriptorsFillTheBudgetAndOthersGetTheirOwn) {
  auto a = table_->path_fd(*inodes_[0]);
  auto b = table_->path_fd(*inodes_[1]);
  ASSERT_TRUE(a && b);
  auto c = table_->path_fd(*inodes_[2]);  // nothing evictable: an owned descriptor
  ASSERT_TRUE(c);
  EXPECT_EQ(ino_of(c->get()), inodes_[2]->ino);
  EXPECT_LT(inodes_[2]->fd.load(), 0);
  EXPECT_EQ(ino_of(a->get()), inodes_[0]->ino);
  EXPECT_EQ(ino_of(b->get()), inodes_[1]->ino);
}

// Ids are small numbers the kernel can be given back: each names its inode until the kernel
// forgets it, and a forgotten one is reused.
TEST_F(InodeTableTest, IdsAreSmallStableAndReusedOnceForgotten) {
  for (int i = 0; i < kFiles; ++i) {
    fuse_ino_t id = table_->ino_of(*inodes_[i]);
    EXPECT_EQ(id, static_cast<fuse_ino_t>(FUSE_ROOT_ID + 1 + i));
    EXPECT_EQ(&table_->get(id), inodes_[i]);
  }
  EXPECT_EQ(table_->ino_of(table_->root()), static_cast<fuse_ino_t>(FUSE_ROOT_ID));
  fuse_ino_t gone = table_->ino_of(*inodes_[2]);
  table_->forget(gone, 1);
  EXPECT_EQ(table_->size(), static_cast<size_t>(kFiles));  // the root and the five left
  UniqueFd f(::open(dir_.sub("fresh").c_str(), O_CREAT | O_WRONLY, 0644));
  ASSERT_TRUE(f);
  auto handle = handle_at(table_->mount_fd(), "fresh", 0);
  ASSERT_TRUE(handle);
  struct stat st{};
  ASSERT_EQ(::fstatat(table_->mount_fd(), "fresh", &st, 0), 0);
  Inode& fresh = table_->remember(*handle, st, table_->root(), "fresh");
  EXPECT_EQ(table_->ino_of(fresh), gone);
  EXPECT_EQ(&table_->get(gone), &fresh);
  EXPECT_EQ(fresh.ino, st.st_ino);
}

}  // namespace
}  // namespace bkp::fs
